"""ModelComplexityHook: parameters, FLOPs and activations of `base_model`, counted with fvcore."""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch

from classy_hooks.core import ClassyHook, is_primary, register_hook
from classy_hooks.core.deprecations import quiet_jit_deprecations
from classy_hooks.core.module_modes import eval_mode
from classy_hooks.core.optional import import_extra
from classy_hooks.core.task import Task
from classy_hooks.core.wrapped_models import unwrap_model
from classy_hooks.logging._common import (
    DISTRIBUTION,
)
from classy_hooks.logging.example_input import ExampleInput

logger = logging.getLogger(__name__)


@register_hook("model_complexity")
class ModelComplexityHook(ClassyHook):
    """Count the parameters, FLOPs and activations of `task.base_model` once (primary rank only).

    **Unit.** FLOPs are fvcore's: one fused multiply-add counts as one FLOP (a MAC), for one
    sample (batch of 1) in eval mode. `torch.utils.flop_counter` and Lightning count 2 per MAC,
    so their figures are twice these. torchvision's published "GFLOPS" use the same MAC unit
    but count only convolutions and matrix products; `flops_by_operator` lets you compare.
    Activations are fvcore's count of output elements of convolutions and linear layers.

    When it acts:

    - `on_start` (primary): counts parameters (all of them, trainable or not); if
      `base_model.input_shape` is set, counts FLOPs and activations on a zero sample built from it
      (`input_key` respected).
    - `on_step` (primary, first step only, when there was no `input_shape`): counts on the first
      sample of `task.last_batch.sample["input"]` instead.

    Results: the attributes `num_parameters`, `num_flops`, `num_activations` (None until counted,
    and on other ranks), `flops_by_operator`, `unsupported_ops`, and `get_summary()`. A log line
    states them with their unit, a table breaks FLOPs down by module, and operators fvcore has no
    formula for (residual adds, pooling, activations...) are listed by name and count, since
    they are counted as 0. A model fvcore cannot trace costs a warning, not the run. The module
    inside a `torch.compile` / DDP wrapper is the one traced (fvcore cannot trace a compiled one).

    What it reads: `task.base_model` (and its optional `input_shape`, `input_key`) and
    `task.last_batch.sample["input"]`.
    """

    task_attributes = ("base_model", "last_batch")

    def __init__(self) -> None:
        super().__init__()
        import_extra("fvcore", self.name(), DISTRIBUTION, "complexity")
        self.num_parameters: Optional[int] = None
        self.num_trainable_parameters: Optional[int] = None
        self.num_flops: Optional[int] = None
        self.num_activations: Optional[int] = None
        self.flops_by_operator: dict[str, int] = {}
        self.unsupported_ops: dict[str, int] = {}
        self._example = ExampleInput(self.name(), "FLOPs and activations not counted", self.compute, self._report)

    def on_start(self, task: Task) -> None:
        self.check_task(task)
        if not is_primary():
            return
        model = task.base_model
        self.num_parameters = sum(p.numel() for p in model.parameters())
        self.num_trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self._example.start(model)

    on_phase_start = ClassyHook._noop

    def on_step(self, task: Task) -> None:
        self._example.step(task)

    on_phase_end = ClassyHook._noop
    on_end = ClassyHook._noop

    def compute(self, model: torch.nn.Module, inputs: tuple[Any, ...]) -> None:
        """Count FLOPs and activations of `model` on `inputs` (positional args), then log them."""
        model = unwrap_model(model)  # jit tracing cannot enter a torch.compile wrapper
        if self.num_parameters is None:
            self.num_parameters = sum(p.numel() for p in model.parameters())
            self.num_trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        with quiet_jit_deprecations():
            fvcore_nn = import_extra("fvcore.nn", self.name(), DISTRIBUTION, "complexity")
        table = ""
        try:
            with eval_mode(model), torch.no_grad(), quiet_jit_deprecations():
                flops = fvcore_nn.FlopCountAnalysis(model, inputs)
                flops.unsupported_ops_warnings(False)
                flops.uncalled_modules_warnings(False)
                self.num_flops = int(flops.total())
                self.flops_by_operator = {str(k): int(v) for k, v in flops.by_operator().items()}
                self.unsupported_ops = {str(k): int(v) for k, v in flops.unsupported_ops().items()}
                activations = fvcore_nn.ActivationCountAnalysis(model, inputs)
                activations.unsupported_ops_warnings(False)
                activations.uncalled_modules_warnings(False)
                self.num_activations = int(activations.total())
                table = fvcore_nn.flop_count_table(flops, max_depth=2, activations=activations)
        except Exception as exc:  # a model fvcore cannot trace must not stop training
            logger.warning(
                "%s: fvcore could not count FLOPs of %s (%s: %s); only parameters are reported.",
                self.name(),
                type(model).__name__,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
        self._report(model, table)

    def get_summary(self) -> dict[str, Optional[float]]:
        """Classy Vision's summary keys, in millions (FLOPs are multiply-adds, per sample)."""

        def millions(value: Optional[int]) -> Optional[float]:
            return None if value is None else value / 1e6

        return {
            "FLOPS(M)": millions(self.num_flops),
            "num_activations(M)": millions(self.num_activations),
            "num_parameters(M)": millions(self.num_parameters),
        }

    def _report(self, model: torch.nn.Module, table: str = "") -> None:
        name = type(model).__name__
        trainable = self.num_trainable_parameters
        parts = [f"{self.name()}: {name} has {self.num_parameters:,} parameters ({trainable:,} trainable)"]
        if self.num_flops is not None:
            gmacs = self.num_flops / 1e9
            parts.append(f"{self.num_flops:,} FLOPs per sample (fvcore unit: 1 multiply-add = 1 FLOP; {gmacs:.4g} G)")
        if self.num_activations is not None:
            parts.append(f"{self.num_activations:,} activations per sample")
        logger.info(", ".join(parts))
        if self.flops_by_operator:
            logger.info(
                "%s: FLOPs by operator: %s",
                self.name(),
                ", ".join(f"{op}={count:,}" for op, count in sorted(self.flops_by_operator.items())),
            )
        if self.unsupported_ops:
            logger.warning(
                "%s: fvcore has no FLOP formula for these operators, counted as 0: %s",
                self.name(),
                ", ".join(f"{op} x{count}" for op, count in sorted(self.unsupported_ops.items())),
            )
        if table:
            logger.info("%s: FLOPs and activations by module:\n%s", self.name(), table)
