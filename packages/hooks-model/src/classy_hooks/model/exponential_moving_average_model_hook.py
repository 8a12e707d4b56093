"""`ExponentialMovingAverageModelHook`: an exponential moving average of the weights, used for evaluation."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from classy_hooks.core import ClassyHook, ClassyHookState, is_optimizer_step, register_hook
from classy_hooks.core.errors import HookConfigError
from classy_hooks.core.task import Task
from classy_hooks.core.validation import check_bool, check_choice, check_float, check_int
from classy_hooks.core.wrapped_models import plain_key, unwrap_model
from classy_hooks.model import foreach_ops
from classy_hooks.model.batch_norm import is_batch_norm
from classy_hooks.model.classy_vision_checkpoints import adopt_classy_vision_ema_state
from classy_hooks.model.sharded_tensors import (
    fsdp_modules,
    is_sharded,
    local_part,
    reshard,
    same_layout,
    shard_full_tensor,
    sharded_like,
)

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

logger = logging.getLogger(__name__)

#: `ema_dtype` choices: "auto" = float32 for bf16/fp16 tensors, their own dtype otherwise; "param" = always
#: the tensor's own dtype (Classy Vision's behaviour); or one floating dtype for every floating tensor.
EMA_DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "param": None,
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
LOW_PRECISION = (torch.bfloat16, torch.float16)


def tracked_tensors(model: nn.Module, consider_bn_buffers: bool) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """(state_dict name, tensor, is_parameter) for every tensor the EMA follows.

    All parameters, plus, with `consider_bn_buffers`, every buffer of every BatchNorm module
    (`running_mean`, `running_var`, `num_batches_tracked`; see `classy_hooks.model.batch_norm`).
    Names are the plain module's (no `_orig_mod` of a compiled submodule), as in checkpoints.
    """
    for name, param in model.named_parameters():
        yield plain_key(name), param, True
    if consider_bn_buffers:
        for module_name, module in model.named_modules():
            if is_batch_norm(module):
                for buffer_name, buffer in module.named_buffers(recurse=False):
                    if buffer is not None:
                        yield plain_key(f"{module_name}.{buffer_name}" if module_name else buffer_name), buffer, False


class _Group(NamedTuple):
    """EMA tensors and the model tensors they follow (local shards), updated by one fused op."""

    emas: list[torch.Tensor]
    lives: list[torch.Tensor]
    how: str  # "lerp": same device and dtype; "promote": same device, wider EMA dtype; "fetch": other device


class EmaState(ClassyHookState):
    """Checkpointed state of the EMA hook."""

    ema_state: dict[str, torch.Tensor]  # the extra copy: EMA weights (training weights while swapped)
    num_updates: int  # EMA updates done
    swapped: bool  # True while the model holds the EMA weights
    steps_in_period: int  # optimizer steps since the last update (0 .. update_period - 1)


@register_hook("ema_model_weights")
class ExponentialMovingAverageModelHook(ClassyHook):
    """Keep an exponential moving average (EMA) of the model weights; evaluate test phases with it.

    When it acts: `on_start` creates the EMA copy (or adopts a restored one). `on_step`, in train
    phases and only on optimizer steps (not on gradient-accumulation micro-steps), updates
    `ema = decay * ema + (1 - decay) * weight` with one fused foreach op per group of tensors that
    share (device, dtype, sharded or not; `classy_hooks.model.foreach_ops`): `torch._foreach_lerp_`,
    or `_foreach_mul_` + `_foreach_add_` where the EMA is wider than the weights; integer buffers such as
    `num_batches_tracked` are copied, not averaged. There is no host sync per step (except with
    `device="cpu"` on an accelerator model, see below). `on_phase_start` swaps the EMA weights into
    the model for test phases (unless the task has `ema = False`) and swaps the training weights back
    for train phases, so training always continues from the exact training weights.

    Swap, don't copy: the hook holds exactly one extra copy of the tracked tensors. Plain parameters
    are swapped by exchanging their storage (`param.data`, no copy) when the EMA has their device and
    dtype; everything else (BatchNorm buffers, FSDP2 DTensor parameters, a CPU or wider EMA) by an
    in-place exchange of contents, so modules, DDP and FSDP2 keep their own tensors. `state.swapped`
    says which weights the model holds. After a final test phase the model holds the EMA weights
    (what was evaluated, and what an export in `on_end` sees); `swap(task)` exchanges them back.

    FSDP2 (`fully_shard`): the EMA stays sharded like the parameters (each rank averages its local
    shards; about 1/N of the model per rank) and `state.ema_state` holds DTensors with the
    parameters' mesh and placements, for sharded checkpoints with `torch.distributed.checkpoint`
    (`prepare_to_load` builds the state to load into). A restored state of full plain tensors (a
    single-file checkpoint) is sharded locally at `on_start`, without communication. Modules that a
    no-grad forward left unsharded are resharded before a swap. With `device="cpu"` (or FSDP2's CPU
    offload) the local shards of the EMA live in host memory, whatever the mesh's device.

    `ema_dtype` (new, default "auto"): the dtype of the average. "auto" keeps it in float32 for
    bfloat16 / float16 tensors (a bf16 average with decay 0.9999 never moves: its updates are below
    bf16's resolution) and in the tensor's dtype otherwise; "param" always uses the tensor's dtype
    (Classy Vision's behaviour); "float32", "float64", "bfloat16" or "float16" use that dtype for
    every floating tensor. A wider EMA is cast into the model on swap (a copy in place, not a storage
    swap) and is itself never rounded: while swapped, the hook sets the training weights of those
    tensors aside (in their dtype: half the EMA's bytes for bf16 weights), and `get_classy_state`
    still reports them in `ema_state`. `on_start` warns when `1 - decay` is below the EMA dtype's
    resolution (such an EMA cannot move).

    `device`: "cpu" keeps the EMA copy in host memory (saves accelerator memory; with a CUDA model
    each update copies the weights to the host with a blocking copy, so the values read are always
    complete). "gpu" keeps it next to each model tensor, on the model's own device: on a CUDA model
    that is its GPU; on a machine without CUDA, or a model on the CPU, it is the CPU (logged once at
    `on_start`), so configs written for GPUs run anywhere.

    `warmup_steps` (default 0, off): with W > 0 the decay of update n (0-based) is
    `min(decay, (1 + n) / (W + n))`, TensorFlow's `num_updates` warm-up, so early EMA weights
    are not dominated by the random initialisation.

    `update_period` (new, default 1 = every optimizer step): with k > 1 the EMA is updated on every
    k-th optimizer step only, with the decay raised to the k-th power (`ema = decay**k * ema +
    (1 - decay**k) * weight`), so it forgets at the same rate per step while the per-step cost is
    divided by k (Lightning's `update_every_n_steps`). With warm-up, the update after s optimizer
    steps uses `min(decay, (1 + s) / (W + s)) ** k`. The count of optimizer steps since the last
    update is hook state (`steps_in_period`) and runs across phases, so a resume in the middle of
    a period continues exactly, and a test phase may see an average up to k - 1 steps old.

    With PreciseBatchNormHook: see its docstring; it recomputes BatchNorm statistics for both the
    training weights and the EMA weights, whatever the order of the two hooks.

    For other hooks (precise BatchNorm), the public interface is `holds_averaged_weights()`
    (whether the model holds the EMA weights now) and the `averaged_weights_in(task)` context
    manager (the model holds the EMA weights inside it, its training weights again after).

    State (checkpointed): `ema_state` (name -> tensor; DTensors for sharded parameters),
    `num_updates` (EMA updates done), `swapped`, `steps_in_period`. Reads: `task.base_model`, `task.train`, optional
    `task.ema` and `task.is_optimizer_step`.
    """

    task_attributes = ("base_model", "train")

    def __init__(
        self,
        decay: float,
        consider_bn_buffers: bool = True,
        device: str = "gpu",
        warmup_steps: int = 0,
        *,
        ema_dtype: str = "auto",
        update_period: int = 1,
    ) -> None:
        super().__init__()
        name = self.name()
        self.decay = check_float(name, "decay", decay, low=0.0, high=1.0)
        self.consider_bn_buffers = check_bool(name, "consider_bn_buffers", consider_bn_buffers)
        self.device = check_choice(name, "device", device, ("gpu", "cpu"))
        self.warmup_steps = check_int(name, "warmup_steps", warmup_steps, minimum=0)
        self.ema_dtype = check_choice(name, "ema_dtype", ema_dtype, tuple(EMA_DTYPES))
        self.update_period = check_int(name, "update_period", update_period, minimum=1)
        self.state: EmaState = EmaState()
        self.state.ema_state = {}
        self.state.num_updates = 0
        self.state.swapped = False
        self.state.steps_in_period = 0
        self._groups: list[_Group] | None = None
        self._int_pairs: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        # While swapped: the training weights of tensors whose average is wider than they are (local
        # tensors in the weights' dtype), so that the average itself is never rounded by a swap.
        self._held: dict[str, torch.Tensor] = {}

    on_phase_end = ClassyHook._noop
    on_end = ClassyHook._noop

    def _target_device(self, tensor: torch.Tensor) -> torch.device:
        return torch.device("cpu") if self.device == "cpu" else local_part(tensor).device

    def average_dtype(self, tensor: torch.Tensor) -> torch.dtype:
        """The dtype the EMA of `tensor` is kept in (`ema_dtype`; integer tensors keep theirs)."""
        if not tensor.is_floating_point():
            return tensor.dtype
        fixed = EMA_DTYPES[self.ema_dtype]
        if fixed is not None:
            return fixed
        if self.ema_dtype == "auto" and tensor.dtype in LOW_PRECISION:
            return torch.float32
        return tensor.dtype

    def _tracked(self, model: nn.Module) -> list[tuple[str, torch.Tensor, bool]]:
        """The tracked tensors of the plain module (seen through torch.compile / DDP wrappers), with FSDP2
        modules resharded so that parameters are the sharded DTensors."""
        model = unwrap_model(model)
        reshard(fsdp_modules(model))
        return list(tracked_tensors(model, self.consider_bn_buffers))

    def _copy_of(self, tensor: torch.Tensor) -> torch.Tensor:
        """A new EMA tensor holding `tensor`'s values: its device per `device`, `ema_dtype`, its layout."""
        with torch.no_grad():
            local = local_part(tensor).detach().to(
                device=self._target_device(tensor), dtype=self.average_dtype(tensor), copy=True
            )
        return sharded_like(local, tensor) if is_sharded(tensor) else local

    def on_start(self, task: Task) -> None:
        self.check_task(task)
        adopt_classy_vision_ema_state(self.state, task)  # a state restored from a Classy Vision checkpoint
        named = self._tracked(task.base_model)
        if self.device == "gpu" and all(local_part(t).device.type == "cpu" for _, t, _ in named):
            logger.info(
                "%s: device='gpu' but the model is on the CPU; the EMA copy stays next to it on the CPU.", self.name()
            )
        self._warn_if_the_average_cannot_move(named)
        self._held = {}
        if self.state.ema_state:
            self.state.ema_state = self._adopt(named, self.state.ema_state)
            if self.state.swapped:
                self._set_aside_restored_training_weights(named)
        else:
            self.state.ema_state = {n: self._copy_of(t) for n, t, _ in named}
        self._groups = None

    def get_classy_state(self) -> dict[str, Any]:
        """The state; while swapped, `ema_state` holds the training weights (of every tensor, as always)."""
        state = super().get_classy_state()
        if self._held:
            ema = dict(self.state.ema_state)
            for n, held in self._held.items():
                average = ema[n]
                widened = held.to(device=local_part(average).device, dtype=average.dtype)
                ema[n] = sharded_like(widened, average) if is_sharded(average) else widened
            state["ema_state"] = ema
        return state

    def set_classy_state(self, state_dict: Mapping[str, Any]) -> None:
        super().set_classy_state(state_dict)
        self._held = {}
        self._groups = None

    @torch.no_grad()
    def _set_aside_restored_training_weights(self, named: list[tuple[str, torch.Tensor, bool]]) -> None:
        """A state saved while swapped: the model holds the (cast) EMA and `ema_state` the training weights.

        Where the average is wider than the weights, keep the training weights aside (exact) and take
        the average back from the model: it is the EMA rounded to the weights' dtype (the one rounding
        a resume in the middle of a test phase costs).
        """
        for n, t, _ in named:
            live, average = local_part(t), local_part(self.state.ema_state[n])
            if average.dtype != live.dtype:
                self._held[n] = average.to(dtype=live.dtype)
                average.copy_(live)

    def prepare_to_load(self, task: Task) -> None:
        """Fill `state.ema_state` with tensors laid out as this model's EMA, ready to be loaded into in place.

        Names, shapes, dtype (`ema_dtype`), device and placements (DTensors for sharded parameters)
        are those `on_start` would create; the values are copied from the model. A sharded resume
        calls this, then `torch.distributed.checkpoint.load` into `get_classy_state()`, then
        `set_classy_state`, before `on_start`.
        """
        self.check_task(task)
        self.state.ema_state = {n: self._copy_of(t) for n, t, _ in self._tracked(task.base_model)}
        self._groups = None

    def _warn_if_the_average_cannot_move(self, named: list[tuple[str, torch.Tensor, bool]]) -> None:
        step = 1.0 - self.decay
        if step <= 0.0:
            return  # decay 1 freezes the EMA on purpose
        for dtype in sorted({self.average_dtype(t) for _, t, _ in named if t.is_floating_point()}, key=str):
            resolution = torch.finfo(dtype).eps
            if step < resolution:
                logger.warning(
                    "%s: with decay=%s an EMA kept in %s cannot move: 1 - decay = %.3g is below %s's resolution "
                    "%.3g, so updates round away. Pass ema_dtype='auto' or 'float32' (or a smaller decay).",
                    self.name(),
                    self.decay,
                    dtype,
                    step,
                    dtype,
                    resolution,
                )

    def _adopt(
        self, named: list[tuple[str, torch.Tensor, bool]], restored: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Check a restored EMA state against the model; lay it out, place and cast it like a new one."""
        expected = {n for n, _, _ in named}
        if set(restored) != expected:
            missing, extra = sorted(expected - set(restored)), sorted(set(restored) - expected)
            raise HookConfigError(
                f"{self.name()}: the restored EMA state does not match the model (missing {missing[:5]}, "
                f"unexpected {extra[:5]}). Resume with the same model and consider_bn_buffers setting."
            )
        adopted: dict[str, torch.Tensor] = {}
        for n, t, _ in named:
            saved = restored[n]
            if saved.shape != t.shape:
                raise HookConfigError(
                    f"{self.name()}: restored EMA tensor {n!r} has shape {tuple(saved.shape)}, the model "
                    f"{tuple(t.shape)}. Resume with the same model."
                )
            adopted[n] = self._adopt_one(n, saved, t)
        return adopted

    def _adopt_one(self, name: str, saved: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
        device, dtype = self._target_device(tensor), self.average_dtype(tensor)
        if is_sharded(tensor):
            return sharded_like(self._local_shard_of(name, saved, tensor).to(device=device, dtype=dtype), tensor)
        if is_sharded(saved):
            raise HookConfigError(
                f"{self.name()}: restored EMA tensor {name!r} is sharded (a DTensor) but the model's tensor is "
                "not. Resume a sharded checkpoint with the model sharded the same way (fully_shard), or "
                "convert it to full tensors first (torch.distributed.checkpoint.format_utils.dcp_to_torch_save)."
            )
        return saved.to(device=device, dtype=dtype)

    def _local_shard_of(self, name: str, saved: torch.Tensor, like: DTensor) -> torch.Tensor:
        """This rank's shard of a restored tensor: its own if laid out like `like`, cut out of a full one."""
        if not is_sharded(saved):
            return local_part(shard_full_tensor(saved, like))  # every rank holds the full tensor: no communication
        if not same_layout(saved, like):
            raise HookConfigError(
                f"{self.name()}: restored EMA tensor {name!r} is sharded as {saved.placements} on "
                f"{saved.device_mesh}, the model's parameter as {like.placements} on {like.device_mesh}. "
                "Resume with the same sharding, or from full tensors."
            )
        return local_part(saved)

    def on_phase_start(self, task: Task) -> None:
        want_ema = (not task.train) and bool(getattr(task, "ema", True))
        if want_ema != self.state.swapped:
            self.swap(task)

    def on_step(self, task: Task) -> None:
        if not task.train or not is_optimizer_step(task):
            return
        self.state.steps_in_period += 1
        if self.state.steps_in_period >= self.update_period:
            self.update(task)

    # ---- the interface for other hooks -----------------------------------------------------------

    def holds_averaged_weights(self) -> bool:
        """True while the model holds the EMA weights (swapped in for a test phase), False while it trains."""
        return bool(self.state.swapped)

    def averages_bn_statistics(self) -> bool:
        """True when the EMA copy includes BatchNorm statistics, so recomputed statistics can be written into it."""
        return self.consider_bn_buffers and bool(self.state.ema_state)

    @contextmanager
    def averaged_weights_in(self, task: Task) -> Iterator[None]:
        """Inside the block the model holds the EMA weights; after it, the weights it held before.

        Whatever is written into the tracked tensors inside the block (e.g. precise BatchNorm's statistics
        for the EMA) ends in the EMA copy. Entering while the model already holds the EMA weights does nothing.
        """
        if self.state.swapped:
            yield
            return
        self.swap(task)
        try:
            yield
        finally:
            self.swap(task)

    # ---- the work ------------------------------------------------------------------------------

    def current_decay(self) -> float:
        """Decay of the next update: the per-step decay (warm-up schedule if `warmup_steps` > 0) ** update_period."""
        per_step = self.decay
        if self.warmup_steps > 0:
            steps = self.state.num_updates * self.update_period
            per_step = min(self.decay, (1.0 + steps) / (self.warmup_steps + steps))
        return float(per_step**self.update_period)

    def _build_groups(self, model: nn.Module) -> None:
        """Group the (EMA, model) local tensor pairs by (devices, dtypes, sharded or not); never mixed."""
        ema: dict[str, torch.Tensor] = self.state.ema_state
        groups: dict[tuple[Any, ...], _Group] = {}
        int_ema: list[torch.Tensor] = []
        int_live: list[torch.Tensor] = []
        for n, t, _ in self._tracked(model):
            e, live = local_part(ema[n]), local_part(t)
            if not (e.is_floating_point() or e.is_complex()):
                int_ema.append(e)
                int_live.append(live)
                continue
            same_dtype = "lerp" if e.dtype == live.dtype else "promote"
            how = "fetch" if e.device != live.device else same_dtype
            key = (e.device, e.dtype, live.device, live.dtype, is_sharded(t))
            group = groups.setdefault(key, _Group([], [], how))
            group.emas.append(e)
            group.lives.append(live)
        self._groups = list(groups.values())
        self._int_pairs = (int_ema, int_live)

    @torch.no_grad()
    def update(self, task: Task) -> None:
        """One EMA update from the model's current weights with `current_decay()` (`on_step` calls it every
        `update_period` optimizer steps); starts a new period."""
        if self._groups is None:
            self._build_groups(task.base_model)
        assert self._groups is not None
        weight = 1.0 - self.current_decay()
        for group in self._groups:
            if group.how == "promote":  # lerp needs one dtype; add_ reads the narrower weights as they are
                foreach_ops.scale_add_(group.emas, 1.0 - weight, group.lives, weight)
                continue
            sources = group.lives
            if group.how == "fetch":
                # A blocking copy: the host tensors are complete when read (a non_blocking device-to-host
                # copy read at once is not), in the EMA's dtype.
                e = group.emas[0]
                sources = [t.to(device=e.device, dtype=e.dtype) for t in group.lives]
            foreach_ops.lerp_(group.emas, sources, weight)
        int_ema, int_live = self._int_pairs
        if int_ema:
            foreach_ops.copy_(int_ema, int_live)
        self.state.num_updates += 1
        self.state.steps_in_period = 0

    @torch.no_grad()
    def swap(self, task: Task) -> None:
        """Exchange the model's weights and the EMA copy (training <-> EMA); flips `state.swapped`."""
        ema: dict[str, torch.Tensor] = self.state.ema_state
        swapping_in = not self.state.swapped
        for n, t, is_param in self._tracked(task.base_model):
            other = ema[n]
            live, average = local_part(t), local_part(other)
            if average.dtype != live.dtype:
                self._swap_wider_average(n, live, average, swapping_in)
            elif is_param and not is_sharded(t) and other.device == t.device:
                ema[n] = t.data  # the storage swap: no copy
                t.data = other
            else:  # contents exchanged in place: modules, DDP and FSDP2 keep their own tensors
                held = live.clone()
                live.copy_(average)
                average.copy_(held)
        self.state.swapped = swapping_in
        self._groups = None

    def _swap_wider_average(self, name: str, live: torch.Tensor, average: torch.Tensor, swapping_in: bool) -> None:
        """Swap for an average wider than the weights (e.g. fp32 for bf16) without ever rounding the average.

        In: the training weights are set aside (their dtype, the average's device) and the model gets
        the average cast to its dtype. Out: the model gets the training weights back; whatever was
        written into the model meanwhile (precise BN's statistics for the EMA) goes into the average.
        """
        if swapping_in:
            self._held[name] = live.to(device=average.device, copy=True)
            live.copy_(average)
            return
        changed = live != average.to(device=live.device, dtype=live.dtype)
        average.copy_(torch.where(changed, live, average.to(live.device)))
        live.copy_(self._held.pop(name))
