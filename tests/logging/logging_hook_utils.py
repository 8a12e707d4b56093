"""Test utilities for the logging hooks: TensorBoard's own event reader, a phase recorder, the Visdom server."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from classy_hooks.core import ClassyHook
from helpers import read_scalars  # noqa: F401 - re-exported for the logging tests
from visdom_server import SERVER_CODE, VisdomServer  # noqa: F401 - re-exported for the logging tests


def has_graph(logdir: Path) -> bool:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return bool(acc.Tags()["graph"])


class PhaseRecorder(ClassyHook):
    """Test hook: records each phase's synced losses, meters, LR and (optionally) a state snapshot."""

    def __init__(self, snapshot_after_phase: int | None = None) -> None:
        super().__init__()
        self.phases: list[dict[str, Any]] = []
        self.step_losses: list[float] = []
        self.snapshot_after_phase = snapshot_after_phase
        self.snapshot: dict[str, Any] | None = None

    on_start = ClassyHook._noop
    on_phase_start = ClassyHook._noop
    on_end = ClassyHook._noop

    def on_step(self, task: Any) -> None:
        if task.train:
            self.step_losses.append(float(task.last_batch.loss))

    def on_phase_end(self, task: Any) -> None:
        self.phases.append(
            {
                "type": task.phase_type,
                "loss": sum(task.losses) / len(task.losses),
                "lr": task.optimizer.param_groups[0]["lr"] if task.optimizer is not None else None,
                "meters": {m.name: dict(m.value) for m in task.meters},
            }
        )
        if task.phase_idx == self.snapshot_after_phase:
            self.snapshot = copy.deepcopy(task.get_classy_state())
