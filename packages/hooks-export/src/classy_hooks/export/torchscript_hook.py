"""TorchscriptHook: write the trained model as TorchScript at the end of training, verified against the eager model."""

from __future__ import annotations

from typing import IO, Any

import torch
from torch import nn

from classy_hooks.core import register_hook
from classy_hooks.core.deprecations import quiet_jit_deprecations
from classy_hooks.core.validation import check_bool
from classy_hooks.export._model_export import (
    ExportError,
    ModelExportHookBase,
    describe_failure,
)
from classy_hooks.export.torch_private import TracingCheckError

#: What torch.jit.trace says when it meets a `torch.compile`d function inside the model.
_DYNAMO_TRACE_ERROR = "dynamo-optimized function"


@register_hook("torchscript")
class TorchscriptHook(ModelExportHookBase):
    """Trace (or script) `task.base_model` at `on_end` and save it to `<torchscript_folder>/torchscript.pt`.

    When it acts:

    - `on_start` (primary rank): checks that the task has `base_model`, that `torchscript_folder`
      is a writable folder (created if missing) and that `device` exists.
    - `on_end` (primary rank only): puts every module of `task.base_model` in eval mode (each one's
      own mode is restored afterwards, so a run whose last phase was a train phase keeps training
      mode), then `torch.jit.trace(..., strict=trace_strict)` or `torch.jit.script` it on `device`
      (a copy is exported when the model lives elsewhere, so the task's model never moves).
      The file is written to a temporary file next to `torchscript.pt`, loaded back with
      `torch.jit.load` and run on a real input; only if its outputs match the eager model's
      (`parity_atol + parity_rtol * |eager|`, on the example batch and on half of it) is it
      renamed into place. Otherwise `ExportError` says by how much they differ, and the previous
      file is left intact. A model that cannot be traced or scripted raises `ExportError` naming
      the cause.

    What it reads: `task.base_model` (optional `input_shape`, `input_key`) and
    `task.last_batch.sample["input"]`; wrapped models and the example input are as for every export
    hook (`ModelExportHookBase`).

    TorchScript is deprecated upstream since PyTorch 2.11; the hook silences only the
    "`torch.jit.*` is deprecated" notices around its own jit calls. Prefer `TorchExportHook`
    ("torch_export") for new deployments.
    """

    file_name = "torchscript.pt"

    def __init__(
        self, torchscript_folder: str, use_trace: bool = True, trace_strict: bool = True, device: str = "cpu"
    ) -> None:
        super().__init__(torchscript_folder, "torchscript_folder", device)
        self.torchscript_folder = self.folder
        self.use_trace = check_bool(self.name(), "use_trace", use_trace)
        self.trace_strict = check_bool(self.name(), "trace_strict", trace_strict)

    def _convert(self, model: nn.Module, args: tuple[Any, ...]) -> Any:
        how = "torch.jit.trace" if self.use_trace else "torch.jit.script"
        try:
            with quiet_jit_deprecations(), torch.no_grad():
                if self.use_trace:
                    return torch.jit.trace(model, args, strict=self.trace_strict)  # type: ignore[no-untyped-call]
                return torch.jit.script(model)
        except Exception as exc:
            fix = (
                "TorchScript cannot trace through torch.compile: the hook exports the module inside "
                "torch.compile(model), but not a module compiled in place (model.compile()) or one with compiled "
                "submodules; compile with torch.compile(model) instead, or use the torch_export hook."
                if _DYNAMO_TRACE_ERROR in str(exc)
                else "The traced graph does not reproduce the model on the same input (randomness or Python "
                "state in forward); make forward deterministic in eval mode, or pass use_trace=False."
                if isinstance(exc, TracingCheckError)
                else "If the model returns lists or dicts, pass trace_strict=False; if its control flow depends "
                "on the data, pass use_trace=False (scripting) or use the torch_export hook."
                if self.use_trace
                else "Scripting needs TorchScript-compatible code (annotated, no unsupported Python); "
                "pass use_trace=True or use the torch_export hook."
            )
            raise ExportError(
                f"{self.name()}: {how} failed on {type(model).__name__}: {describe_failure(exc)}. {fix}"
            ) from exc

    def _save(self, exported: Any, handle: IO[bytes]) -> None:
        with quiet_jit_deprecations():
            torch.jit.save(exported, handle)

    def _load(self, handle: IO[bytes], device: torch.device) -> Any:
        with quiet_jit_deprecations():
            return torch.jit.load(handle, map_location=device)  # type: ignore[no-untyped-call]

    def _describe(self, exported: Any) -> str:
        return f", {'traced' if self.use_trace else 'scripted'}"
