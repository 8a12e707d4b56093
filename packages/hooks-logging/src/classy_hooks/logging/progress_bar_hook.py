"""ProgressBarHook: a tqdm bar per phase, or a few log lines when the output is not a terminal."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from tqdm import tqdm

from classy_hooks.core import ClassyHook, is_primary, register_hook
from classy_hooks.core.task import Task

logger = logging.getLogger(__name__)

#: Fractions of a phase at which a non-terminal output gets a summary line.
MILESTONES = (0.25, 0.5, 0.75, 1.0)


def _screen(stream: Any) -> tuple[int | None, int | None]:
    """(ncols, nrows) for tqdm: None lets tqdm measure; 80x24 for a terminal that reports 0x0 (a pty nobody sized),
    where tqdm would hide the bar."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 80, 24
    return (None, None) if size.columns and size.lines else (size.columns or 80, size.lines or 24)


@register_hook("progress_bar")
class ProgressBarHook(ClassyHook):
    """Show how far the current train or test phase is (primary rank only).

    When it acts:

    - `on_phase_start`: when `sys.stderr` is a terminal, opens a tqdm bar on it sized
      `task.num_batches_per_phase`; otherwise prepares summary lines.
    - `on_step`: advances the bar by one batch (train and test phases alike).
    - `on_phase_end`: closes the bar, leaving one line with the phase's totals.

    Without a terminal (CI logs, `nohup`, a file) nothing is redrawn: the hook logs one line at
    25 %, 50 %, 75 % and 100 % of the phase (batches done, rate and elapsed time), i.e. at most
    four lines per phase instead of one per refresh.

    What it reads: `task.phase_type`, `task.phase_idx`, `task.num_batches_per_phase`.
    """

    task_attributes = ("phase_type", "phase_idx", "num_batches_per_phase")

    def __init__(self) -> None:
        super().__init__()
        self.progress_bar: tqdm[Any] | None = None
        self.bar_size = 0
        self.batches = 0
        self._interactive = False
        self._next_milestone = 0
        self._started = 0.0
        self._desc = ""

    def on_start(self, task: Task) -> None:
        self.check_task(task)

    def on_phase_start(self, task: Task) -> None:
        self._close()
        if not is_primary():
            return
        self.bar_size = int(task.num_batches_per_phase or 0)
        self.batches = 0
        self._next_milestone = 0
        self._started = time.perf_counter()
        self._desc = f"{task.phase_type} phase {task.phase_idx}"
        stream = sys.stderr
        self._interactive = bool(getattr(stream, "isatty", lambda: False)())
        if self._interactive:
            # leave=True: each finished phase keeps one line showing its totals
            ncols, nrows = _screen(stream)
            self.progress_bar = tqdm(
                total=self.bar_size or None, desc=self._desc, file=stream, leave=True, ncols=ncols, nrows=nrows
            )

    def on_step(self, task: Task) -> None:
        if self.progress_bar is not None:
            self.progress_bar.update(1)
            self.batches += 1
        elif not self._interactive and self._started:
            self.batches += 1
            milestone = self._next_milestone
            if milestone < len(MILESTONES) and self.bar_size and self.batches >= MILESTONES[milestone] * self.bar_size:
                self._log_line()

    def on_phase_end(self, task: Task) -> None:
        if not self._interactive and self._started and self._next_milestone < len(MILESTONES):
            self._next_milestone = len(MILESTONES) - 1
            self._log_line()
        self._close()

    def on_end(self, task: Task) -> None:
        self._close()

    def _log_line(self) -> None:
        elapsed = time.perf_counter() - self._started
        # total=None (an unknown phase length) is what tqdm itself passes; its stubs only say float
        line = tqdm.format_meter(self.batches, self.bar_size or None, elapsed, ncols=0, prefix=self._desc)  # type: ignore[arg-type]
        logger.info("%s", line)
        while self._next_milestone < len(MILESTONES) and (
            not self.bar_size or self.batches >= MILESTONES[self._next_milestone] * self.bar_size
        ):
            self._next_milestone += 1

    def _close(self) -> None:
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None
        self._started = 0.0
