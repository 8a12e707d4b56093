"""`ExampleInput`: where hooks that run the model once (graph, complexity, profiler) get their input.

From `base_model.input_shape` at `on_start` when the model declares it, otherwise from the first
batch at the first `on_step`. An unusable shape or a batch without `"input"` costs one warning.

The builders below behave exactly like the export hooks' (classy_hooks.export._model_export): a
seeded standard normal of positive-int shapes, the batch's `"input"` as the loop passes it, and a
`TaskContractError` for a bad `input_shape` or `input_key` (the export hooks raise it; these hooks,
which only report on the model, turn it into a warning). The same behaviour, checked by
tests/logging/test_example_input.py, until the torch packages have a shared module to import it
from (issue 14); the containers of a batch input are walked here without torch's private pytree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from classy_hooks.core import TaskContractError

logger = logging.getLogger(__name__)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without tensors)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _is_shape(value: Any) -> bool:
    """A non-empty sequence of positive ints (a string like "3x224x224" is not one)."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and bool(value)
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
    )


def example_from_shape(hook: str, model: nn.Module, batch_size: int) -> tuple[Any, ...]:
    """Positional args for one forward from `model.input_shape` (per-sample shape, no batch dimension).

    `input_shape` is one shape (one tensor) or a sequence of shapes (one tensor each), filled with a
    seeded standard normal (the same every run; not zeros, which hide most numeric differences), on
    the model's device. With `model.input_key` (a string) a single tensor is passed as `{input_key: tensor}`.
    """
    shape: Any = getattr(model, "input_shape", None)
    key = getattr(model, "input_key", None)
    if key is not None and not isinstance(key, str):
        raise TaskContractError(
            f"{hook}: base_model.input_key is {key!r}; only one string key (or None) is supported. "
            "Set input_key to the name the model reads its input under, or remove it."
        )
    if _is_shape(shape):
        shapes = [tuple(shape)]
    elif isinstance(shape, Sequence) and not isinstance(shape, (str, bytes)) and shape and all(map(_is_shape, shape)):
        shapes = [tuple(s) for s in shape]
    else:
        raise TaskContractError(
            f"{hook}: base_model.input_shape must be a sequence of positive ints or of such sequences, got {shape!r}. "
            "Set it to the per-sample shape without the batch dimension, e.g. (3, 224, 224)"
        )
    generator = torch.Generator().manual_seed(0)
    device = model_device(model)
    tensors = [torch.randn(batch_size, *s, generator=generator).to(device) for s in shapes]
    if key is not None and len(tensors) == 1:
        return ({key: tensors[0]},)
    return tuple(tensors)


def _map_tensors(fn: Callable[[torch.Tensor], Any], value: Any) -> Any:
    """`value` with `fn` applied to every tensor in it, through dicts, lists and tuples (namedtuples included)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, Mapping):
        return {key: _map_tensors(fn, item) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map_tensors(fn, item) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(fn, item) for item in value)
    return value


def _tensors(value: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    _map_tensors(found.append, value)
    return found


def example_from_batch(task: Any, max_samples: int | None) -> tuple[Any, ...] | None:
    """`(task.last_batch.sample["input"],)`, the argument the loop gives the model, its tensors cut to `max_samples`.

    The input may be a tensor or a tuple/list/dict of them (non-tensor leaves are kept as they are).
    None when there is no last batch, no `"input"`, or a tensor without a batch dimension.
    """
    sample = getattr(getattr(task, "last_batch", None), "sample", None)
    if not isinstance(sample, Mapping) or "input" not in sample:
        return None
    value = sample["input"]
    tensors = _tensors(value)
    if not tensors or any(t.dim() == 0 or t.shape[0] == 0 for t in tensors):
        return None
    return (_map_tensors(lambda t: t.detach()[:max_samples], value),)


class ExampleInput:
    """Finds an example input once and hands it to `use(model, inputs)`, or calls `give_up(model)`.

    `skipped` completes the warning ("...; no graph written."). `batch_size` is how many samples of
    the first batch to use (None: all of them).
    """

    def __init__(
        self,
        hook: str,
        skipped: str,
        use: Callable[[nn.Module, tuple[Any, ...]], Any],
        give_up: Callable[[nn.Module], Any] = lambda model: None,
        batch_size: int | None = 1,
    ) -> None:
        self.hook = hook
        self.skipped = skipped
        self.use = use
        self.give_up = give_up
        self.batch_size = batch_size
        self.pending = False

    def start(self, model: nn.Module, shape_batch_size: int = 1) -> None:
        """Call from `on_start`: use `input_shape` now, or wait for the first batch."""
        if getattr(model, "input_shape", None) is None:
            self.pending = True
            return
        try:
            inputs = example_from_shape(self.hook, model, shape_batch_size)
        except TaskContractError as exc:
            logger.warning("%s; %s.", exc, self.skipped)
            self.give_up(model)
            return
        self.use(model, inputs)

    def step(self, task: Any) -> None:
        """Call from `on_step`: on the first step after a `start` without `input_shape`, use the batch."""
        if not self.pending:
            return
        self.pending = False
        inputs = example_from_batch(task, self.batch_size)
        if inputs is None:
            logger.warning(
                "%s: base_model has no input_shape and the batch has no 'input'; %s.", self.hook, self.skipped
            )
            self.give_up(task.base_model)
            return
        self.use(task.base_model, inputs)
