"""Classy Vision 0.7.0 checkpoints: its EMA hook's state, converted to `ExponentialMovingAverageModelHook`'s.

Classy Vision's `ExponentialMovingAverageModelHook` checkpoints `model_state` (the training weights, saved at each
train phase's end) and `ema_model_state` (the average), keyed by parameter name and, for BatchNorm buffers,
`{module}_buffer_{buffer}` (e.g. `trunk.bn1_buffer_running_mean`). classy-hooks keeps one extra copy,
`ema_state`, keyed like the model's state dict, and `swapped`, True while the model holds the average. Which
copy that is depends on the phase the checkpoint was written in: after a train phase the model holds the
training weights (`ema_state` is the average); after a test phase it holds the average (`ema_state` holds the
training weights), exactly as Classy Vision would swap them back at the next phase start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from classy_hooks.core.task import Task
from classy_hooks.model.checkpoint_io import CheckpointError

logger = logging.getLogger(__name__)

#: The state keys of Classy Vision's EMA hook.
CLASSY_VISION_EMA_KEYS = ("model_state", "ema_model_state")
_BUFFER_SEPARATOR = "_buffer_"


def is_classy_vision_ema_state(state: Mapping[str, Any]) -> bool:
    """True if `state` is Classy Vision's EMA hook state (its two keys), not classy-hooks'."""
    return all(isinstance(state.get(key), Mapping) for key in CLASSY_VISION_EMA_KEYS)


def state_dict_name(classy_vision_name: str) -> str:
    """`blocks.0.bn_buffer_running_mean` -> `blocks.0.bn.running_mean`; parameter names are unchanged.

    Only a dot-free suffix after the last `_buffer_` is a buffer name, so a module that happens to be
    called `x_buffer_y` keeps its parameters' names (`x_buffer_y.weight`).
    """
    module, separator, buffer = classy_vision_name.rpartition(_BUFFER_SEPARATOR)
    if not separator or not buffer or "." in buffer:
        return classy_vision_name
    return f"{module}.{buffer}" if module else buffer


def model_holds_average(task: Task) -> bool:
    """Whether the model held Classy Vision's average when the restored checkpoint was written.

    Classy Vision swaps the average in for test phases (unless `task.ema` is False) and the checkpoint
    is written at a phase end, so a restored `task.train` of False means the model holds the average.
    """
    return not bool(task.train) and bool(getattr(task, "ema", True))


def ema_state_from_classy_vision(state: Mapping[str, Any], *, model_holds_average: bool) -> dict[str, Any]:
    """classy-hooks EMA state (`ema_state`, `swapped`, `num_updates`) equivalent to Classy Vision's `state`.

    The tensors are the checkpoint's own (no copy). `num_updates` starts at 0: Classy Vision counted no EMA
    updates (it only matters for `warmup_steps`, which Classy Vision did not have).
    """
    training = {state_dict_name(k): v for k, v in state["model_state"].items()}
    average = {state_dict_name(k): v for k, v in state["ema_model_state"].items()}
    if set(training) != set(average):
        raise CheckpointError(
            "ExponentialMovingAverageModelHook: the Classy Vision checkpoint's model_state and ema_model_state "
            f"name different tensors ({sorted(set(training) ^ set(average))[:5]}); the checkpoint is damaged. "
            "Resume from an intact copy or an earlier checkpoint."
        )
    return {
        "ema_state": training if model_holds_average else average,
        "swapped": model_holds_average,
        "num_updates": 0,
    }


def adopt_classy_vision_ema_state(state: Any, task: Task) -> bool:
    """If `state` (the EMA hook's, at `on_start`) was restored from Classy Vision, convert it in place.

    Classy Vision's keys are removed, so they are never saved again. Returns True if it converted.
    """
    fields = vars(state)
    if not is_classy_vision_ema_state(fields):
        return False
    classy_state = {key: fields.pop(key) for key in CLASSY_VISION_EMA_KEYS}
    holds_average = model_holds_average(task)
    fields.update(ema_state_from_classy_vision(classy_state, model_holds_average=holds_average))
    logger.info(
        "ExponentialMovingAverageModelHook: converted Classy Vision's EMA state (%d tensors; the model holds the %s).",
        len(fields["ema_state"]),
        "average" if holds_average else "training weights",
    )
    return True
