"""ProfilerHook: `torch.profiler` over the forward and backward pass of one batch, as a table in the log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from classy_hooks.core import ClassyHook, is_primary, register_hook
from classy_hooks.core.module_modes import preserved_modes
from classy_hooks.core.task import Task
from classy_hooks.core.torch_support.example_inputs import tensors_in
from classy_hooks.core.torch_support.random_state import preserved_rng
from classy_hooks.logging.example_input import ExampleInput

logger = logging.getLogger(__name__)

#: Rows of the per-operator table (sorted by self CPU time, or self CUDA time on GPUs).
ROW_LIMIT = 25


@contextmanager
def _preserved_grads_and_buffers(model: torch.nn.Module) -> Iterator[None]:
    """Give back the parameters' gradients and the buffers' values (BatchNorm statistics) on exit."""
    params = list(model.parameters())
    grads = [p.grad for p in params]
    buffers = [b.detach().clone() for b in model.buffers()]
    for p in params:
        p.grad = None
    try:
        yield
    finally:
        with torch.no_grad():
            for p, grad in zip(params, grads):
                p.grad = grad
            for buffer, saved in zip(model.buffers(), buffers):
                buffer.copy_(saved)


@register_hook("profiler")
class ProfilerHook(ClassyHook):
    """Profile one training-mode forward and backward pass of `task.base_model` (primary rank only).

    When it acts:

    - `on_start` (primary): if `base_model.input_shape` is set, profiles a zero batch of
      `task.get_batchsize_per_replica()` samples built from it.
    - `on_step` (primary, first step only, when there was no `input_shape`): profiles the batch in
      `task.last_batch.sample["input"]` instead.

    One untimed warm-up pass runs first, then one pass (forward, then backward of the sum of the
    outputs) under `torch.profiler.profile` with the CPU activity (and CUDA when available). A
    per-operator table sorted by self time goes to the log; `table` keeps it and `profile` the
    profiler object. The pass leaves no trace on training: gradients, buffers (BatchNorm
    statistics), the RNG state and every module's train/eval mode are restored afterwards. The
    unwrapped `base_model` is used, so no DDP collective runs on one rank only. A failure costs a
    warning, not the run.

    What it reads: `task.base_model` (and its optional `input_shape`, `input_key`),
    `task.get_batchsize_per_replica()`, `task.last_batch.sample["input"]`, optional `task.use_gpu`.
    """

    task_attributes = ("base_model", "last_batch", "get_batchsize_per_replica")

    def __init__(self) -> None:
        super().__init__()
        self.table: str | None = None
        self.profile: Any = None
        self._example = ExampleInput(self.name(), "not profiling", self.run, batch_size=None)

    def on_start(self, task: Task) -> None:
        self.check_task(task)
        if not is_primary():
            return
        self._example.start(task.base_model, shape_batch_size=int(task.get_batchsize_per_replica()))

    on_phase_start = ClassyHook._noop

    def on_step(self, task: Task) -> None:
        self._example.step(task)

    on_phase_end = ClassyHook._noop
    on_end = ClassyHook._noop

    def run(self, model: torch.nn.Module, inputs: tuple[Any, ...]) -> str | None:
        """Profile forward+backward of `model(*inputs)`, log the table and return it (None on failure)."""
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with preserved_modes(model), preserved_rng(), _preserved_grads_and_buffers(model):
            try:
                model.train()
                self._pass(model, inputs)  # warm-up: allocator, lazy init
                model.zero_grad(set_to_none=True)
                with torch.profiler.profile(activities=activities) as prof:
                    with torch.profiler.record_function("forward"):
                        output = model(*inputs)
                    with torch.profiler.record_function("backward"):
                        self._backward(output)
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                sort_by = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
                self.profile = prof
                self.table = prof.key_averages().table(sort_by=sort_by, row_limit=ROW_LIMIT)
                tensors = tensors_in(inputs)
                logger.info(
                    "%s: forward and backward of %s on a batch of %s:\n%s",
                    self.name(),
                    type(model).__name__,
                    "x".join(str(s) for s in tensors[0].shape) if tensors else "?",
                    self.table,
                )
            except Exception as exc:  # profiling is optional: never stop training for it
                logger.warning(
                    "%s: profiling failed (%s: %s); training continues.", self.name(), type(exc).__name__, exc
                )
        return self.table

    def _pass(self, model: torch.nn.Module, inputs: tuple[Any, ...]) -> None:
        self._backward(model(*inputs))

    @staticmethod
    def _backward(output: Any) -> None:
        outputs = [t for t in tensors_in(output) if t.requires_grad]
        if not outputs:
            return  # a frozen model: forward only
        total = sum(t.float().sum() for t in outputs)
        assert isinstance(total, torch.Tensor)
        total.backward()  # type: ignore[no-untyped-call]
