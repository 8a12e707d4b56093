"""`PreciseBatchNormHook`: recompute BatchNorm statistics at the end of every train phase."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from classy_hooks.core import ClassyHook, all_reduce, register_hook
from classy_hooks.core.task import Task
from classy_hooks.core.torch_support.random_state import preserved_rng
from classy_hooks.core.validation import check_bool, check_int
from classy_hooks.model.batch_norm import BatchNorm, is_batch_norm
from classy_hooks.model.sharded_tensors import fsdp_modules, reshard

logger = logging.getLogger(__name__)

#: Input layouts a rank without samples can be told about (dtype codes, dimensions after the batch one).
_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.uint8)
_MAX_SAMPLE_DIMS = 8


def _mean(m: BatchNorm) -> torch.Tensor:
    assert m.running_mean is not None  # bn_modules keeps only layers that track statistics
    return m.running_mean


def _var(m: BatchNorm) -> torch.Tensor:
    assert m.running_var is not None
    return m.running_var


def bn_modules(model: nn.Module) -> list[BatchNorm]:
    """BatchNorm modules in training mode that track running statistics (fvcore's `get_bn_modules`)."""
    return [
        m
        for m in model.modules()
        if is_batch_norm(m) and m.training and m.track_running_stats and m.running_mean is not None
    ]


class _Sums:
    """Per-layer sums over this rank's batches: N, N*mean and N*E[x^2] (float64)."""

    def __init__(self, layers: Sequence[BatchNorm]) -> None:
        self.count = torch.zeros(len(layers), dtype=torch.float64)
        self.mean = [torch.zeros(m.num_features, dtype=torch.float64, device=_mean(m).device) for m in layers]
        self.square = [torch.zeros(m.num_features, dtype=torch.float64, device=_mean(m).device) for m in layers]

    def flat(self) -> torch.Tensor:
        return torch.cat([self.count, *(t.cpu() for t in self.mean), *(t.cpu() for t in self.square)])

    def load_flat(self, flat: torch.Tensor) -> None:
        n = len(self.mean)
        self.count = flat[:n].clone()
        offset = n
        for group in (self.mean, self.square):
            for i, t in enumerate(group):
                group[i] = flat[offset : offset + t.numel()].to(t.device)
                offset += t.numel()


def _agree_on_forwards(chunks: Sequence[torch.Tensor]) -> tuple[int, torch.Tensor | None]:
    """One collective, so that every rank runs the same number of forwards (FSDP2 all-gathers, SyncBatchNorm).

    Returns the largest number of chunks any rank holds, and a stand-in input for padding forwards
    (whose statistics are not counted): this rank's last chunk, or, on a rank without samples, zeros
    laid out like the other ranks' samples (None when no rank has any).
    """
    mine = torch.zeros(3 + _MAX_SAMPLE_DIMS, dtype=torch.int64)
    mine[0] = len(chunks)
    if chunks and chunks[-1].dtype in _INPUT_DTYPES and chunks[-1].dim() - 1 <= _MAX_SAMPLE_DIMS:
        last = chunks[-1]
        mine[1] = _INPUT_DTYPES.index(last.dtype) + 1
        mine[2] = last.dim() - 1
        mine[3 : 3 + last.dim() - 1] = torch.tensor(last.shape[1:], dtype=torch.int64)
    agreed = [int(v) for v in all_reduce(mine, "max")]
    forwards, dtype_code, sample_dims = agreed[0], agreed[1], agreed[2]
    if chunks:
        return forwards, chunks[-1]
    if forwards == 0 or dtype_code == 0:
        return forwards, None
    # Two samples: BatchNorm in train mode needs more than one value per channel.
    return forwards, torch.zeros((2, *agreed[3 : 3 + sample_dims]), dtype=_INPUT_DTYPES[dtype_code - 1])


@torch.no_grad()
def _accumulate(
    model: nn.Module, layers: Sequence[BatchNorm], inputs: Iterable[tuple[torch.Tensor, bool]]
) -> _Sums:
    """Run `model` on `inputs` with momentum 1 and sum each BN layer's batch statistics (no reduction).

    `inputs` yields (input, counted): padding forwards (counted False) run the model, so that every
    rank takes part in the same collectives, but add nothing to the sums.

    With momentum 1 a BN layer's `running_mean` / `running_var` after a forward are the batch mean
    and the Bessel-corrected batch variance of its input; with N = elements per channel,
    N * E[x^2] = (N - 1) * var + N * mean^2. Momentum and `num_batches_tracked` are restored.
    """
    sums = _Sums(layers)
    sizes: dict[int, int] = {}

    def record(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        sizes[id(module)] = x.numel() // x.shape[1]

    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in layers]
    handles = [m.register_forward_pre_hook(record) for m in layers]
    try:
        for m in layers:
            m.momentum = 1.0
        for x, counted in inputs:
            sizes.clear()
            model(x)
            if not counted:
                continue
            for i, m in enumerate(layers):
                n = sizes.get(id(m))
                if n is None:
                    continue  # the layer was not used in this forward
                sums.count[i] += n
                mean = _mean(m).to(torch.float64)
                sums.mean[i].add_(mean, alpha=n)
                sums.square[i].add_(_var(m).to(torch.float64), alpha=n - 1).addcmul_(mean, mean, value=n)
    finally:
        for handle in handles:
            handle.remove()
        for m, (momentum, tracked) in zip(layers, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)  # type: ignore[union-attr]
    return sums


@torch.no_grad()
def _write(layers: Sequence[BatchNorm], sums: _Sums) -> None:
    """Set running_mean / running_var (in place) to the population statistics of the summed batches."""
    for i, m in enumerate(layers):
        n = float(sums.count[i])
        if n == 0:
            continue  # unused on every rank: keep its statistics
        mean = sums.mean[i] / n
        var = (sums.square[i] / n - mean * mean).clamp_(min=0)
        _mean(m).copy_(mean)
        _var(m).copy_(var)


@runtime_checkable
class AveragedWeights(Protocol):
    """What precise BatchNorm needs of a hook that keeps averaged weights (ExponentialMovingAverageModelHook)."""

    def averages_bn_statistics(self) -> bool:
        """True when the averaged copy holds BatchNorm statistics that should be recomputed too."""

    def holds_averaged_weights(self) -> bool:
        """True while the model holds the averaged weights instead of the training weights."""

    def averaged_weights_in(self, task: Task) -> AbstractContextManager[None]:
        """A context in which the model holds the averaged weights; what is written there stays in them."""


@register_hook("precise_bn")
class PreciseBatchNormHook(ClassyHook):
    """Replace BatchNorm running statistics by precise population statistics after every train phase.

    When it acts: at `on_phase_end` of train phases it runs the model (in train mode, no grad,
    BatchNorm momentum 1) over `num_samples` samples per replica and sets every BatchNorm layer's
    `running_mean` / `running_var` to the mean and (biased) variance of that layer's input over
    all those samples: the semantics of fvcore's `update_bn_stats` (population estimator), with
    the buffers updated in place and `num_batches_tracked` left as it was.

    Samples: with `cache_samples=True`, `on_step` keeps the first `num_samples` inputs of the
    phase (`task.last_batch.sample["input"]`, the batch as trained, copied to the CPU; never more
    than `num_samples`). Otherwise the hook iterates `task.dataloader` afresh (a new iterator; the
    task's loader and iterator are not touched). A loader shorter than `num_samples` gives a
    warning and the samples it has. The forwards run under a forked RNG, so they do not change the
    training's random stream.

    Distributed: each rank sums N, N*mean and N*E[x^2] per layer over its samples, and one
    all-reduce adds them up, so every rank ends with the same statistics over all ranks' samples.
    Every rank must run the hook. Ranks may hold different numbers of batches: one small collective
    first agrees on the largest count, and a rank with fewer batches runs padding forwards (on its
    last batch, or on zeros shaped like the other ranks' samples if it has none) whose statistics
    are not counted, so forwards that communicate (FSDP2's all-gathers, SyncBatchNorm) never
    deadlock. On FSDP2-sharded models the forwards all-gather the weights as usual; BatchNorm
    buffers are plain tensors on every rank and end identical; the modules are resharded afterwards.

    With an EMA (a hook in the optional `task.hooks` that offers averaged weights, e.g.
    ExponentialMovingAverageModelHook tracking BN buffers; task `ema` not False): the statistics
    are recomputed twice on the same samples: for the training weights (into the model) and for
    the EMA weights (into the EMA copy, which test phases evaluate). It uses only the EMA's public
    interface (`AveragedWeights`: `averages_bn_statistics()`, `holds_averaged_weights()`,
    `averaged_weights_in(task)`), so any hook that offers it is served alike. Neither hook acts on
    the other's statistics in any other way, so the result does not depend on the order in which
    the two hooks are listed. Without `task.hooks` the EMA copy keeps its averaged statistics.

    Reads: `task.base_model`, `task.train`, `task.dataloader` (loader mode) or `task.last_batch`
    (cache mode), optional `task.hooks`, `task.ema`.
    """

    task_attributes = ("base_model", "train")

    def __init__(self, num_samples: int, cache_samples: bool = False) -> None:
        super().__init__()
        self.num_samples = check_int(self.name(), "num_samples", num_samples, minimum=1)
        self.cache_samples = check_bool(self.name(), "cache_samples", cache_samples)
        self._cache: list[torch.Tensor] = []
        self._cached = 0
        self.last_num_samples = 0

    on_end = ClassyHook._noop

    def on_start(self, task: Task) -> None:
        self.check_task(task, (*self.task_attributes, "last_batch" if self.cache_samples else "dataloader"))

    def on_phase_start(self, task: Task) -> None:
        self._cache = []
        self._cached = 0

    def on_step(self, task: Task) -> None:
        batch = task.last_batch
        if not self.cache_samples or not task.train or self._cached >= self.num_samples or batch is None:
            return
        x = batch.sample["input"]
        take = min(int(x.shape[0]), self.num_samples - self._cached)
        self._cache.append(x[:take].detach().to("cpu", copy=True))
        self._cached += take

    def on_phase_end(self, task: Task) -> None:
        if not task.train:
            return
        self.update_stats(task)
        self._cache = []
        self._cached = 0

    def _inputs(self, task: Task) -> list[torch.Tensor]:
        if self.cache_samples:
            chunks, total = list(self._cache), self._cached
        else:
            chunks, total = [], 0
            for batch in iter(task.dataloader):
                x = batch["input"] if isinstance(batch, dict) else batch[0]
                take = min(int(x.shape[0]), self.num_samples - total)
                chunks.append(x if take == x.shape[0] else x[:take])
                total += take
                if total >= self.num_samples:
                    break
        if total < self.num_samples:
            logger.warning(
                "%s: the train phase provided only %d of num_samples=%d samples on this rank; "
                "BatchNorm statistics use those %d.",
                self.name(),
                total,
                self.num_samples,
                total,
            )
        # A single sample without spatial dims cannot go through BatchNorm in train mode.
        chunks = [c for c in chunks if c.shape[0] > 1 or c.dim() > 2]
        self.last_num_samples = sum(int(c.shape[0]) for c in chunks)
        return chunks

    def _ema_hooks(self, task: Task) -> list[AveragedWeights]:
        """The hooks whose averaged weights (with BatchNorm statistics) get statistics of their own."""
        if not getattr(task, "ema", True):
            return []
        return [
            h
            for h in getattr(task, "hooks", None) or ()
            if isinstance(h, AveragedWeights) and h.averages_bn_statistics() and not h.holds_averaged_weights()
        ]

    def update_stats(self, task: Task) -> None:
        """Recompute the statistics now (what `on_phase_end` does after a train phase)."""
        model: nn.Module = task.base_model
        layers = bn_modules(model)
        with preserved_rng():
            chunks = self._inputs(task)
            if not layers:
                return
            forwards, padding = _agree_on_forwards(chunks)
            device = next(iter(model.parameters()), torch.empty(0)).device
            inputs = _Moved(chunks, forwards, padding, device)
            sums = [_accumulate(model, layers, inputs)]
            ema_hooks = self._ema_hooks(task)
            for hook in ema_hooks:
                with hook.averaged_weights_in(task):
                    sums.append(_accumulate(model, layers, inputs))
            reshard(fsdp_modules(model))  # no-grad forwards leave FSDP2's root unsharded
        flat = all_reduce(torch.cat([s.flat() for s in sums]), "sum")
        size = flat.numel() // len(sums)
        for i, s in enumerate(sums):
            s.load_flat(flat[i * size : (i + 1) * size])
        for hook, s in zip(ema_hooks, sums[1:]):
            with hook.averaged_weights_in(task):
                _write(layers, s)
        _write(layers, sums[0])
        logger.info(
            "%s: recomputed statistics of %d BatchNorm layers from %d samples per replica%s.",
            self.name(),
            len(layers),
            self.last_num_samples,
            " (training and EMA weights)" if ema_hooks else "",
        )


class _Moved:
    """(input, counted) for each chunk, then padding inputs up to `forwards`; moved to `device` on the way."""

    def __init__(
        self, chunks: Sequence[torch.Tensor], forwards: int, padding: torch.Tensor | None, device: torch.device
    ) -> None:
        self.chunks = chunks
        self.forwards = forwards
        self.padding = padding
        self.device = device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, bool]]:
        for c in self.chunks:
            yield c.to(self.device, non_blocking=True), True
        if self.padding is not None:
            for _ in range(self.forwards - len(self.chunks)):
                yield self.padding.to(self.device, non_blocking=True), False
