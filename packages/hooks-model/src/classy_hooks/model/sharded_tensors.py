"""DTensor helpers for hooks that keep their own copy of FSDP2-sharded parameters.

FSDP2 (`torch.distributed.fsdp.fully_shard`) registers each parameter as a DTensor whose local
tensor is a view of FSDP's own sharded storage. A hook that averages or swaps weights must work on
those local shards in place (assigning `.data` is ignored by FSDP2) and, while a forward left a
module unsharded (no-grad forwards of the root do), reshard it first so that the registered
parameters are the sharded DTensors again.

`torch.distributed.tensor` and `torch.distributed.fsdp` cost seconds to import, so nothing here
imports them until they are in use: while neither is imported, no DTensor or FSDP2 module can exist.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeGuard

import torch
from torch import nn

if TYPE_CHECKING:
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

logger = logging.getLogger(__name__)

#: torch releases whose private DTensor spec `sharded_like` was tested with.
TESTED_TORCH = "2.13-2.14"


def is_sharded(tensor: torch.Tensor) -> TypeGuard[DTensor]:
    """True for a DTensor (an FSDP2 / tensor-parallel parameter or a copy laid out like one)."""
    dtensor_module = sys.modules.get("torch.distributed.tensor")
    return dtensor_module is not None and isinstance(tensor, dtensor_module.DTensor)


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor this rank holds: a DTensor's local shard (a view of its storage), a plain tensor itself."""
    if is_sharded(tensor):
        with torch.no_grad():
            return tensor.to_local()
    return tensor


def sharded_like(local: torch.Tensor, like: DTensor) -> DTensor:
    """Wrap this rank's `local` shard as a DTensor with `like`'s mesh, placements, global shape and stride.

    No communication, and `local` stays where it is (its dtype may differ from `like`'s): a host
    shard of a CUDA-mesh parameter stays on the host, as FSDP2's CPU offload keeps its own.
    `DTensor.from_local` would move it to the mesh's device, so this builds the DTensor from
    `like`'s spec the way FSDP2 does: the one place that uses DTensor's spec (a private attribute).
    Where that spec is missing (a torch other than the tested ones), the public `DTensor.from_local`
    takes over, with a warning: the same DTensor, except that a host shard of a CUDA mesh moves to it.
    """
    from torch.distributed.tensor import DTensor

    spec: Any = getattr(like, "_spec", None)
    tensor_meta = _tensor_meta_class()
    if spec is None or tensor_meta is None:
        _warn_public_fallback()
        return DTensor.from_local(
            local, like.device_mesh, like.placements, run_check=False, shape=like.shape, stride=like.stride()
        )
    spec = dataclasses.replace(spec, tensor_meta=tensor_meta(like.shape, like.stride(), local.dtype))
    return DTensor(local, spec, requires_grad=False)


def _tensor_meta_class() -> Any:
    try:
        from torch.distributed.tensor._dtensor_spec import TensorMeta
    except ImportError:
        return None
    return TensorMeta


_warned: list[bool] = []


def _warn_public_fallback() -> None:
    if not _warned:
        _warned.append(True)
        logger.warning(
            "torch %s has no DTensor spec as torch %s had: EMA copies of sharded parameters are built with "
            "DTensor.from_local, which moves a host (device='cpu') shard of a CUDA mesh onto the GPU.",
            torch.__version__,
            TESTED_TORCH,
        )


def shard_full_tensor(full: torch.Tensor, like: DTensor) -> DTensor:
    """Cut this rank's shard out of a full (unsharded) tensor held by every rank, laid out like `like`.

    `src_data_rank=None` makes every rank use its own copy of `full`: no communication.
    """
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.detach(), like.device_mesh, like.placements, src_data_rank=None)


def same_layout(a: DTensor, b: DTensor) -> bool:
    """True when two DTensors have the same global shape, mesh, placements and local shard shape."""
    return (
        a.shape == b.shape
        and a.device_mesh == b.device_mesh
        and tuple(a.placements) == tuple(b.placements)
        and local_part(a).shape == local_part(b).shape
    )


def fsdp_modules(model: nn.Module) -> list[FSDPModule]:
    """Every module of `model` that `fully_shard` was applied to (empty for plain and DDP models)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is None:
        return []
    return [m for m in model.modules() if isinstance(m, fsdp.FSDPModule)]


def reshard(modules: Iterable[FSDPModule]) -> None:
    """Reshard FSDP2 modules left unsharded by a forward, so their registered parameters are the DTensors.

    A no-op for modules that are already sharded. Local, no collective.
    """
    for module in modules:
        module.reshard()


def local_nbytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes this rank holds for `tensors` (local shards of DTensors, whole plain tensors)."""
    return sum(local_part(t).numel() * local_part(t).element_size() for t in tensors)
