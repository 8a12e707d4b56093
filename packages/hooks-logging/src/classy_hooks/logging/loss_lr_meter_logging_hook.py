"""LossLrMeterLoggingHook: log the loss, learning rates and meters through `logging`."""

from __future__ import annotations

import logging
from typing import Optional

from classy_hooks.core import ClassyHook, is_primary, register_hook
from classy_hooks.core.task import Task
from classy_hooks.core.validation import check_optional_int
from classy_hooks.logging._common import (
    PhaseLearningRates,
    RunningLoss,
    format_number,
    learning_rates,
    mean_loss,
    meter_values,
)

logger = logging.getLogger(__name__)


@register_hook("loss_lr_meter_logging")
class LossLrMeterLoggingHook(ClassyHook):
    """Log progress, mean loss, learning rates and meters (primary rank only).

    When it acts:

    - `on_start`: checks that the task has the attributes listed below.
    - `on_step` (train phases, every `log_freq` batches; never when `log_freq` is None): one
      "Approximate meters" line with the running mean of this rank's batch losses in the phase
      (kept as a running sum: O(1) per step; the one host sync happens only when a line is
      written) and this rank's meters, not yet synced across ranks.
    - `on_phase_end` (train and test phases): one "Synced meters" line with the mean of the
      losses and the meters the loop synced across ranks.

    Each line has the phase type and index, % of the phase done, the mean loss, the meters and,
    on train phases, the learning rate of every param group (`4g` format, so 1e-05 stays 1e-05):
    at phase end those of the phase's last train step, so a loop that steps its schedule before
    `on_phase_end` (Classy Vision's ClassificationTask) still shows the phase's own.

    What it reads: `task.train`, `task.phase_type`, `task.phase_idx`, `task.train_phase_idx`,
    `task.num_batches_per_phase`, `task.losses`, `task.meters`, `task.optimizer`,
    `task.last_batch.loss` and, on test phases, the optional `task.ema`.
    """

    task_attributes = (
        "train",
        "phase_type",
        "phase_idx",
        "train_phase_idx",
        "num_batches_per_phase",
        "losses",
        "meters",
        "optimizer",
        "last_batch",
    )

    def __init__(self, log_freq: Optional[int] = None) -> None:
        super().__init__()
        self.log_freq = check_optional_int(self.name(), "log_freq", log_freq, minimum=1)
        self._running_loss = RunningLoss()
        self._steps = 0
        self._phase_rates = PhaseLearningRates()

    def on_start(self, task: Task) -> None:
        self.check_task(task)

    def on_phase_start(self, task: Task) -> None:
        self._running_loss.reset()
        self._steps = 0
        self._phase_rates.start(task)

    def on_step(self, task: Task) -> None:
        if not is_primary():
            return
        self._steps += 1
        self._phase_rates.step(task)
        if self.log_freq is None or not task.train:
            return
        last_batch = task.last_batch
        if last_batch is not None:
            self._running_loss.add(last_batch.loss)
        if self._steps % self.log_freq == 0:
            mean = self._running_loss.mean()
            self._log(task, "Approximate meters", mean, self._steps, learning_rates(task))

    def on_phase_end(self, task: Task) -> None:
        if not is_primary() or not task.losses:
            return
        self._log(task, "Synced meters", mean_loss(task.losses), self._steps, self._phase_rates.rates(task))

    on_end = ClassyHook._noop

    def _log(self, task: Task, prefix: str, loss: float | None, steps: int, rates: list[float]) -> None:
        phase_type = task.phase_type
        if task.train:
            index = f"train phase {task.train_phase_idx}"
        else:
            index = f"test phase {task.phase_idx - task.train_phase_idx - 1}"
        total = task.num_batches_per_phase
        parts = [f"{prefix}: {phase_type} ({index}, phase_idx {task.phase_idx})"]
        if total:
            parts.append(f"{100.0 * steps / total:.1f}% done ({steps}/{total} batches)")
        if loss is not None:
            parts.append(f"loss {format_number(loss)}")
        if task.train and rates:
            text = format_number(rates[0]) if len(rates) == 1 else "[" + ", ".join(map(format_number, rates)) + "]"
            parts.append(f"lr {text}")
        for meter in task.meters:
            values = meter_values(meter)
            shown = " ".join(f"{key}={format_number(value)}" for key, value in values.items())
            parts.append(f"{meter.name}: {shown}")
        ema = getattr(task, "ema", None)
        if not task.train and ema is not None:
            parts.append(f"ema {ema}")
        logger.info(", ".join(parts))
