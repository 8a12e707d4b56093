"""EMA update on a torchvision ResNet-50 (CPU): the hook vs a Python loop, two-pass foreach and one lerp;
the per-step cost with `update_period=k` (k optimizer steps / k) vs the same floor and vs torch's
`AveragedModel` with an EMA `multi_avg_fn` updated every k steps (what Lightning's EMA callback runs);
then the same model FSDP2-sharded on 2 gloo ranks under torchrun: the hook vs one lerp on the local shards.

Run: .venv/bin/python tools/bench/bench_ema.py [--repeats 30] [--no-sharded]
Prints the median time per update of each method, measured in interleaved rounds in one run, the
ratio of the hook to the `torch._foreach_lerp_` floor (target <= 1.05), and the hook's extra memory
in model copies (target 1). The sharded part (a torchrun job this script starts) prints rank 0's
median update time against one `_foreach_lerp_` over the same local shards, against a
`_foreach_lerp_` over the DTensors themselves, and each rank's EMA bytes against the full model
(target about 1/2).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace

import torch
import torchvision
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from classy_hooks.model import ExponentialMovingAverageModelHook
from classy_hooks.model.exponential_moving_average_model_hook import tracked_tensors
from classy_hooks.model.sharded_tensors import local_nbytes, local_part

DECAY = 0.999


def interleaved_medians(methods: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each method, measured in interleaved rounds after one warm-up call."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for fn in methods.values():
        fn()
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def sharded_worker(repeats: int) -> None:
    """One torchrun rank: ResNet-50 with fully_shard on every residual block and the root."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    full_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            fully_shard(block)
    fully_shard(model)
    task = SimpleNamespace(base_model=model, train=True, is_optimizer_step=True)
    hook = ExponentialMovingAverageModelHook(DECAY)
    hook.on_start(task)
    hook.update(task)

    named = list(tracked_tensors(model, consider_bn_buffers=True))
    floats = [t for _, t, _ in named if t.is_floating_point()]
    live_local = [local_part(t) for t in floats]
    ema_local = [t.detach().clone() for t in live_local]
    params = [p for p in model.parameters() if isinstance(p, DTensor)]
    ema_dtensors = [p.detach().clone() for p in params]

    @torch.no_grad()
    def lerp_floor() -> None:
        torch._foreach_lerp_(ema_local, live_local, 1 - DECAY)

    @torch.no_grad()
    def lerp_on_dtensors() -> None:
        torch._foreach_lerp_(ema_dtensors, params, 1 - DECAY)

    methods: dict[str, Callable[[], None]] = {
        "hook (sharded update, local shards)": lambda: hook.update(task),
        "one torch._foreach_lerp_ on the local shards (floor)": lerp_floor,
        "torch._foreach_lerp_ on the DTensors (params only)": lerp_on_dtensors,
    }
    medians = interleaved_medians(methods, repeats)
    swap_times = []
    for train in (False, True) * 5:
        task.train = train
        start = time.perf_counter()
        hook.on_phase_start(task)
        swap_times.append(time.perf_counter() - start)
    ema_bytes = local_nbytes(hook.state.ema_state.values())
    local_bytes = local_nbytes([t for _, t, _ in named])
    report = torch.tensor([ema_bytes, local_bytes], dtype=torch.float64)
    every = [torch.empty_like(report) for _ in range(world)]
    dist.all_gather(every, report)
    if rank == 0:
        floor = medians["one torch._foreach_lerp_ on the local shards (floor)"]
        print(f"FSDP2 ResNet-50 on {world} gloo ranks (fully_shard per block + root), rank 0, median of {repeats}")
        for name, median in medians.items():
            print(f"  {name:55s} {median * 1e3:8.2f} ms   {median / floor:5.2f}x floor")
        print(f"  swap (test phase in or out), median of 10          {statistics.median(swap_times) * 1e3:8.2f} ms")
        for r, figures in enumerate(every):
            print(
                f"  rank {r}: EMA {figures[0] / 1e6:.2f} MB = {figures[0] / full_bytes:.3f} x the full model "
                f"({full_bytes / 1e6:.2f} MB); the rank's own shards + buffers {figures[1] / 1e6:.2f} MB"
            )
    dist.destroy_process_group()


