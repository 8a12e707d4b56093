"""ModelTensorboardHook: the graph of `base_model` in TensorBoard."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping
from typing import Any

import torch

from classy_hooks.core import ClassyHook, is_primary, register_hook
from classy_hooks.core.deprecations import quiet_jit_deprecations
from classy_hooks.core.module_modes import eval_mode
from classy_hooks.core.optional import import_extra
from classy_hooks.core.task import Task
from classy_hooks.core.wrapped_models import unwrap_model
from classy_hooks.logging._common import (
    DISTRIBUTION,
    check_tb_writer,
    create_summary_writer,
    flush_and_close,
    hook_from_summary_writer_config,
)
from classy_hooks.logging.example_input import ExampleInput

logger = logging.getLogger(__name__)


@register_hook("model_tensorboard")
class ModelTensorboardHook(ClassyHook):
    """Write the graph of `task.base_model` to TensorBoard once per run (primary rank only).

    When it acts:

    - `on_start` (primary): creates the writer from the `summary_writer` kwargs when built by
      `from_config` (its own file in the log folder). If `base_model.input_shape` is set, traces
      the model on a batch of one zero sample built from it (with `input_key` when the model
      has one) and writes the graph.
    - `on_step` (primary, first step only, when there was no `input_shape`): traces the model on
      the first sample of `task.last_batch.sample["input"]` instead.

    The model is traced in eval mode under `torch.no_grad()`, and every module gets its own
    mode back afterwards. Of a `torch.compile` / DDP wrapper, the module inside is traced (a
    compiled one cannot be). A model that cannot be traced (dict outputs, data-dependent control
    flow, ...) costs a warning, never the run. The writer is flushed, and closed if the hook
    created it. Tracing uses `torch.jit.trace` (through tensorboardX, which needs the
    `tensorboard` package for the graph protos).

    What it reads: `task.base_model` (and its optional `input_shape`, `input_key`) and
    `task.last_batch.sample["input"]`.
    """

    task_attributes = ("base_model", "last_batch")

    def __init__(self, tb_writer: Any) -> None:
        super().__init__()
        import_extra("tensorboardX", self.name(), DISTRIBUTION, "tensorboard")
        import_extra("tensorboard", self.name(), DISTRIBUTION, "tensorboard")
        self.tb_writer = check_tb_writer(self.name(), tb_writer, "add_graph")
        self._writer_kwargs: dict[str, Any] | None = None
        self._owns_writer = False
        self._example = ExampleInput(self.name(), "no graph written", self._plot, lambda model: self._finish())
        self.graph_written = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelTensorboardHook:
        """Build from `{"summary_writer": {SummaryWriter kwargs}}`; the writer is created in `on_start`."""
        return hook_from_summary_writer_config(cls.name(), cls, config, {})

    def on_start(self, task: Task) -> None:
        self.check_task(task)
        if not is_primary():
            return
        if self.tb_writer is None and self._writer_kwargs is not None:
            self.tb_writer = self._create_writer()
            self._owns_writer = True
        if self.tb_writer is None:
            logger.warning(
                "%s: no tb_writer on the primary rank, so no graph will be written. Pass a "
                "tensorboardX.SummaryWriter as tb_writer, or build the hook with 'summary_writer' kwargs.",
                self.name(),
            )
            return
        self._example.start(task.base_model)

    on_phase_start = ClassyHook._noop

    def on_step(self, task: Task) -> None:
        self._example.step(task)

    on_phase_end = ClassyHook._noop

    def on_end(self, task: Task) -> None:
        self._finish()

    def _plot(self, model: torch.nn.Module, inputs: tuple[Any, ...]) -> None:
        model = unwrap_model(model)  # jit tracing cannot enter a torch.compile wrapper
        assert self.tb_writer is not None
        printed = io.StringIO()  # tensorboardX print()s tracing errors; keep them out of the user's stdout
        try:
            with eval_mode(model), torch.no_grad(), quiet_jit_deprecations(), contextlib.redirect_stdout(printed):
                self.tb_writer.add_graph(model, inputs if len(inputs) > 1 else inputs[0])
            self.graph_written = True
            logger.info("%s: wrote the graph of %s.", self.name(), type(model).__name__)
        except Exception as exc:  # any tracing failure must not stop training
            logger.warning(
                "%s: could not trace %s for its graph (%s: %s); training continues without it.",
                self.name(),
                type(model).__name__,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
        if printed.getvalue().strip():
            logger.debug("%s: tensorboardX printed: %s", self.name(), printed.getvalue().strip())
        self._finish()

    def _finish(self) -> None:
        """Flush the graph to disk (and close a writer the hook created); a failing disk costs a warning."""
        if self.tb_writer is None:
            return
        try:
            flush_and_close(self.tb_writer, self._owns_writer)
        except (OSError, ValueError) as exc:
            logger.warning(
                "%s: writing the graph to TensorBoard failed (%s: %s); training continues.",
                self.name(),
                type(exc).__name__,
                exc,
            )
            self.tb_writer = None  # a broken writer is not used again
        if self._owns_writer:
            self.tb_writer = None
            self._owns_writer = False

    def _create_writer(self) -> Any:
        return create_summary_writer(self.name(), self._writer_kwargs)
