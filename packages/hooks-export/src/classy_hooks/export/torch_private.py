"""The two torch internals the export hooks use, each resolved in one place with a tested fallback.

- `pytree`: tree_map / tree_leaves / tree_flatten over nested inputs. torch's only implementation is
  the private `torch.utils._pytree` (no public module in torch 2.13-2.14); it is what `torch.export`
  itself uses to match `dynamic_shapes` to inputs. Without it, a small implementation over lists,
  tuples (named tuples too) and dicts takes its place, with a warning naming the torch version.
- `TracingCheckError`: the error `torch.jit.trace(check_trace=True)` raises when the traced graph
  diverges. It is defined in the private `torch.jit._trace` and re-exported as `torch.jit.TracingCheckError`
  (not listed in `torch.jit.__all__`), which is where it is read; without it, the error is recognised by its
  class name (with a warning naming the torch version).

Tested with torch 2.13 and 2.14.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import torch

logger = logging.getLogger(__name__)

#: torch releases these internals were tested with.
TESTED_TORCH = "2.13-2.14"

_PYTREE_FUNCTIONS = ("tree_map", "tree_leaves", "tree_flatten")


def _warn(what: str, fallback: str) -> None:
    logger.warning(
        "torch %s has no %s (classy_hooks.export was tested with torch %s): using %s instead.",
        torch.__version__,
        what,
        TESTED_TORCH,
        fallback,
    )


def _children(tree: Any) -> tuple[str, list[Any]] | None:
    """(node kind, children) for a container node, None for a leaf."""
    if isinstance(tree, (list, tuple)):
        return type(tree).__qualname__, list(tree)
    if isinstance(tree, Mapping):
        return "dict", list(tree.values())
    return None


def _rebuild(tree: Any, children: list[Any]) -> Any:
    container: Any = type(tree)
    if isinstance(tree, Mapping):
        return container(zip(tree.keys(), children))
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return container(*children)  # a named tuple
    return container(children)


def _tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    node = _children(tree)
    if node is None:
        return fn(tree)
    return _rebuild(tree, [_tree_map(fn, child) for child in node[1]])


def _tree_leaves(tree: Any) -> list[Any]:
    node = _children(tree)
    if node is None:
        return [tree]
    return [leaf for child in node[1] for leaf in _tree_leaves(child)]


def _spec(tree: Any) -> Any:
    node = _children(tree)
    if node is None:
        return "*"
    keys = tuple(tree.keys()) if isinstance(tree, Mapping) else len(node[1])
    return (node[0], keys, tuple(_spec(child) for child in node[1]))


def _tree_flatten(tree: Any) -> tuple[list[Any], Any]:
    return _tree_leaves(tree), _spec(tree)


#: The containers-only stand-in for torch's pytree (same results on lists, tuples, named tuples and dicts).
CONTAINER_PYTREE = SimpleNamespace(tree_map=_tree_map, tree_leaves=_tree_leaves, tree_flatten=_tree_flatten)


def load_pytree(module_name: str = "torch.utils._pytree") -> Any:
    """torch's pytree module if it has what the export hooks call, else `CONTAINER_PYTREE` (warned)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        module = None
    if module is not None and all(callable(getattr(module, name, None)) for name in _PYTREE_FUNCTIONS):
        return module
    _warn(f"{module_name} with {', '.join(_PYTREE_FUNCTIONS)}", "a pytree of lists, tuples and dicts only")
    return CONTAINER_PYTREE


def load_tracing_check_error(module: Any = torch.jit) -> type[Exception]:
    """`torch.jit.TracingCheckError`, or (warned) a class that `isinstance` matches by that class name."""
    found = getattr(module, "TracingCheckError", None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    _warn("torch.jit.TracingCheckError", "a match on the error's class name")
    return _NamedTracingCheckError


class _ByName(type):
    def __instancecheck__(cls, instance: object) -> bool:
        return any(klass.__name__ == "TracingCheckError" for klass in type(instance).__mro__)


class _NamedTracingCheckError(Exception, metaclass=_ByName):
    """Stands for torch's TracingCheckError where torch.jit does not expose it: matches it by name."""


pytree = load_pytree()
TracingCheckError = load_tracing_check_error()
