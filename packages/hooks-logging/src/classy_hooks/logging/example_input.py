"""`ExampleInput`: where hooks that run the model once (graph, complexity, profiler) get their input.

From `base_model.input_shape` at `on_start` when the model declares it, otherwise from the first
batch at the first `on_step`. An unusable shape or a batch without `"input"` costs one warning.
The builders are the export hooks' too (classy_hooks.core.torch_support.example_inputs); these
hooks, which only report on the model, turn their `TaskContractError` into a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from classy_hooks.core import TaskContractError
from classy_hooks.core.task import Task
from classy_hooks.core.torch_support.example_inputs import example_from_batch, example_from_shape

logger = logging.getLogger(__name__)


class ExampleInput:
    """Finds an example input once and hands it to `use(model, inputs)`, or calls `give_up(model)`.

    `skipped` completes the warning ("...; no graph written."). `batch_size` is how many samples of
    the first batch to use (None: all of them).
    """

    def __init__(
        self,
        hook: str,
        skipped: str,
        use: Callable[[nn.Module, tuple[Any, ...]], Any],
        give_up: Callable[[nn.Module], Any] = lambda model: None,
        batch_size: int | None = 1,
    ) -> None:
        self.hook = hook
        self.skipped = skipped
        self.use = use
        self.give_up = give_up
        self.batch_size = batch_size
        self.pending = False

    def start(self, model: nn.Module, shape_batch_size: int = 1) -> None:
        """Call from `on_start`: use `input_shape` now, or wait for the first batch."""
        if getattr(model, "input_shape", None) is None:
            self.pending = True
            return
        try:
            inputs = example_from_shape(self.hook, model, shape_batch_size)
        except TaskContractError as exc:
            logger.warning("%s; %s.", exc, self.skipped)
            self.give_up(model)
            return
        self.use(model, inputs)

    def step(self, task: Task) -> None:
        """Call from `on_step`: on the first step after a `start` without `input_shape`, use the batch."""
        if not self.pending:
            return
        self.pending = False
        inputs = example_from_batch(task, self.batch_size)
        if inputs is None:
            logger.warning(
                "%s: base_model has no input_shape and the batch has no 'input'; %s.", self.hook, self.skipped
            )
            self.give_up(task.base_model)
            return
        self.use(task.base_model, inputs)
