"""Loop stall per checkpoint save on a ResNet-50 state: synchronous vs non-blocking CheckpointHook vs a bare torch.save.

Run: .venv/bin/python tools/bench/bench_checkpoint.py [--repeats 5] [--folder DIR]
The state is a torchvision ResNet-50's weights plus its SGD momentum (~200 MB). "Stall" is the
time `on_phase_end` keeps the training loop waiting. The synchronous hook writes a temp file,
fsyncs it, renames it into checkpoint.torch and model_phase-N_end.torch and fsyncs the folder;
the non-blocking hook copies the state to CPU memory and returns while a thread writes it (each
background save is waited for outside the timed region, as a phase longer than a save would).
A bare `torch.save` to one file, without fsync or rename, is the reference.

Sharded (FSDP2), under torchrun: torchrun --nproc_per_node 2 tools/bench/bench_checkpoint.py [--repeats 3]
The ResNet-50 is sharded with `fully_shard` (each block and the root) on gloo ranks; each rank holds
half the state. Compared: a synchronous sharded save (`torch.distributed.checkpoint` on every rank,
commit, barrier), a sharded `dcp.async_save` (non_blocking: the stall is its CPU copy), and the
physical floor, one memcpy of the rank's local state into preallocated buffers. A stall is the
slowest rank's (max over ranks, after a barrier).
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


class ShardedStateTask(StateTask):
    """The same ResNet-50 and SGD momentum, with the model sharded by FSDP2 before the optimizer is built."""

    def __init__(self) -> None:
        from torch.distributed.fsdp import fully_shard

        self.base_model = torchvision.models.resnet50()
        for child in self.base_model.children():
            for block in child.children() if isinstance(child, torch.nn.Sequential) else [child]:
                if any(True for _ in block.parameters()):
                    fully_shard(block)
        fully_shard(self.base_model)
        self.optimizer = torch.optim.SGD(self.base_model.parameters(), lr=0.1, momentum=0.9)
        self.base_model(torch.randn(2, 3, 64, 64)).sum().backward()
        self.optimizer.step()
        self.phase_type, self.phase_idx, self.train = "train", 0, True


def _local_tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor of a state structure, DTensors as their local shard."""
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        return [value.to_local()]
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _local_tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _local_tensors(v)]
    return []


def sharded_main(args: argparse.Namespace) -> None:
    """Under torchrun: stall of sharded sync save vs sharded async_save vs one memcpy of the local state."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    folder_box = [tempfile.mkdtemp(prefix="bench_ckpt_sharded_", dir=args.folder) if rank == 0 else ""]
    dist.broadcast_object_list(folder_box, src=0)  # a path string from our own rank 0
    folder = folder_box[0]
    task = ShardedStateTask()
    sync = CheckpointHook(os.path.join(folder, "sync"), sharded=True)
    background = CheckpointHook(os.path.join(folder, "async"), sharded=True, non_blocking=True)
    for hook in (sync, background):
        hook.on_start(task)
    local = _local_tensors(task.get_classy_state())
    buffers = [torch.empty_like(t) for t in local]
    local_mb = sum(t.numel() * t.element_size() for t in local) / 1e6

    def slowest(seconds: float) -> float:
        value = torch.tensor(seconds, dtype=torch.float64)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return float(value)

    times: dict[str, list[float]] = {"memcpy of local state": [], "sharded synchronous": [], "sharded async_save": []}
    for phase in range(args.repeats):
        task.phase_idx = phase
        dist.barrier()
        start = time.perf_counter()
        torch._foreach_copy_(buffers, local)
        times["memcpy of local state"].append(slowest(time.perf_counter() - start))
        dist.barrier()
        start = time.perf_counter()
        sync.on_phase_end(task)
        times["sharded synchronous"].append(slowest(time.perf_counter() - start))
        dist.barrier()
        start = time.perf_counter()
        background.on_phase_end(task)
        times["sharded async_save"].append(slowest(time.perf_counter() - start))
        background.wait()  # outside the timed region, as a phase longer than the write would
    background.on_end(task)
    medians = {k: statistics.median(v) for k, v in times.items()}
    if rank == 0:
        print(
            f"FSDP2 ResNet-50 weights + SGD momentum on {dist.get_world_size()} gloo ranks: {local_mb:.0f} MB local "
            f"state per rank; median of {args.repeats} (slowest rank); folder {folder}"
        )
        for name, median in medians.items():
            print(
                f"  {name:22s} stall {median * 1e3:8.1f} ms   "
                f"{median / medians['memcpy of local state']:6.2f}x memcpy   "
                f"{median / medians['sharded synchronous']:5.2f}x synchronous"
            )
        shutil.rmtree(folder)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder", default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sharded_main(args)
        return
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
