"""Story: after a training run, the TorchScript and torch.export files load in a fresh process, run on a
batch, and predict exactly what predictions.csv says the final model predicted."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from classy_hooks.core.deprecations import quiet_jit_deprecations
from helpers import make_task, run_training, tiny_config

EXPORT_HOOKS = [
    {"name": "output_csv", "folder": "{run_dir}/predictions"},
    {"name": "torchscript", "torchscript_folder": "{run_dir}/export"},
    {"name": "torch_export", "export_folder": "{run_dir}/export"},
]


def csv_predictions(path: Path) -> dict[int, tuple[int, int]]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows[0] == ["sample_id", "prediction", "target"]
    by_id = {int(r[0]): (int(r[1]), int(r[2])) for r in rows[1:]}
    assert len(by_id) == len(rows) - 1, "every sample id exactly once"
    return by_id


def load_exports(run_dir: Path) -> dict[str, torch.nn.Module]:
    with quiet_jit_deprecations():
        scripted = torch.jit.load(str(run_dir / "export" / "torchscript.pt"))
    program = torch.export.load(str(run_dir / "export" / "exported_program.pt2"))
    return {"torchscript": scripted, "torch_export": program.module()}


def check_against_csv(run_dir: Path) -> None:
    dataset = make_task().test_dataset  # the tiny config's test set, rebuilt from its seed
    by_id = csv_predictions(run_dir / "predictions" / "predictions.csv")
    assert sorted(by_id) == sorted(int(i) for i in dataset.ids)
    for name, module in load_exports(run_dir).items():
        with torch.no_grad():
            predictions = module(dataset.inputs).argmax(dim=1)
            assert module(dataset.inputs[:5]).shape == (5, 4), f"{name} must run on another batch size"
        for sample_id, prediction, target in zip(dataset.ids.tolist(), predictions.tolist(), dataset.targets.tolist()):
            assert by_id[sample_id] == (prediction, target), (name, sample_id)


@pytest.mark.slow
def test_exported_files_of_a_run_load_and_match_the_predictions_csv(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = run_training(tmp_path, tiny_config(hooks=EXPORT_HOOKS), run_dir=run_dir)
    assert "TorchscriptHook: wrote" in proc.stdout and "TorchExportHook: wrote" in proc.stdout
    assert "is deprecated" not in proc.stderr, proc.stderr[-2000:]
    check_against_csv(run_dir)
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == ["exported_program.pt2", "torchscript.pt"]
