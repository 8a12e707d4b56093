"""A test hook that records what the loop shows it at each event (imported by trainer configs)."""

from __future__ import annotations

import json
import os
from typing import Any

from classy_hooks.core import ClassyHook, get_rank, register_hook


@register_hook("recording", bypass_checks=True)
class RecordingHook(ClassyHook):
    """Appends (event, phase_idx, train, details) at every event; writes them to `<folder>/events-rank<r>.json`."""

    def __init__(self, folder: str = "") -> None:
        super().__init__()
        self.folder = folder
        self.events: list[dict[str, Any]] = []
        self.state.calls = 0

    def _record(self, event: str, task: Any, **details: Any) -> None:
        self.state.calls += 1
        self.events.append({"event": event, "phase_idx": task.phase_idx, "train": task.train, **details})

    def on_start(self, task: Any) -> None:
        self._record("on_start", task, restored_calls=self.state.calls)

    def on_phase_start(self, task: Any) -> None:
        self._record("on_phase_start", task, losses=len(task.losses), batches=task.num_batches_per_phase)

    def on_step(self, task: Any) -> None:
        self._record("on_step", task, has_batch=task.last_batch is not None)

    def on_phase_end(self, task: Any) -> None:
        losses = task.losses
        self._record(
            "on_phase_end",
            task,
            num_losses=len(losses),
            all_floats=all(isinstance(x, float) for x in losses),
            accuracy=task.meters[0].value["top_1"],
            meter_total=float(task.meters[0].total),
        )

    def on_end(self, task: Any) -> None:
        self._record("on_end", task)
        if self.folder:
            os.makedirs(self.folder, exist_ok=True)
            with open(os.path.join(self.folder, f"events-rank{get_rank()}.json"), "w") as handle:
                json.dump(self.events, handle)
