"""TorchExportHook: write the trained model as a `torch.export` program (.pt2), verified against the eager model."""

from __future__ import annotations

import inspect
import logging
from typing import IO, Any

import torch
from torch import nn

from classy_hooks.core import register_hook
from classy_hooks.core.validation import check_bool
from classy_hooks.export._model_export import ExportError, ModelExportHookBase, describe_failure
from classy_hooks.export.torch_private import pytree

logger = logging.getLogger(__name__)


@register_hook("torch_export")
class TorchExportHook(ModelExportHookBase):
    """Export `task.base_model` with `torch.export` at `on_end` to `<export_folder>/exported_program.pt2`.

    New in classy-hooks (Classy Vision had only TorchScript, which PyTorch deprecated in 2.11).
    The file loads with `torch.export.load(path)`; call `.module()` on the result to run it.

    When it acts:

    - `on_start` (primary rank): checks that the task has `base_model`, that `export_folder` is a
      writable folder (created if missing) and that `device` exists.
    - `on_end` (primary rank only): puts every module of `task.base_model` in eval mode (each
      one's own mode restored afterwards; the exported graph is the eval graph: BatchNorm uses its
      running statistics, dropout is off), exports it on `device` (a copy when the model lives
      elsewhere) with `torch.export.export(..., strict=strict)`, writes the program to a temporary
      file, loads it back with `torch.export.load`, and renames it into place only if its outputs
      match the eager model's. Otherwise `ExportError`; the previous file is left intact.

    `dynamic_batch=True` marks dimension 0 of every input tensor `Dim.AUTO` (`dynamic_shapes` follows
    the forward signature, `forward(*args)` included): the batch size stays dynamic
    when the model allows it, and is fixed to the example's batch size (with a warning) when the
    model pins it (e.g. a reshape with a constant). The example batch then has at least 2 samples,
    since torch.export specialises sizes 0 and 1. With a dynamic batch, parity is also checked on
    half of the example batch.

    What it reads: `task.base_model` (optional `input_shape`, `input_key`) and
    `task.last_batch.sample["input"]`; wrapped models and the example input are as for every export
    hook (`ModelExportHookBase`).
    """

    file_name = "exported_program.pt2"

    def __init__(
        self, export_folder: str, dynamic_batch: bool = True, strict: bool = False, device: str = "cpu"
    ) -> None:
        super().__init__(export_folder, "export_folder", device)
        self.export_folder = self.folder
        self.dynamic_batch = check_bool(self.name(), "dynamic_batch", dynamic_batch)
        self.strict = check_bool(self.name(), "strict", strict)

    def _min_batch(self) -> int:
        return 2 if self.dynamic_batch else 1

    def _convert(self, model: nn.Module, args: tuple[Any, ...]) -> Any:
        dynamic_shapes = dynamic_batch_shapes(model, args) if self.dynamic_batch else None
        try:
            exported = torch.export.export(model, args, dynamic_shapes=dynamic_shapes, strict=self.strict)
        except Exception as exc:
            raise ExportError(
                f"{self.name()}: torch.export.export failed on {type(model).__name__}: {describe_failure(exc)}. "
                "torch.export needs code without data-dependent Python control flow (use torch.cond) and "
                "inputs that are tensors; see https://pytorch.org/docs/stable/export.html. "
                f"{'Try strict=False. ' if self.strict else ''}The TorchScript hook may still work for this model."
            ) from exc
        if self.dynamic_batch and not self._accepts_other_batch_sizes(exported):
            logger.warning(
                "%s: %s fixes its batch size, so the exported program accepts only batches of %d. "
                "Remove the constant batch size from the model (e.g. reshape(x.shape[0], ...)) to get a dynamic one.",
                self.name(),
                type(model).__name__,
                int(_first_input_shape(exported)[0]),
            )
        return exported

    def _save(self, exported: Any, handle: IO[bytes]) -> None:
        torch.export.save(exported, handle)

    def _load(self, handle: IO[bytes], device: torch.device) -> Any:
        return torch.export.load(handle).module()

    def _accepts_other_batch_sizes(self, exported: Any) -> bool:
        # imported here, not at module level: symbolic_shapes pulls in sympy (~0.3 s of every
        # `import classy_hooks.export`); by the time a program exists, torch.export has loaded it
        from torch.fx.experimental.symbolic_shapes import is_concrete_int

        shape = _first_input_shape(exported)
        return bool(shape) and not is_concrete_int(shape[0])

    def _describe(self, exported: Any) -> str:
        return ", dynamic batch" if self._accepts_other_batch_sizes(exported) else ", static batch"


def dynamic_batch_shapes(model: nn.Module, args: tuple[Any, ...]) -> dict[str, Any]:
    """`dynamic_shapes` marking dimension 0 of every input tensor `Dim.AUTO`, keyed like `model.forward`'s parameters.

    torch.export matches `dynamic_shapes` against the inputs bound to the forward signature, so a
    `forward(*args)` model (every Classy Vision model with heads) needs the specs of its inputs
    grouped under the `*args` name, not one spec per positional input.
    """
    bound = inspect.signature(model.forward).bind(*args).arguments
    auto = torch.export.Dim.AUTO
    return {
        name: pytree.tree_map(lambda t: {0: auto} if isinstance(t, torch.Tensor) else None, value)
        for name, value in bound.items()
    }


def _first_input_shape(exported: Any) -> tuple[Any, ...]:
    """Shape of the first user input of an ExportedProgram (SymInts for dynamic dimensions)."""
    user_inputs = set(exported.graph_signature.user_inputs)
    for node in exported.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            return tuple(value.shape) if isinstance(value, torch.Tensor) else ()
    return ()
