"""classy-hooks-logging: Classy Vision's logging hooks for any PyTorch training loop.

Importing this package imports none of the optional dependencies (tensorboardX, tensorboard,
visdom, fvcore); a hook that needs one imports it when it is constructed.
"""

from classy_hooks.logging._version import __version__
from classy_hooks.logging.loss_lr_meter_logging_hook import LossLrMeterLoggingHook
from classy_hooks.logging.model_complexity_hook import ModelComplexityHook
from classy_hooks.logging.model_tensorboard_hook import ModelTensorboardHook
from classy_hooks.logging.profiler_hook import ProfilerHook
from classy_hooks.logging.progress_bar_hook import ProgressBarHook
from classy_hooks.logging.tensorboard_plot_hook import TensorboardPlotHook
from classy_hooks.logging.visdom_hook import VisdomHook

__all__ = [
    "LossLrMeterLoggingHook",
    "ModelComplexityHook",
    "ModelTensorboardHook",
    "ProfilerHook",
    "ProgressBarHook",
    "TensorboardPlotHook",
    "VisdomHook",
    "__version__",
]
