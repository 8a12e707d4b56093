"""`ExponentialMovingAverageModelHook`: an exponential moving average of the weights, used for evaluation."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from classy_hooks.core import ClassyHook, ClassyHookState, is_optimizer_step, register_hook
from classy_hooks.core.errors import HookConfigError
from classy_hooks.core.validation import check_bool, check_choice, check_float, check_int

logger = logging.getLogger(__name__)


def tracked_tensors(model: nn.Module, consider_bn_buffers: bool) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """(state_dict name, tensor, is_parameter) for every tensor the EMA follows.

    All parameters, plus, with `consider_bn_buffers`, every buffer of every BatchNorm module
    (`running_mean`, `running_var`, `num_batches_tracked`).
    """
    for name, param in model.named_parameters():
        yield name, param, True
    if consider_bn_buffers:
        for module_name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for buffer_name, buffer in module.named_buffers(recurse=False):
                    if buffer is not None:
                        yield f"{module_name}.{buffer_name}" if module_name else buffer_name, buffer, False


class EmaState(ClassyHookState):
    """Checkpointed state of the EMA hook."""

    ema_state: dict[str, torch.Tensor]  # the extra copy: EMA weights (training weights while swapped)
    num_updates: int  # EMA updates done
    swapped: bool  # True while the model holds the EMA weights


@register_hook("ema_model_weights")
class ExponentialMovingAverageModelHook(ClassyHook):
    """Keep an exponential moving average (EMA) of the model weights; evaluate test phases with it.

    When it acts: `on_start` creates the EMA copy (or moves a restored one to its device).
    `on_step`, in train phases and only on optimizer steps (not on gradient-accumulation
    micro-steps), updates `ema = decay * ema + (1 - decay) * weight` with one fused
    `torch._foreach_lerp_` per (device, dtype) group, for every floating dtype (fp16, bf16, fp32,
    fp64); integer buffers such as `num_batches_tracked` are copied, not averaged. There is no host
    sync per step. `on_phase_start` swaps the EMA weights into the model for test phases (unless
    the task has `ema = False`) and swaps the training weights back for train phases, so
    training always continues from the exact training weights.

    Swap, don't copy: the hook holds exactly one extra copy of the tracked tensors. Parameters
    are swapped by exchanging their storage (`param.data`, no copy when the EMA lives on the same
    device), BatchNorm buffers by an in-place exchange (so modules and DDP keep their tensors).
    `state.swapped` says which weights the model holds. After a final test phase the model holds
    the EMA weights (what was evaluated, and what an export in `on_end` sees); `swap(task)`
    exchanges them back.

    `device`: "cpu" keeps the EMA copy in host memory (saves accelerator memory; with a CUDA model
    each update copies the weights to the host). "gpu" keeps it next to each model tensor, on the
    model's own device: on a CUDA model that is its GPU; on a machine without CUDA, or a model on
    the CPU, it is the CPU (logged once at `on_start`), so configs written for GPUs run anywhere.

    `warmup_steps` (default 0, off): with W > 0 the decay of update n (0-based) is
    `min(decay, (1 + n) / (W + n))`, TensorFlow's `num_updates` warm-up, so early EMA weights
    are not dominated by the random initialisation.

    With PreciseBatchNormHook: see its docstring; it recomputes BatchNorm statistics for both the
    training weights and the EMA weights, whatever the order of the two hooks.

    State (checkpointed): `ema_state` (name -> tensor), `num_updates` (EMA updates done),
    `swapped`. Reads: `task.base_model`, `task.train`, optional `task.ema` and `task.is_optimizer_step`.
    """

    task_attributes = ("base_model", "train")

    def __init__(
        self, decay: float, consider_bn_buffers: bool = True, device: str = "gpu", warmup_steps: int = 0
    ) -> None:
        super().__init__()
        name = self.name()
        self.decay = check_float(name, "decay", decay, low=0.0, high=1.0)
        self.consider_bn_buffers = check_bool(name, "consider_bn_buffers", consider_bn_buffers)
        self.device = check_choice(name, "device", device, ("gpu", "cpu"))
        self.warmup_steps = check_int(name, "warmup_steps", warmup_steps, minimum=0)
        self.state: EmaState = EmaState()
        self.state.ema_state = {}
        self.state.num_updates = 0
        self.state.swapped = False
        self._groups: list[tuple[list[torch.Tensor], list[torch.Tensor]]] | None = None
        self._int_pairs: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self._model: nn.Module | None = None

    on_phase_end = ClassyHook._noop
    on_end = ClassyHook._noop

    def _target_device(self, tensor: torch.Tensor) -> torch.device:
        return torch.device("cpu") if self.device == "cpu" else tensor.device

    def on_start(self, task: Any) -> None:
        self.check_task(task)
        model = task.base_model
        self._model = model
        named = list(tracked_tensors(model, self.consider_bn_buffers))
        if self.device == "gpu" and all(t.device.type == "cpu" for _, t, _ in named):
            logger.info(
                "%s: device='gpu' but the model is on the CPU; the EMA copy stays next to it on the CPU.", self.name()
            )
        ema: dict[str, torch.Tensor] = self.state.ema_state
        if ema:
            expected = {n for n, _, _ in named}
            if set(ema) != expected:
                missing, extra = sorted(expected - set(ema)), sorted(set(ema) - expected)
                raise HookConfigError(
                    f"{self.name()}: the restored EMA state does not match the model (missing {missing[:5]}, "
                    f"unexpected {extra[:5]}). Resume with the same model and consider_bn_buffers setting."
                )
            for n, t, _ in named:
                saved = ema[n]
                if saved.shape != t.shape:
                    raise HookConfigError(
                        f"{self.name()}: restored EMA tensor {n!r} has shape {tuple(saved.shape)}, the model "
                        f"{tuple(t.shape)}. Resume with the same model."
                    )
                ema[n] = saved.to(device=self._target_device(t), dtype=t.dtype)
        else:
            with torch.no_grad():
                self.state.ema_state = {n: t.detach().to(self._target_device(t), copy=True) for n, t, _ in named}
        self._groups = None

    def on_phase_start(self, task: Any) -> None:
        want_ema = (not task.train) and bool(getattr(task, "ema", True))
        if want_ema != self.state.swapped:
            self.swap(task)

    def on_step(self, task: Any) -> None:
        if not task.train or not is_optimizer_step(task):
            return
        self.update(task)

    # ---- the work ------------------------------------------------------------------------------

    def current_decay(self) -> float:
        """Decay used by the next update (the warm-up schedule when `warmup_steps` > 0)."""
        if self.warmup_steps == 0:
            return self.decay
        n = self.state.num_updates
        return float(min(self.decay, (1.0 + n) / (self.warmup_steps + n)))

    def _build_groups(self, model: nn.Module) -> None:
        ema: dict[str, torch.Tensor] = self.state.ema_state
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        int_ema: list[torch.Tensor] = []
        int_live: list[torch.Tensor] = []
        for n, t, _ in tracked_tensors(model, self.consider_bn_buffers):
            e = ema[n]
            if e.is_floating_point() or e.is_complex():
                group = groups.setdefault((e.device, e.dtype), ([], []))
                group[0].append(e)
                group[1].append(t)
            else:
                int_ema.append(e)
                int_live.append(t)
        self._groups = list(groups.values())
        self._int_pairs = (int_ema, int_live)

    @torch.no_grad()
    def update(self, task: Any) -> None:
        """One EMA update from the model's current weights (what `on_step` does on optimizer steps)."""
        if self._groups is None:
            self._build_groups(task.base_model)
        assert self._groups is not None
        weight = 1.0 - self.current_decay()
        for emas, lives in self._groups:
            device = emas[0].device
            sources = lives if lives[0].device == device else [t.to(device, non_blocking=True) for t in lives]
            torch._foreach_lerp_(emas, sources, weight)
        int_ema, int_live = self._int_pairs
        if int_ema:
            torch._foreach_copy_(int_ema, int_live)
        self.state.num_updates += 1

    @torch.no_grad()
    def swap(self, task: Any) -> None:
        """Exchange the model's weights and the EMA copy (training <-> EMA); flips `state.swapped`."""
        ema: dict[str, torch.Tensor] = self.state.ema_state
        buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for n, t, is_param in tracked_tensors(task.base_model, self.consider_bn_buffers):
            other = ema[n]
            if is_param and other.device == t.device and other.dtype == t.dtype:
                ema[n] = t.data
                t.data = other
            else:
                buffers.append((t, other))
        for live, other in buffers:
            held = live.detach().clone()
            live.copy_(other)
            other.copy_(held)
        self.state.swapped = not self.state.swapped
        self._groups = None
