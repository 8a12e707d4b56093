"""The plain module inside `torch.compile`, DDP and DataParallel wrappers, and its state-dict keys.

Hooks export, average and checkpoint the module the user wrote, not a wrapper around it, so that
a checkpoint of a compiled or DDP run loads into the uncompiled model and back. Duck-typed (no
torch import): a wrapper is recognised by its class and the attribute that holds the wrapped module.
FSDP2's `fully_shard` wraps nothing (it changes the module in place and keeps the plain keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

#: The attribute of torch.compile's `OptimizedModule` that holds the compiled module, and so the key segment it
#: adds to state dicts. A private name of torch, matched by name here only (the sole way to recognise a compiled
#: module without importing torch._dynamo); everything else asks `unwrap_model`, `plain_key` or
#: `has_wrapper_keys`.
COMPILED_MODULE_ATTRIBUTE = "_orig_mod"

# (module of the class, class name) -> attribute holding the wrapped module
_WRAPPERS = {
    ("torch._dynamo.eval_frame", "OptimizedModule"): COMPILED_MODULE_ATTRIBUTE,  # torch.compile(model)
    ("torch.nn.parallel.distributed", "DistributedDataParallel"): "module",
    ("torch.nn.parallel.data_parallel", "DataParallel"): "module",
}
# the key segments those wrappers add in front of the wrapped module's own keys
WRAPPER_KEY_SEGMENTS = frozenset(_WRAPPERS.values())

V = TypeVar("V")


def _wrapped_attribute(model: Any) -> str | None:
    for cls in type(model).__mro__:
        attribute = _WRAPPERS.get((cls.__module__, cls.__qualname__))
        if attribute is not None:
            return attribute
    return None


def is_wrapper(model: Any) -> bool:
    """True for a `torch.compile`, DDP or DataParallel wrapper around another module."""
    return _wrapped_attribute(model) is not None


def unwrap_model(model: Any) -> Any:
    """The innermost plain module: `torch.compile(DDP(m))` and `DDP(torch.compile(m))` both give `m`."""
    while True:
        attribute = _wrapped_attribute(model)
        if attribute is None:
            return model
        model = getattr(model, attribute)


def plain_key(key: str) -> str:
    """`key` without wrapper segments: `module._orig_mod.fc.weight` -> `fc.weight`, `a._orig_mod.b` -> `a.b`.

    `_orig_mod` segments are dropped wherever they stand (a compiled submodule adds one in the
    middle); `module` only as a leading prefix, since plain models may name a submodule `module`.
    """
    parts = key.split(".")
    while len(parts) > 1 and parts[0] in WRAPPER_KEY_SEGMENTS:
        parts.pop(0)
    return ".".join(part for i, part in enumerate(parts) if part != COMPILED_MODULE_ATTRIBUTE or i == len(parts) - 1)


def has_wrapper_keys(keys: Iterable[str]) -> bool:
    """Whether any key has a wrapper segment `plain_key` drops (a cheap test, so saves can skip the copy)."""
    return any(plain_key(key) != key for key in keys)


def plain_state_dict(state_dict: Mapping[str, V]) -> dict[str, V]:
    """`state_dict` with the keys of the plain module (see `plain_key`); an error if two keys collide."""
    out: dict[str, V] = {}
    source: dict[str, str] = {}
    for key, value in state_dict.items():
        new = plain_key(key)
        if new in out:
            raise ValueError(f"state dict keys {source[new]!r} and {key!r} both map to {new!r} without wrappers")
        out[new], source[new] = value, key
    return out
