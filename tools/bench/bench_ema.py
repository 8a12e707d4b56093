"""EMA update on a torchvision ResNet-50 (CPU): the hook vs a Python loop, two-pass foreach and one lerp.

Run: .venv/bin/python tools/bench/bench_ema.py [--repeats 30]
Prints the median time per update of each method, measured in interleaved rounds in one run, the
ratio of the hook to the `torch._foreach_lerp_` floor (target <= 1.05), and the hook's extra memory
in model copies (target 1).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace

import torch
import torchvision

from classy_hooks.model import ExponentialMovingAverageModelHook
from classy_hooks.model.exponential_moving_average_model_hook import tracked_tensors

DECAY = 0.999


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
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
    times: dict[str, list[float]] = {name: [] for name in methods}
    for fn in methods.values():
        fn()
    for _ in range(args.repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
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


if __name__ == "__main__":
    main()