def run_sharded(repeats: int) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    command = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([*command, __file__, "--sharded-worker", "--repeats", str(repeats)], check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-sharded", action="store_true", help="skip the FSDP2 torchrun part")
    parser.add_argument("--sharded-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sharded_worker:
        sharded_worker(args.repeats)
        return
    torch.set_num_threads(args.threads)
    model = torchvision.models.resnet50()
    task = SimpleNamespace(base_model=model, train=True, is_optimizer_step=True)
    hook = ExponentialMovingAverageModelHook(DECAY, device="cpu")
    hook.on_start(task)
    hook.update(task)

    named = list(tracked_tensors(model, consider_bn_buffers=True))
    floats = [(n, t) for n, t, _ in named if t.is_floating_point()]
    live = [t for _, t in floats]
    emas = [t.detach().clone() for t in live]

    def ours() -> None:
        hook.update(task)

    @torch.no_grad()
    def python_loop() -> None:
        for e, p in zip(emas, live):
            e.mul_(DECAY).add_(p, alpha=1 - DECAY)

    @torch.no_grad()
    def classy_two_pass() -> None:
        torch._foreach_mul_(emas, DECAY)
        torch._foreach_add_(emas, live, alpha=1 - DECAY)

    @torch.no_grad()
    def lerp_floor() -> None:
        torch._foreach_lerp_(emas, live, 1 - DECAY)

    methods: dict[str, Callable[[], None]] = {
        "hook (ExponentialMovingAverageModelHook.update)": ours,
        "per-tensor Python loop (mul_ + add_)": python_loop,
        "Classy Vision two-pass foreach (mul_ + add_)": classy_two_pass,
        "one torch._foreach_lerp_ (floor)": lerp_floor,
    }
    medians = interleaved_medians(methods, args.repeats)
    floor = medians["one torch._foreach_lerp_ (floor)"]
    numel = sum(t.numel() for t in live)
    print(
        f"ResNet-50: {len(named)} tracked tensors, {numel / 1e6:.1f} M floats; {args.threads} thread(s), "
        f"median of {args.repeats}"
    )
    for name, median in medians.items():
        print(f"  {name:50s} {median * 1e3:8.2f} ms   {median / floor:5.2f}x floor")

    tracked_bytes = sum(t.numel() * t.element_size() for _, t, _ in named)
    held = sum(t.numel() * t.element_size() for t in hook.state.ema_state.values())
    task.train = False
    hook.on_phase_start(task)  # swap in the EMA weights: nothing is copied or allocated
    held_swapped = sum(t.numel() * t.element_size() for t in hook.state.ema_state.values())
    storages = {t.untyped_storage().data_ptr() for t in hook.state.ema_state.values()}
    storages |= {t.untyped_storage().data_ptr() for _, t, _ in tracked_tensors(model, True)}
    print(
        f"hook memory: {held / tracked_bytes:.2f} model copies (after a swap: {held_swapped / tracked_bytes:.2f}; "
        f"distinct storages model+hook: {len(storages)} = 2 x {len(named)})"
    )
    task.train = True
    hook.on_phase_start(task)
    bench_update_period(model, lerp_floor, args.repeats)
    if not args.no_sharded:
        run_sharded(args.repeats)


PERIODS = (1, 2, 4, 8)


def bench_update_period(model: torch.nn.Module, lerp_floor: Callable[[], None], repeats: int) -> None:
    """Per optimizer step: the hook's k `on_step` calls (one update) / k, and torch's AveragedModel every k steps."""
    task = SimpleNamespace(base_model=model, train=True, is_optimizer_step=True)
    methods: dict[str, Callable[[], None]] = {"one torch._foreach_lerp_ (floor)": lerp_floor}
    for k in PERIODS:
        hook = ExponentialMovingAverageModelHook(DECAY, device="cpu", update_period=k)
        hook.on_start(task)
        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY**k), use_buffers=True)
        averaged.update_parameters(model)  # the first call only copies

        def k_steps(hook: ExponentialMovingAverageModelHook = hook, k: int = k) -> None:
            for _ in range(k):
                hook.on_step(task)

        def peer(averaged: AveragedModel = averaged) -> None:
            averaged.update_parameters(model)  # once per k steps; the k - 1 other steps do nothing

        methods[f"hook, update_period={k}"] = k_steps
        methods[f"AveragedModel EMA every {k} steps"] = peer
    medians = interleaved_medians(methods, repeats)
    floor = medians.pop("one torch._foreach_lerp_ (floor)")
    print(f"update_period: EMA cost per optimizer step (median of {repeats}; floor: one lerp {floor * 1e3:.2f} ms)")
    for k in PERIODS:
        ours, theirs = medians[f"hook, update_period={k}"] / k, medians[f"AveragedModel EMA every {k} steps"] / k
        print(
            f"  k={k}:  hook {ours * 1e3:7.2f} ms = {ours / floor:5.3f}x one lerp ({ours * k / floor:4.2f}x per update)"
            f"   AveragedModel {theirs * 1e3:7.2f} ms = {theirs / floor:5.3f}x   hook/peer {ours / theirs:4.2f}"
        )


if __name__ == "__main__":
    main()
