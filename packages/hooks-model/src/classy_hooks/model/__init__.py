"""classy-hooks-model: EMA weights, precise BatchNorm statistics and crash-safe checkpoints."""

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

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "CheckpointHook",
    "ExponentialMovingAverageModelHook",
    "PreciseBatchNormHook",
    "__version__",
    "check_weights_only",
    "list_checkpoints",
    "load_checkpoint",
    "resume_task",
]
