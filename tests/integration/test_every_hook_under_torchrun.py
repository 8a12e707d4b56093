"""Every hook at once under `torchrun --nproc_per_node 2` (gloo): files written once, by the primary; ranks agree;
a resumed torchrun job ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from classy_hooks.model import load_checkpoint
from helpers import ROOT, run_training, tiny_config
from visdom_server import VisdomServer


def _every_hook_config(port: int) -> dict[str, Any]:
    """The demo's thirteen hooks (port filled in), plus the per-rank state dump, on the tiny data set."""
    hooks = json.loads((ROOT / "tools" / "configs" / "demo.json").read_text())["hooks"]
    for hook in hooks:
        if hook["name"] == "visdom":
            hook["port"] = str(port)
        if hook["name"] == "precise_bn":
            hook["num_samples"] = 32
    assert len(hooks) == 13
    hooks.append({"name": "rank_state_dump", "folder": "{run_dir}/rank_state"})
    return tiny_config(imports=["integration.rank_state_hook"], hooks=hooks)


def _tensors_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_every_hook_under_torchrun_writes_once_agrees_across_ranks_and_resumes_bit_identical(
    tmp_path: Path, shared_visdom_server: VisdomServer
) -> None:
    config = _every_hook_config(shared_visdom_server.port)
    straight = tmp_path / "straight"
    proc = run_training(tmp_path, config, nproc=2, run_dir=straight, timeout=600)
    log = proc.stdout + proc.stderr

    # Every file is written once, by the primary: one copy of each output, no rank part files, no temp files.
    files = sorted(str(p.relative_to(straight)) for p in straight.rglob("*") if p.is_file())
    assert [f for f in files if f.startswith("checkpoints/")] == [
        "checkpoints/checkpoint.torch",
        "checkpoints/model_phase-0_end.torch",
        "checkpoints/model_phase-2_end.torch",
    ]
    assert [f for f in files if f.startswith(("export/", "predictions/"))] == [
        "export/exported_program.pt2",
        "export/torchscript.pt",
        "predictions/predictions.csv",
        "predictions/predictions.phase00001.csv",
        "predictions/predictions.phase00003.csv",
    ]
    event_files = [f for f in files if "tfevents" in f]
    assert len(event_files) == 2, event_files  # one writer per TensorBoard hook, on rank 0 only
    assert not [f for f in files if f.endswith(".tmp") or ".part" in f or ("rank1" in f and "rank_state" not in f)]

    # The CSV has every test sample of both ranks exactly once, under one header.
    with open(straight / "predictions" / "predictions.csv", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows[0] == ["sample_id", "prediction", "target"]
    ids = [int(r[0]) for r in rows[1:]]
    assert sorted(ids) == list(range(1_000_000, 1_000_064))

    # EMA weights and BatchNorm statistics (and every other model tensor) agree across ranks.
    rank0 = torch.load(straight / "rank_state" / "rank0.pt", weights_only=True)
    rank1 = torch.load(straight / "rank_state" / "rank1.pt", weights_only=True)
    assert rank0["ema"] and _tensors_equal(rank0["ema"], rank1["ema"])
    assert _tensors_equal(rank0["model"], rank1["model"])
    assert any(k.endswith("running_var") for k in rank0["model"])

    # The run resumes under torchrun from its phase-1 checkpoint and ends bit-identical to the straight run.
    resumed = tmp_path / "resumed"
    proc = run_training(
        tmp_path,
        config,
        nproc=2,
        run_dir=resumed,
        timeout=600,
        extra=["--resume", str(straight / "checkpoints" / "model_phase-0_end.torch")],
    )
    assert "Resumed from" in proc.stdout + proc.stderr
    a = load_checkpoint(straight / "checkpoints")["classy_state_dict"]
    b = load_checkpoint(resumed / "checkpoints")["classy_state_dict"]
    assert _tensors_equal(a["base_model"], b["base_model"])
    for index, slots in a["optimizer"]["state"].items():
        assert _tensors_equal(slots, b["optimizer"]["state"][index])
    ema_key = "ExponentialMovingAverageModelHook"
    assert _tensors_equal(a["hooks"][ema_key]["ema_state"], b["hooks"][ema_key]["ema_state"])
    assert a["hooks"]["TensorboardPlotHook"]["step"] == b["hooks"]["TensorboardPlotHook"]["step"] == 8
    final_a = torch.load(straight / "rank_state" / "rank0.pt", weights_only=True)
    final_b = torch.load(resumed / "rank_state" / "rank0.pt", weights_only=True)
    assert _tensors_equal(final_a["model"], final_b["model"]) and _tensors_equal(final_a["ema"], final_b["ema"])
    assert "Traceback" not in log
