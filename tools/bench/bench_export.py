"""Benchmark of classy-hooks-export, run by hand: `.venv/bin/python tools/bench/bench_export.py`.

Prints, measured side by side in one run:

1. OutputCSVHook per test step (buffered argmax on the device, one host transfer per phase)
   against a Classy-Vision-style per-step `.tolist()` + csv write, relative to the model's own
   eval step.
2. The cost of the export hooks' verification: `TorchscriptHook.on_end` / `TorchExportHook.on_end`
   (eval mode, export, atomic write, reload, two parity forwards) against the bare
   trace+save / export+save they wrap.
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from classy_hooks.core import LastBatch
from classy_hooks.core.deprecations import JIT_DEPRECATION_MESSAGE
from classy_hooks.export import OutputCSVHook, TorchExportHook, TorchscriptHook
from reference_trainer.models import SmallCNN

warnings.filterwarnings("ignore", message=JIT_DEPRECATION_MESSAGE)


def best_of(fn: Callable[[], None], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_csv(folder: str, steps: int = 200, batch: int = 32) -> None:
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10, image_size=32).eval()
    inputs = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        output = model(inputs)
    target = torch.randint(0, 10, (batch,))
    batches = [
        LastBatch(
            torch.tensor(0.0),
            output,
            target,
            {"input": inputs, "target": target, "id": torch.arange(i * batch, (i + 1) * batch)},
            {},
        )
        for i in range(steps)
    ]

    def model_steps() -> None:
        with torch.no_grad():
            for _ in range(steps // 10):
                model(inputs)

    hook = OutputCSVHook(folder)
    task = SimpleNamespace(train=False, phase_idx=0, last_batch=None)
    hook.on_start(task)

    def hook_steps() -> None:
        hook.on_phase_start(task)
        for b in batches:
            task.last_batch = b
            hook.on_step(task)

    def hook_phase_end() -> None:
        hook_steps()
        hook.on_phase_end(task)

    def per_step_tolist() -> None:  # what Classy Vision did: host transfer + write at every step
        with open(os.path.join(folder, "classy.csv"), "w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t")
            for b in batches:
                ids = b.sample["id"].tolist()
                preds = b.output.argmax(dim=1).tolist()
                targets = b.target.tolist()
                writer.writerows(zip(ids, preds, targets))

    model_time = best_of(model_steps) / (steps // 10)
    step_time = best_of(hook_steps) / steps
    phase_time = best_of(hook_phase_end) / steps
    classy_time = best_of(per_step_tolist) / steps
    print(f"CSV, batch {batch}, {steps} test steps (CPU, 1 thread):")
    print(f"  SmallCNN eval forward per step       {model_time * 1e6:9.1f} us")
    for label, value in [
        ("OutputCSVHook.on_step", step_time),
        ("on_step + phase-end write, per step", phase_time),
        ("Classy-style tolist + csv, per step", classy_time),
    ]:
        print(f"  {label:36s} {value * 1e6:9.1f} us = {value / model_time:.4f} x forward")
    print(f"  on_step / Classy-style per-step ratio: {step_time / classy_time:.2f}")


def bench_exports(folder: str) -> None:
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10, image_size=32)
    model.eval()
    x = torch.randn(16, 3, 32, 32)
    task = SimpleNamespace(base_model=model, last_batch=LastBatch(None, None, None, {"input": x}, {}))

    def bare_trace() -> None:
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(model, (x,)), os.path.join(folder, "bare.pt"))

    def bare_export() -> None:
        program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
        torch.export.save(program, os.path.join(folder, "bare.pt2"))

    ts_hook, ex_hook = TorchscriptHook(folder), TorchExportHook(folder)
    ts_hook.on_start(task)
    ex_hook.on_start(task)
    bare_export()  # warm up torch.export's one-time initialisation before timing either side
    pairs = [
        ("torch.jit.trace + save", bare_trace, "TorchscriptHook.on_end", lambda: ts_hook.on_end(task)),
        ("torch.export + save", bare_export, "TorchExportHook.on_end", lambda: ex_hook.on_end(task)),
    ]
    print("Export at on_end, SmallCNN (32x32, width 16), example batch 16 (CPU, 1 thread), best of 5 interleaved:")
    for bare_name, bare_fn, hook_name, hook_fn in pairs:
        bare_times, hook_times = [], []
        for _ in range(5):  # interleaved, so machine noise hits both sides alike
            bare_times.append(best_of(bare_fn, 1))
            hook_times.append(best_of(hook_fn, 1))
        bare, hooked = min(bare_times), min(hook_times)
        print(f"  {bare_name:22s} {bare * 1e3:7.1f} ms | {hook_name:22s} {hooked * 1e3:7.1f} ms | x{hooked / bare:.2f}")


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        bench_csv(folder)
        bench_exports(folder)


if __name__ == "__main__":
    main()
