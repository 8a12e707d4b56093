"""Story: a Classy Vision run with classy-hooks' checkpoint and EMA hooks crashes after phase 2; a fresh
ClassificationTask resumes it under Classy's own LocalTrainer with Classy's own `task.set_checkpoint(folder)`,
and ends bit-identical to the uninterrupted run: model, EMA, optimizer momentum, counters and hook state.
Restoring the state with `resume_task` before `train()` instead is shown to lose the momentum: `resume_task` needs
`prepare()` (which creates the torch optimizer), and `train()` calls `prepare()` again, which builds a new one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from classy_vision_runs import (
    build_classification_task,
    classification_config,
    classy_hooks_in_classy_vision,
    train,
    weights,
)

from classy_hooks.core import ClassyHook
from classy_hooks.model import resume_task
from helpers import assert_same

pytestmark = pytest.mark.slow

CRASH_AT_PHASE = 3  # phases: 0 train, 1 test, 2 train, 3 test, 4 train, 5 test; the last save is phase 2's


class CrashAtPhase(ClassyHook):
    """Fails the run when `phase` starts, as a killed job would stop (after the previous phase's save)."""

    on_start = on_step = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, phase: int) -> None:
        super().__init__()
        self.phase = phase

    def on_phase_start(self, task: Any) -> None:
        if task.phase_idx == self.phase:
            raise RuntimeError(f"simulated crash at the start of phase {self.phase}")


def hooks(folder: Path) -> list[dict[str, Any]]:
    return [
        {"name": "ema_model_weights", "decay": 0.9, "device": "cpu"},
        {"name": "checkpoint", "checkpoint_folder": str(folder)},
    ]


def final_state(task: Any) -> dict[str, Any]:
    """What must be equal at the end: weights (the EMA, after the last test phase), the EMA hook's copy
    (the training weights), the optimizer's momentum buffers, counters, the checkpoint hook's state."""
    by_name = {hook.name(): hook for hook in task.hooks}
    optimizer = task.optimizer.optimizer  # Classy's ClassyOptimizer wraps the torch optimizer
    return {
        "model": weights(task),
        "ema_hook_copy": dict(by_name["ExponentialMovingAverageModelHook"].state.ema_state),
        "momentum": [optimizer.state[p]["momentum_buffer"].clone() for g in optimizer.param_groups for p in g["params"]],
        "counters": (task.phase_idx, task.train_phase_idx, task.num_updates),
        "checkpoint_hook": by_name["CheckpointHook"].get_classy_state(),
    }


def test_resume_with_set_checkpoint_under_local_trainer_is_bit_identical(tmp_path: Path) -> None:
    with classy_hooks_in_classy_vision():
        straight = train(build_classification_task(classification_config(hooks(tmp_path / "straight"))))

        crashed = build_classification_task(classification_config(hooks(tmp_path / "run")))
        crashed.set_hooks([*crashed.hooks, CrashAtPhase(CRASH_AT_PHASE)])
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(crashed)
        saved = torch.load(tmp_path / "run" / "checkpoint.torch", weights_only=True)
        assert saved["classy_state_dict"]["phase_idx"] == CRASH_AT_PHASE - 1

        resumed = build_classification_task(classification_config(hooks(tmp_path / "run")), seed=123)
        resumed.set_checkpoint(str(tmp_path / "run"))  # Classy's own: prepare() builds the optimizer, then loads
        train(resumed)

    assert_same(final_state(straight), final_state(resumed))
    later = torch.load(tmp_path / "run" / "checkpoint.torch", weights_only=True)["classy_state_dict"]
    earlier = torch.load(tmp_path / "straight" / "checkpoint.torch", weights_only=True)["classy_state_dict"]
    assert_same(earlier["base_model"], later["base_model"])
    assert_same(earlier["optimizer"], later["optimizer"])
    assert_same(earlier["hooks"], later["hooks"])


def test_restoring_before_train_loses_the_momentum_because_prepare_rebuilds_the_optimizer(tmp_path: Path) -> None:
    with classy_hooks_in_classy_vision():
        first = build_classification_task(classification_config(hooks(tmp_path / "run"), num_epochs=1))
        train(first)
        momentum = final_state(first)["momentum"]
        assert momentum and all(m.abs().sum() > 0 for m in momentum)

        task = build_classification_task(classification_config(hooks(tmp_path / "other"), num_epochs=1))
        task.prepare()  # resume_task needs the torch optimizer, which only prepare() creates
        resume_task(task, str(tmp_path / "run"))
        optimizer = task.optimizer.optimizer
        restored = [optimizer.state[p]["momentum_buffer"] for g in optimizer.param_groups for p in g["params"]]
        assert_same(momentum, restored)
        task.prepare()  # what LocalTrainer.train() does first: a new torch optimizer, the momentum is gone
    optimizer = task.optimizer.optimizer
    assert all("momentum_buffer" not in optimizer.state[p] for g in optimizer.param_groups for p in g["params"])
