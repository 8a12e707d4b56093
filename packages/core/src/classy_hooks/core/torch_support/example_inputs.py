"""Example inputs for hooks that run the model once (graph, complexity, profiler, export).

From the model's declared `input_shape` (a seeded standard normal) or from the batch the loop
passed (`task.last_batch.sample["input"]`). A bad `input_shape` or `input_key` is a
`TaskContractError`: the export hooks raise it, the logging hooks turn it into a warning.
The containers of a batch input are walked without torch's private pytree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from classy_hooks.core.errors import TaskContractError
from classy_hooks.core.task import Task
from classy_hooks.core.torch_support.devices import model_device


def is_shape(value: Any) -> bool:
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
    if is_shape(shape):
        shapes = [tuple(shape)]
    elif isinstance(shape, Sequence) and not isinstance(shape, (str, bytes)) and shape and all(map(is_shape, shape)):
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


def map_tensors(fn: Callable[[torch.Tensor], Any], value: Any) -> Any:
    """`value` with `fn` applied to every tensor in it, through dicts, lists and tuples (namedtuples included)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, Mapping):
        return {key: map_tensors(fn, item) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(map_tensors(fn, item) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(fn, item) for item in value)
    return value


def tensors_in(value: Any) -> list[torch.Tensor]:
    """Every tensor in `value`, in the order `map_tensors` visits them."""
    found: list[torch.Tensor] = []
    map_tensors(found.append, value)
    return found


def example_from_batch(task: Task, max_samples: int | None) -> tuple[Any, ...] | None:
    """`(task.last_batch.sample["input"],)`, the argument the loop gives the model, its tensors cut to `max_samples`.

    The input may be a tensor or a tuple/list/dict of them (non-tensor leaves are kept as they are).
    None when there is no last batch, no `"input"`, or a tensor without a batch dimension.
    """
    sample = getattr(getattr(task, "last_batch", None), "sample", None)
    if not isinstance(sample, Mapping) or "input" not in sample:
        return None
    value = sample["input"]
    tensors = tensors_in(value)
    if not tensors or any(t.dim() == 0 or t.shape[0] == 0 for t in tensors):
        return None
    return (map_tensors(lambda t: t.detach()[:max_samples], value),)
