"""torchrun worker (2 gloo ranks, CPU): PreciseBatchNormHook with a different number of batches on each rank.

Run by tests/model/test_precise_batch_norm_uneven_batches.py. Stories: FSDP2 with the EMA hook (3 batches vs
1), FSDP2 with an empty rank (2 vs 0), and a DDP-wrapped model whose forwards broadcast buffers (3 vs 1).
Every forward of the first and third communicates, so a rank that stopped early would leave the other
waiting; the process group's short timeout turns such a hang into a failure.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from classy_hooks.model import ExponentialMovingAverageModelHook, PreciseBatchNormHook


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(6, 16)
        self.bn = nn.BatchNorm1d(16)
        self.l2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.relu(self.bn(self.l1(x))))


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {
            n.removeprefix("module."): t.full_tensor().clone() if isinstance(t, DTensor) else t.detach().clone()
            for n, t in model.state_dict().items()
        }


def expected_stats(weights: dict[str, torch.Tensor], inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Single process: the BatchNorm input's mean and biased variance over every rank's batches (float64)."""
    net = Net()
    net.load_state_dict(weights)
    seen: list[torch.Tensor] = []
    net.bn.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    with torch.no_grad():
        for x in inputs:
            net.train()(x)
    x = torch.cat(seen).double()
    return x.mean(0), x.var(0, unbiased=False)


def check(name: str, model: nn.Module, ema: ExponentialMovingAverageModelHook | None, batches: int) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(10 * rank + batches)
    loader = [{"input": torch.randn(8, 6, generator=gen) * (rank + 1) + rank} for _ in range(batches)]
    everyone: list[list[torch.Tensor]] = [[] for _ in range(world)]
    dist.all_gather_object(everyone, [b["input"] for b in loader])
    union = [x for per_rank in everyone for x in per_rank]
    precise = PreciseBatchNormHook(1000)
    hooks: list[object] = [precise] if ema is None else [ema, precise]
    task = SimpleNamespace(base_model=model.train(), train=True, dataloader=loader, hooks=hooks, is_optimizer_step=True)
    if ema is not None:
        ema.on_start(task)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.5)  # training moves the weights away from the EMA
    training_before = full_state(model)
    ema_before = None if ema is None else {n: full(t) for n, t in ema.state.ema_state.items()}
    precise.on_start(task)
    precise.on_phase_end(task)
    for weights_before, after in (
        (training_before, full_state(model)),
        (ema_before, None if ema is None else {n: full(t) for n, t in ema.state.ema_state.items()}),
    ):
        if weights_before is None or after is None:
            continue
        mean, var = expected_stats(weights_before, union)
        assert torch.allclose(after["bn.running_mean"].double(), mean, rtol=1e-5, atol=1e-6), name
        assert torch.allclose(after["bn.running_var"].double(), var, rtol=1e-5, atol=1e-6), name
        stats = torch.cat([after["bn.running_mean"], after["bn.running_var"]])
        gathered = [torch.empty_like(stats) for _ in range(world)]
        dist.all_gather(gathered, stats)
        assert all(torch.equal(g, stats) for g in gathered), name  # identical on every rank
    print(f"rank {rank} {name} ok ({batches} batches here, {len(union)} in all)", flush=True)


def full(tensor: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return tensor.full_tensor().clone() if isinstance(tensor, DTensor) else tensor.detach().clone()


def sharded() -> nn.Module:
    torch.manual_seed(0)
    model = Net()
    fully_shard(model.l1)
    fully_shard(model)
    return model


def ddp() -> nn.Module:
    torch.manual_seed(0)
    return DistributedDataParallel(Net())  # train-mode forwards broadcast the buffers: a collective each


def main() -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))  # a deadlock fails in 30 s, not never
    rank = dist.get_rank()
    stories: list[tuple[str, Callable[[], nn.Module], bool, int]] = [
        ("fsdp2+ema 3 vs 1", sharded, True, 3 if rank == 0 else 1),
        ("fsdp2 2 vs 0", sharded, False, 2 if rank == 0 else 0),
        ("ddp 3 vs 1", ddp, False, 3 if rank == 0 else 1),
    ]
    for name, build, with_ema, batches in stories:
        check(name, build(), ExponentialMovingAverageModelHook(0.9) if with_ema else None, batches)
    # every model (DDP's reducer holds the group) is gone and every rank done before the group is destroyed:
    # on torch 2.13 destroying it under a live reducer sometimes aborts the process at exit
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # every check has passed: skip interpreter teardown, where torch 2.13's gloo threads can abort
