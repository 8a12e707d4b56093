"""Per-step cost of twelve registered no-op hooks on the reference loop, against a bare training step.

Builds twelve hooks by registered name (the same dispatch the trainer uses: `call_hooks` on
every event) whose functions do nothing, then times, interleaved in one run:
  - a demo-model training step (forward, backward, SGD step) on a demo-sized batch, and
  - one `call_hooks(hooks, on_step, task)` over the twelve hooks.
Run: .venv/bin/python tools/bench/bench_noop_hooks.py
Target (issue 2): the hooks cost at most 1 % of a training step.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch

from classy_hooks.core import ClassyHook, ClassyHookFunctions, build_hooks, call_hooks, register_hook
from reference_trainer.task import ReferenceTask

NUM_HOOKS = 12


def _make_noop_hooks() -> list[ClassyHook]:
    configs = []
    for i in range(NUM_HOOKS):
        cls = type(
            f"BenchNoopHook{i}", (ClassyHook,), {f: ClassyHook._noop for f in (e.value for e in ClassyHookFunctions)}
        )
        register_hook(f"bench_noop_{i}")(cls)
        configs.append({"name": f"bench_noop_{i}"})
    return build_hooks(configs)


def main() -> None:
    torch.set_num_threads(2)
    hooks = _make_noop_hooks()
    task = ReferenceTask({"model": {"name": "small_cnn"}, "dataset": {"batch_size": 32}}, hooks)
    task._advance_phase()
    batch = next(iter(task.dataloader))
    for i in range(5):  # warm-up
        task._step(batch, i, 0.0)
    step_times, hook_times = [], []
    for i in range(200):
        start = time.perf_counter()
        task._step(batch, i, 0.0)
        step_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        call_hooks(hooks, ClassyHookFunctions.on_step, task)
        hook_times.append(time.perf_counter() - start)
    step_us = statistics.median(step_times) * 1e6
    hook_us = statistics.median(hook_times) * 1e6
    print(f"demo training step (small_cnn, batch 32, 32x32): median {step_us:9.1f} us")
    print(f"{NUM_HOOKS} no-op hooks, on_step dispatch:           median {hook_us:9.2f} us")
    print(f"ratio: {hook_us / step_us * 100:.4f} % of a step (target <= 1 %)")


if __name__ == "__main__":
    main()
