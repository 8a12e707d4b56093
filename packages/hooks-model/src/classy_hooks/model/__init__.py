"""classy-hooks-model: EMA weights, precise BatchNorm statistics and crash-safe checkpoints."""

from typing import Any

from classy_hooks.model._version import __version__
from classy_hooks.model.checkpoint_hook import CheckpointHook
from classy_hooks.model.checkpoint_io import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    check_weights_only,
    list_checkpoints,
    load_checkpoint,
    resume_task,
)
from classy_hooks.model.exponential_moving_average_model_hook import ExponentialMovingAverageModelHook
from classy_hooks.model.precise_batch_norm_hook import PreciseBatchNormHook


def __getattr__(name: str) -> Any:
    """`convert_sharded_checkpoint` imports torch.distributed.checkpoint (seconds): only when first asked for."""
    if name == "convert_sharded_checkpoint":
        from classy_hooks.model.convert_checkpoint import convert_sharded_checkpoint

        return convert_sharded_checkpoint
    raise AttributeError(f"module 'classy_hooks.model' has no attribute {name!r}")


__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "CheckpointHook",
    "ExponentialMovingAverageModelHook",
    "PreciseBatchNormHook",
    "__version__",
    "check_weights_only",
    "convert_sharded_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "resume_task",
]
