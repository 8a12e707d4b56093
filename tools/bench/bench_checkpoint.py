"""Loop stall per checkpoint save on a ResNet-50 state: synchronous vs non-blocking CheckpointHook vs a bare torch.save.

Run: .venv/bin/python tools/bench/bench_checkpoint.py [--repeats 5] [--folder DIR]
The state is a torchvision ResNet-50's weights plus its SGD momentum (~200 MB). "Stall" is the
time `on_phase_end` keeps the training loop waiting. The synchronous hook writes a temp file,
fsyncs it, renames it into checkpoint.torch and model_phase-N_end.torch and fsyncs the folder;
the non-blocking hook copies the state to CPU memory and returns while a thread writes it (each
background save is waited for outside the timed region, as a phase longer than a save would).
A bare `torch.save` to one file, without fsync or rename, is the reference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import torch
import torchvision

from classy_hooks.model import CheckpointHook


class StateTask:
    """The bits of a task CheckpointHook reads, around a ResNet-50 and its optimizer."""

    def __init__(self) -> None:
        self.base_model = torchvision.models.resnet50()
        self.optimizer = torch.optim.SGD(self.base_model.parameters(), lr=0.1, momentum=0.9)
        self.base_model(torch.randn(2, 3, 64, 64)).sum().backward()
        self.optimizer.step()
        self.phase_type, self.phase_idx, self.train = "train", 0, True

    def get_classy_state(self) -> dict[str, Any]:
        return {"base_model": self.base_model.state_dict(), "optimizer": self.optimizer.state_dict(), "phase_idx": 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder", default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = tempfile.mkdtemp(prefix="bench_ckpt_", dir=args.folder)
    task = StateTask()
    sync = CheckpointHook(os.path.join(folder, "sync"))
    nonblocking = CheckpointHook(os.path.join(folder, "async"), non_blocking=True)
    for hook in (sync, nonblocking):
        hook.on_start(task)
    bare_path = os.path.join(folder, "bare.torch")
    times: dict[str, list[float]] = {"bare torch.save": [], "synchronous hook": [], "non-blocking hook": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        torch.save({"classy_state_dict": task.get_classy_state()}, bare_path)
        times["bare torch.save"].append(time.perf_counter() - start)
        start = time.perf_counter()
        sync.on_phase_end(task)
        times["synchronous hook"].append(time.perf_counter() - start)
        start = time.perf_counter()
        nonblocking.on_phase_end(task)
        times["non-blocking hook"].append(time.perf_counter() - start)
        nonblocking.wait()
    size = os.path.getsize(bare_path) / 1e6
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"ResNet-50 weights + SGD momentum: {size:.0f} MB per checkpoint; median of {args.repeats}; folder {folder}")
    for name, median in medians.items():
        print(f"  {name:20s} stall {median * 1e3:8.1f} ms   {median / medians['synchronous hook']:5.2f}x synchronous")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
