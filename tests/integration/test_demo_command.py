"""`./tools/demo`, the README's first command, trains with every hook and leaves every output usable."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import ROOT, subprocess_env


@pytest.mark.slow
def test_demo_command_writes_every_output_under_one_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    proc = subprocess.run(
        [str(ROOT / "tools" / "demo"), str(run_dir)], env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Everything it wrote is under: {run_dir}" in proc.stdout
    assert "Skipping hook" not in proc.stdout + proc.stderr  # all thirteen hooks ran

    checkpoint = torch.load(run_dir / "checkpoints" / "checkpoint.torch", weights_only=True)
    assert checkpoint["classy_state_dict"]["phase_idx"] == 4  # the last train phase (phase_types: train)
    with open(run_dir / "predictions" / "predictions.csv", newline="") as handle:
        assert len(list(csv.reader(handle, delimiter="\t"))) == 1 + 256

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"Losses/train", "Losses/test", "LearningRate/train", "Meters/test/accuracy/top_1"} <= set(tags)

    x = torch.randn(3, 3, 32, 32)
    scripted = torch.jit.load(run_dir / "export" / "torchscript.pt")
    exported = torch.export.load(run_dir / "export" / "exported_program.pt2").module()
    assert torch.allclose(scripted(x), exported(x), atol=1e-5)
    assert (run_dir / "visdom" / "classy_hooks_demo.json").is_file()
