"""Hooks give the same results whatever order they are listed in (EMA x precise BN, checkpoint x EMA, exports).

The checkpoint hook declares that it runs last (`order = RUNS_LAST`); `build_hooks` and the loop's `call_hooks`
apply that, and nothing reorders `task.hooks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from classy_hooks.core import build_hooks
from classy_hooks.model import CheckpointHook, load_checkpoint
from helpers import make_task


def _run(folder: Path, order: list[int], checkpoint_first: bool = False) -> dict[str, Any]:
    configs = [
        {"name": "ema_model_weights", "decay": 0.8, "device": "cpu"},
        {"name": "precise_bn", "num_samples": 32},
        {"name": "checkpoint", "checkpoint_folder": str(folder / "checkpoints"), "phase_types": ["train", "test"]},
        {"name": "output_csv", "folder": str(folder / "predictions")},
        {"name": "torchscript", "torchscript_folder": str(folder / "export")},
    ]
    hooks = build_hooks([configs[i] for i in order])
    assert isinstance(hooks[-1], CheckpointHook)  # build_hooks applies the declared order
    if checkpoint_first:  # a list made by hand: call_hooks still runs the checkpoint hook last
        hooks.sort(key=lambda h: not isinstance(h, CheckpointHook))
    listed = list(hooks)
    task = make_task(hooks, num_epochs=2)
    task.run()
    assert task.hooks == listed  # not reordered
    return {
        "checkpoint": load_checkpoint(folder / "checkpoints")["classy_state_dict"],
        "model": {k: v.clone() for k, v in task.base_model.state_dict().items()},
        "csv": (folder / "predictions" / "predictions.csv").read_text(),
        "scripted": torch.jit.load(folder / "export" / "torchscript.pt"),
    }


@pytest.mark.slow
def test_hook_order_does_not_change_results(tmp_path: Path) -> None:
    forward = _run(tmp_path / "forward", [0, 1, 2, 3, 4])
    backward = _run(tmp_path / "backward", [4, 3, 2, 1, 0], checkpoint_first=True)
    a, b = forward["checkpoint"], backward["checkpoint"]
    assert a["hooks"].keys() == b["hooks"].keys()
    for key in a["base_model"]:
        assert torch.equal(a["base_model"][key], b["base_model"][key]), key
    ema_a = a["hooks"]["ExponentialMovingAverageModelHook"]["ema_state"]
    ema_b = b["hooks"]["ExponentialMovingAverageModelHook"]["ema_state"]
    assert ema_a.keys() == ema_b.keys() and all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert all(torch.equal(forward["model"][k], backward["model"][k]) for k in forward["model"])
    assert forward["csv"] == backward["csv"] and forward["csv"].count("\n") == 65
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(forward["scripted"](x), backward["scripted"](x))
