"""Rank helpers that work with torch absent, present but not initialised, or initialised.

Core never imports torch: if `torch.distributed` has not been imported by someone else, no
process group can exist, so the process is treated as the only rank.
"""

from __future__ import annotations

import sys
from typing import Any

from classy_hooks.core.errors import HookConfigError


def _dist() -> Any | None:
    """The `torch.distributed` module if it is imported and a process group is initialised."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised."""
    return _dist() is not None


def get_rank() -> int:
    """This process's rank, 0 when not distributed."""
    dist = _dist()
    return 0 if dist is None else int(dist.get_rank())


def get_world_size() -> int:
    """Number of ranks, 1 when not distributed."""
    dist = _dist()
    return 1 if dist is None else int(dist.get_world_size())


def is_primary() -> bool:
    """True on the rank that writes files and talks to servers (rank 0, or the only process)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank; a no-op when not distributed."""
    dist = _dist()
    if dist is not None:
        dist.barrier()


def _reduce_device(dist: Any) -> str:
    torch = sys.modules["torch"]
    if dist.get_backend() == "nccl":
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


def all_reduce(value: Any, op: str = "sum") -> Any:
    """Reduce a tensor (in place, returned) or a number (a new float) across ranks.

    `op` is "sum", "mean", "max" or "min". Without a process group the value comes back as is.
    Tensors on the CPU are moved to the GPU and back for NCCL.
    """
    if op not in ("sum", "mean", "max", "min"):
        raise HookConfigError(f"all_reduce: op must be 'sum', 'mean', 'max' or 'min', got {op!r}.")
    dist = _dist()
    if dist is None:
        return value
    torch = sys.modules["torch"]
    reduce_op = {
        "sum": dist.ReduceOp.SUM,
        "mean": dist.ReduceOp.SUM,
        "max": dist.ReduceOp.MAX,
        "min": dist.ReduceOp.MIN,
    }[op]
    is_tensor = isinstance(value, torch.Tensor)
    device = _reduce_device(dist)
    tensor = value if is_tensor else torch.tensor(float(value), dtype=torch.float64)
    work = tensor.to(device) if tensor.device.type != device.split(":")[0] else tensor
    dist.all_reduce(work, op=reduce_op)
    if op == "mean":
        work.div_(dist.get_world_size())
    if work is not tensor:
        tensor.copy_(work)
    return tensor if is_tensor else float(tensor.item())


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's `value` (picklable), in rank order; `[value]` when not distributed."""
    dist = _dist()
    if dist is None:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
