"""The five events a training loop announces to its hooks, in the order a run emits them."""

from __future__ import annotations

import enum


class ClassyHookFunctions(enum.Enum):
    """Names of the hook functions, in call order: start, then per phase start/step/end, then end."""

    on_start = "on_start"
    on_phase_start = "on_phase_start"
    on_step = "on_step"
    on_phase_end = "on_phase_end"
    on_end = "on_end"
