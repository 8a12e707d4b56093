"""Which modules are BatchNorm layers, by torch's public classes (not its private `_BatchNorm` base).

The EMA averages these layers' buffers and precise BatchNorm recomputes their statistics. The
public classes are BatchNorm1d/2d/3d and SyncBatchNorm (fvcore's `BN_MODULE_TYPES`); their
subclasses count too (timm's, detectron2's), and the Lazy variants once materialised (they become
BatchNorm1d/2d/3d). A class deriving directly from torch's private `_BatchNorm` does not.
"""

from __future__ import annotations

from typing import TypeGuard

from torch import nn

#: The BatchNorm layer types (public torch classes); subclasses are included by `isinstance`.
BN_MODULE_TYPES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

#: What `is_batch_norm` accepts: every public BatchNorm class shares `nn.BatchNorm1d`'s attributes.
BatchNorm = nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d | nn.SyncBatchNorm


def is_batch_norm(module: nn.Module) -> TypeGuard[BatchNorm]:
    """True for a BatchNorm layer (an instance of one of `BN_MODULE_TYPES`)."""
    return isinstance(module, BN_MODULE_TYPES)
