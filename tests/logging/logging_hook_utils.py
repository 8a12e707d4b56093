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


#: The learning rate of each train phase of `run_epoch_schedule_loop` (halved after every train phase).
EPOCH_SCHEDULE_LRS = [0.1, 0.05, 0.025]


def run_epoch_schedule_loop(hooks: list[ClassyHook], steps: int = 4) -> Any:
    """A plain loop in Classy Vision's order: each train phase ends by stepping its epoch schedule
    (`ClassificationTask` calls `optimizer.on_epoch` before the hooks' `on_phase_end`), so the
    optimizer already holds the next phase's learning rate when the hooks see the phase end.
    Train and test phases alternate; train phase k runs at `EPOCH_SCHEDULE_LRS[k]`."""
    from types import SimpleNamespace

    import torch

    from classy_hooks.core import ClassyHookFunctions, LastBatch, call_hooks

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=EPOCH_SCHEDULE_LRS[0])
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    task = SimpleNamespace(
        base_model=model,
        model=model,
        train=True,
        phase_type="train",
        phase_idx=-1,
        train_phase_idx=-1,
        num_batches_per_phase=steps,
        losses=[],
        meters=[],
        optimizer=optimizer,
        last_batch=None,
        hooks=hooks,
    )
    call_hooks(hooks, ClassyHookFunctions.on_start, task)
    for train in [True, False] * len(EPOCH_SCHEDULE_LRS):
        task.phase_idx += 1
        task.train_phase_idx += int(train)
        task.train, task.phase_type, task.losses = train, "train" if train else "test", []
        model.train(train)
        call_hooks(hooks, ClassyHookFunctions.on_phase_start, task)
        for _ in range(steps):
            x, y = torch.randn(4, 3), torch.randint(0, 2, (4,))
            with torch.set_grad_enabled(train):
                output = model(x)
                loss = torch.nn.functional.cross_entropy(output, y)
            if train:
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            task.losses.append(float(loss.detach()))
            task.last_batch = LastBatch(loss.detach(), output.detach(), y, {"input": x, "target": y}, {})
            call_hooks(hooks, ClassyHookFunctions.on_step, task)
        task.last_batch = None  # as in ClassificationTask: the step that met the end of the data cleared it
        if train:
            schedule.step()
        call_hooks(hooks, ClassyHookFunctions.on_phase_end, task)
    call_hooks(hooks, ClassyHookFunctions.on_end, task)
    return task
