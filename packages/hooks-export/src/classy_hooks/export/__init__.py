"""classy-hooks-export: TorchScript, torch.export and prediction-CSV hooks for any PyTorch loop."""

from classy_hooks.export._model_export import ExportError
from classy_hooks.export._version import __version__
from classy_hooks.export.output_csv_hook import OutputCSVHook
from classy_hooks.export.torch_export_hook import TorchExportHook
from classy_hooks.export.torchscript_hook import TorchscriptHook

__all__ = ["ExportError", "OutputCSVHook", "TorchExportHook", "TorchscriptHook", "__version__"]
