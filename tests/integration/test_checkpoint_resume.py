"""Resuming from a checkpoint continues bit-identically (model, optimizer, EMA), in process, with --resume, on 2 ranks.

Also: under 2 gloo ranks, precise BatchNorm statistics are the statistics over both ranks' samples.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from classy_hooks.core import ClassyHook
from classy_hooks.model import (
    CheckpointHook,
    ExponentialMovingAverageModelHook,
    PreciseBatchNormHook,
    load_checkpoint,
    resume_task,
)
from helpers import make_task, run_training, tiny_config
from reference_trainer.data import build_loader
from reference_trainer.models import SmallCNN
from reference_trainer.task import ReferenceTask


def _hooks(folder: Path) -> list[ClassyHook]:
    return [
        CheckpointHook(str(folder), phase_types=["train", "test"]),  # listed first on purpose: it declares it runs last
        ExponentialMovingAverageModelHook(0.8),
        PreciseBatchNormHook(32),
    ]


class _Interrupt(Exception):
    pass


class _StopAtPhase(ClassyHook):
    """Kills the run (an exception) when phase 2 starts: phases 0 and 1 are done and checkpointed."""

    on_start = on_step = on_phase_end = on_end = ClassyHook._noop

    def on_phase_start(self, task: Any) -> None:
        if task.phase_idx == 2:
            raise _Interrupt


def _assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["phase_idx"] == b["phase_idx"] and a["num_updates"] == b["num_updates"]
    for key, value in a["base_model"].items():
        assert torch.equal(value, b["base_model"][key]), f"model {key}"
    opt_a, opt_b = a["optimizer"], b["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for index, slots in opt_a["state"].items():
        for name, value in slots.items():
            assert torch.equal(value, opt_b["state"][index][name]), f"optimizer {index}.{name}"
    ema_a = a["hooks"]["ExponentialMovingAverageModelHook"]
    ema_b = b["hooks"]["ExponentialMovingAverageModelHook"]
    assert ema_a["num_updates"] == ema_b["num_updates"] > 0 and ema_a["swapped"] == ema_b["swapped"]
    for key, value in ema_a["ema_state"].items():
        assert torch.equal(value, ema_b["ema_state"][key]), f"EMA {key}"
    assert a["hooks"]["CheckpointHook"] == b["hooks"]["CheckpointHook"]


def test_two_phases_resume_two_phases_is_bit_identical_to_four(tmp_path: Path) -> None:
    straight = make_task(_hooks(tmp_path / "straight"))
    straight.run()
    interrupted = make_task([*_hooks(tmp_path / "resumed"), _StopAtPhase()])
    with pytest.raises(_Interrupt):
        interrupted.run()
    resumed = make_task(_hooks(tmp_path / "resumed"))
    resume_task(resumed, tmp_path / "resumed")
    assert resumed.phase_idx == 1
    resumed.run()
    _assert_same_state(straight.get_classy_state(), resumed.get_classy_state())
    _assert_same_state(
        load_checkpoint(tmp_path / "straight")["classy_state_dict"],
        load_checkpoint(tmp_path / "resumed")["classy_state_dict"],
    )


def _config(**overrides: Any) -> dict[str, Any]:
    return tiny_config(
        hooks=[
            {"name": "checkpoint", "checkpoint_folder": "{run_dir}/checkpoints", "phase_types": ["train", "test"]},
            {"name": "ema_model_weights", "decay": 0.8, "device": "cpu"},
            {"name": "precise_bn", "num_samples": 24},
        ],
        **overrides,
    )


def _resume_via_trainer(tmp_path: Path, nproc: int) -> None:
    """Train 4 phases straight; separately resume from the straight run's phase-1 file with --resume."""
    run_training(tmp_path, _config(), nproc=nproc, run_dir=tmp_path / "straight")
    start = tmp_path / "straight" / "checkpoints" / "model_phase-1_end.torch"
    proc = run_training(tmp_path, _config(), nproc=nproc, run_dir=tmp_path / "resumed", extra=["--resume", str(start)])
    assert "Resumed from" in proc.stdout + proc.stderr
    resumed_files = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert resumed_files == ["checkpoint.torch", "model_phase-2_end.torch", "model_phase-3_end.torch"]
    _assert_same_state(
        load_checkpoint(tmp_path / "straight" / "checkpoints")["classy_state_dict"],
        load_checkpoint(tmp_path / "resumed" / "checkpoints")["classy_state_dict"],
    )


@pytest.mark.slow
def test_trainer_resume_is_bit_identical(tmp_path: Path) -> None:
    _resume_via_trainer(tmp_path, nproc=1)


def _bn_input_stats(model: nn.Module, inputs: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    model = copy.deepcopy(model).train()
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    seen: dict[int, list[torch.Tensor]] = {id(m): [] for m in layers}
    handles = [m.register_forward_pre_hook(lambda mod, args: seen[id(mod)].append(args[0])) for m in layers]
    with torch.no_grad():
        for x in inputs:
            model(x)
    for h in handles:
        h.remove()
    stats = []
    for m in layers:
        x = torch.cat([t.transpose(0, 1).reshape(t.shape[1], -1) for t in seen[id(m)]], dim=1).double()
        stats.append((x.mean(dim=1), x.var(dim=1, unbiased=False)))
    return stats


@pytest.mark.slow
def test_two_ranks_resume_bit_identical_and_precise_bn_reduced_over_ranks(tmp_path: Path) -> None:
    _resume_via_trainer(tmp_path, nproc=2)
    # Precise BN at the end of train phase 0: every rank used its first 24 samples of the phase's loader.
    state = load_checkpoint(tmp_path / "straight" / "checkpoints" / "model_phase-0_end.torch")["classy_state_dict"]
    config = _config()
    task = ReferenceTask(config)
    model = SmallCNN(num_classes=4, image_size=16, width=8)
    model.load_state_dict(state["base_model"])
    per_rank = []
    for rank in (0, 1):
        loader = build_loader(
            task.train_dataset, train=True, batch_size=16, rank=rank, world_size=2, seed=config["seed"], epoch=0
        )
        batches = iter(loader)
        first, second = next(batches)["input"], next(batches)["input"]
        per_rank += [first, second[:8]]
    both = _bn_input_stats(model, per_rank)
    rank0 = _bn_input_stats(model, per_rank[:2])
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m, (mean, var), (mean0, _) in zip(layers, both, rank0):
        assert torch.allclose(m.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        assert torch.allclose(m.running_var.double(), var, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(mean, mean0, rtol=1e-3)  # so the check above proves the all-reduce
