"""Fused multi-tensor updates (`torch._foreach_*`) in one place, with a per-tensor fallback.

torch has no public multi-tensor API: `torch.optim`'s own optimizers call the private
`torch._foreach_*` functions, which fuse one op over a list of tensors into a few kernels. This
module is the only place the project calls them. Tested with torch 2.13 and 2.14 (the range the
packages declare); should a future torch drop one, the update falls back to an exact per-tensor loop
(same values, slower) and logs a warning naming the torch version once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

#: torch releases these fused ops were tested with.
TESTED_TORCH = "2.13-2.14"

_warned: set[str] = set()


def fused(name: str) -> Callable[..., Any] | None:
    """`torch._foreach_<name>`, or None (warned once) when this torch does not have it."""
    op = getattr(torch, f"_foreach_{name}", None)
    if op is None and name not in _warned:
        _warned.add(name)
        logger.warning(
            "torch %s has no torch._foreach_%s (tested with torch %s): classy_hooks.model falls back to a "
            "per-tensor loop, with the same results but slower.",
            torch.__version__,
            name,
            TESTED_TORCH,
        )
    return op


def lerp_(targets: Sequence[torch.Tensor], ends: Sequence[torch.Tensor], weight: float) -> None:
    """`target += weight * (end - target)` for every pair, in place (same device and dtype per pair)."""
    op = fused("lerp_")
    if op is not None:
        op(targets, ends, weight)
        return
    for target, end in zip(targets, ends):
        target.lerp_(end, weight)


def scale_add_(targets: Sequence[torch.Tensor], scale: float, others: Sequence[torch.Tensor], alpha: float) -> None:
    """`target = target * scale + alpha * other` for every pair, in place; `other` may be a narrower dtype."""
    mul, add = fused("mul_"), fused("add_")
    if mul is not None and add is not None:
        mul(targets, scale)
        add(targets, others, alpha=alpha)
        return
    for target, other in zip(targets, others):
        target.mul_(scale).add_(other, alpha=alpha)


def copy_(targets: Sequence[torch.Tensor], sources: Sequence[torch.Tensor]) -> None:
    """`target.copy_(source)` for every pair."""
    op = fused("copy_")
    if op is not None:
        op(targets, sources)
        return
    for target, source in zip(targets, sources):
        target.copy_(source)
