"""Checkpoint save, stall, load and resume on a ResNet-50 state, each as a ratio against its physical floor.

Run: .venv/bin/python tools/bench/bench_checkpoint.py [--rounds 15] [--folder DIR]
The state is a torchvision ResNet-50's weights plus its SGD momentum (~205 MB), 1 torch thread. Every
round runs each measurement once, interleaved, and each figure is the median over rounds of its ratio
to the floor measured in the same round (so a slow disk moment slows the floor and the figure alike):

- synchronous save (`CheckpointHook.on_phase_end`: temp file, fsync, per-phase link, rename, folder
  fsync) / floor "raw write": `os.write` of the same bytes (read back from the checkpoint file)
  to a new file, fsync of the file and of the folder. `torch.save` + fsync is shown beside it, and the
  CPU time of both (on a machine whose cores are busy, wall time follows CPU time, not the disk).
- non-blocking save stall (`CheckpointHook(non_blocking=True).on_phase_end`) / floor "memcpy": one
  `torch._foreach_copy_` of the state's tensors into preallocated buffers. Each background write is
  waited for outside the timed region, as a phase longer than a save would.
- the writer's cost to the training steps that follow: a torchvision resnet18 CPU training step (batch 8,
  64x64) timed while the background write of the ResNet-50 state runs, / the same step with no write.
- load (`load_checkpoint`, checksum verified, memory-mapped) / floor "mmap load": `torch.load(mmap=True,
  weights_only=True)`; a plain `torch.load(weights_only=True)` is shown beside it.
- resume (`resume_task` into a fresh ResNet-50 + SGD task) / floor `torch.load(mmap=True, weights_only=True)`
  + `load_state_dict` of model and optimizer; the previous recipe (plain `torch.load` + `load_state_dict`)
  is shown beside it.

Sharded (FSDP2), under torchrun: torchrun --nproc_per_node 2 tools/bench/bench_checkpoint.py [--rounds 3]
The ResNet-50 is sharded with `fully_shard` (each block and the root) on gloo ranks; each rank holds
half the state. Compared: a synchronous sharded save (`torch.distributed.checkpoint` on every rank,
commit, barrier), a sharded `dcp.async_save` (non_blocking: the stall is its CPU copy), and the
physical floor, one memcpy of the rank's local state into preallocated buffers. A stall is the
slowest rank's (max over ranks, after a barrier). Also shown: the share of the synchronous save that
checksums each rank's own files, and the verification `resume_task` does on each rank before loading.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torchvision

from classy_hooks.model import CheckpointHook, load_checkpoint, resume_task
from classy_hooks.model.sharded_checkpoint import (
    sharded_checkpoint_name,
    verify_sharded_checkpoint,
    write_rank_checksums,
)


class StateTask:
    """The bits of a task CheckpointHook and resume_task use, around a ResNet-50 and its optimizer."""

    def __init__(self, step: bool = True) -> None:
        self.base_model = torchvision.models.resnet50()
        self.optimizer = torch.optim.SGD(self.base_model.parameters(), lr=0.1, momentum=0.9)
        if step:
            self.base_model(torch.randn(2, 3, 64, 64)).sum().backward()
            self.optimizer.step()
        self.phase_type, self.phase_idx, self.train = "train", 0, True

    def get_classy_state(self) -> dict[str, Any]:
        return {"base_model": self.base_model.state_dict(), "optimizer": self.optimizer.state_dict(), "phase_idx": 0}

    def set_classy_state(self, state: dict[str, Any]) -> None:
        self.base_model.load_state_dict(state["base_model"])
        self.optimizer.load_state_dict(state["optimizer"])


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
    if type(value).__name__ == "DTensor":
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

    times: dict[str, list[float]] = {
        "memcpy of local state": [],
        "sharded synchronous": [],
        "  its checksum lists": [],
        "  load verification": [],
        "sharded async_save": [],
    }
    for phase in range(args.rounds):
        task.phase_idx = phase
        dist.barrier()
        start = time.perf_counter()
        torch._foreach_copy_(buffers, local)
        times["memcpy of local state"].append(slowest(time.perf_counter() - start))
        dist.barrier()
        start = time.perf_counter()
        sync.on_phase_end(task)
        times["sharded synchronous"].append(slowest(time.perf_counter() - start))
        saved = os.path.join(folder, "sync", sharded_checkpoint_name(phase))
        dist.barrier()
        start = time.perf_counter()  # the part of the save above that checksums this rank's files (redone here)
        write_rank_checksums(saved, rank, dist.get_world_size())
        times["  its checksum lists"].append(slowest(time.perf_counter() - start))
        dist.barrier()
        start = time.perf_counter()  # what resume_task verifies on this rank before DCP reads the shards
        verify_sharded_checkpoint(saved, share=(rank, dist.get_world_size()))
        times["  load verification"].append(slowest(time.perf_counter() - start))
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
            f"state per rank; median of {args.rounds} (slowest rank); folder {folder}"
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


def _timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _timed_with_cpu(action: Callable[[], Any], cpu: list[float]) -> float:
    """Wall time of `action`; its CPU time (every thread of the process) is appended to `cpu`."""
    start_cpu = time.process_time()
    wall = _timed(action)
    cpu.append(time.process_time() - start_cpu)
    return wall


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _raw_write(path: str, data: bytes) -> None:
    """The save floor: the checkpoint's bytes written to a new file, fsync of the file and of its folder."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view, written = memoryview(data), 0
        while written < len(view):
            written += os.write(fd, view[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_path(os.path.dirname(path))


class TrainingSteps:
    """A torchvision resnet18 CPU training step (batch 8, 64x64): what runs beside a background write."""

    def __init__(self) -> None:
        self.model = torchvision.models.resnet18(num_classes=10)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.inputs, self.targets = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))

    def step(self) -> None:
        self.optimizer.zero_grad()
        torch.nn.functional.cross_entropy(self.model(self.inputs), self.targets).backward()
        self.optimizer.step()

    def time_steps(self, count: int) -> list[float]:
        return [_timed(self.step) for _ in range(count)]

    def time_steps_while(self, busy: Callable[[], bool]) -> list[float]:
        """Steps run back to back while `busy()`; the time of each one that started while busy."""
        times = []
        while busy():
            times.append(_timed(self.step))
        return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
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
    sync.on_phase_end(task)  # the file whose bytes the raw-write floor writes
    latest = os.path.join(folder, "sync", "checkpoint.torch")
    with open(latest, "rb") as handle:
        data = handle.read()
    sources = _local_tensors(task.get_classy_state())
    buffers = [torch.empty_like(t) for t in sources]
    torch._foreach_copy_(buffers, sources)  # preallocated and paged in, as the hook's reused snapshot buffers
    steps = TrainingSteps()
    steps.time_steps(3)  # warm-up
    fresh = StateTask(step=False)
    torch.load(latest, weights_only=True, mmap=True)  # warm the page cache
    times: dict[str, list[float]] = {
        name: []
        for name in (
            "raw write",
            "torch.save + fsync",
            "synchronous save",
            "memcpy",
            "non-blocking stall",
            "step alone",
            "step beside write",
            "mmap load",
            "mmap load + load_state_dict",
            "torch.load",
            "load_checkpoint",
            "torch.load resume",
            "resume_task",
        )
    }
    def torch_save() -> None:
        bare = os.path.join(folder, f"bare-{task.phase_idx}.torch")
        torch.save(task.get_classy_state(), bare)
        _fsync_path(bare)
        _fsync_path(folder)

    def mmap_load() -> None:
        torch.load(latest, weights_only=True, mmap=True)

    def mmap_floor() -> None:
        loaded = torch.load(latest, weights_only=True, mmap=True)["classy_state_dict"]
        fresh.set_classy_state(loaded)

    def torch_load_resume() -> None:
        fresh.set_classy_state(torch.load(latest, weights_only=True)["classy_state_dict"])

    steps_beside: list[int] = []
    cpu: dict[str, list[float]] = {"raw write": [], "synchronous save": []}
    for phase in range(args.rounds):
        task.phase_idx = phase
        raw = partial(_raw_write, os.path.join(folder, f"raw-{phase}.torch"), data)
        times["raw write"].append(_timed_with_cpu(raw, cpu["raw write"]))
        times["torch.save + fsync"].append(_timed(torch_save))
        times["synchronous save"].append(_timed_with_cpu(lambda: sync.on_phase_end(task), cpu["synchronous save"]))
        times["memcpy"].append(_timed(lambda: torch._foreach_copy_(buffers, sources)))
        times["non-blocking stall"].append(_timed(lambda: nonblocking.on_phase_end(task)))
        beside = steps.time_steps_while(lambda: nonblocking.save_in_flight)
        nonblocking.wait()
        alone = steps.time_steps(max(len(beside), 2))
        times["step beside write"].append(statistics.mean(beside) if beside else float("nan"))
        times["step alone"].append(statistics.mean(alone))
        steps_beside.append(len(beside))
        # Outside the timed region: every file but the newest checkpoint goes, so that no timed write frees
        # an old file's blocks (the hook's per-phase hard link keeps checkpoint.torch's blocks alive too).
        newest = {os.path.join(folder, hook, f"model_phase-{phase}_end.torch") for hook in ("sync", "async")}
        for path in glob.glob(os.path.join(folder, "*", "model_phase-*_end.torch")) + glob.glob(
            os.path.join(folder, "*-*.torch")
        ):
            if path not in newest:
                os.unlink(path)
        times["mmap load"].append(_timed(mmap_load))
        times["mmap load + load_state_dict"].append(_timed(mmap_floor))
        times["torch.load"].append(_timed(lambda: torch.load(latest, weights_only=True)))
        times["load_checkpoint"].append(_timed(lambda: load_checkpoint(latest)))
        times["torch.load resume"].append(_timed(torch_load_resume))
        times["resume_task"].append(_timed(lambda: resume_task(fresh, latest)))
    nonblocking.on_end(task)

    def ratio(name: str, floor: str) -> float:
        return statistics.median(a / b for a, b in zip(times[name], times[floor]))

    def ms(name: str) -> str:
        return f"{statistics.median(times[name]) * 1e3:8.1f} ms"

    print(
        f"ResNet-50 weights + SGD momentum: {len(data) / 1e6:.1f} MB per checkpoint; {args.rounds} interleaved "
        f"rounds, medians (ratios: median of per-round ratios); torch {torch.__version__}, 1 thread; folder {folder}"
    )
    rows = [
        ("raw write", "raw write"),
        ("torch.save + fsync", "raw write"),
        ("synchronous save", "raw write"),
        ("memcpy", "memcpy"),
        ("non-blocking stall", "memcpy"),
        ("step alone", "step alone"),
        ("step beside write", "step alone"),
        ("mmap load", "mmap load"),
        ("torch.load", "mmap load"),
        ("load_checkpoint", "mmap load"),
        ("mmap load + load_state_dict", "mmap load + load_state_dict"),
        ("torch.load resume", "mmap load + load_state_dict"),
        ("resume_task", "mmap load + load_state_dict"),
    ]
    for name, floor in rows:
        print(f"  {name:27s} {ms(name)}   {ratio(name, floor):5.2f}x {floor}")
    print(f"  training steps run during each background write: median {statistics.median(steps_beside)}")
    cpu_ratio = statistics.median(a / b for a, b in zip(cpu["synchronous save"], cpu["raw write"]))
    print(
        f"  CPU time (all threads): raw write {statistics.median(cpu['raw write']) * 1e3:.1f} ms, synchronous save "
        f"{statistics.median(cpu['synchronous save']) * 1e3:.1f} ms ({cpu_ratio:.2f}x)"
    )
    print(f"  load_checkpoint / torch.load: {ratio('load_checkpoint', 'torch.load'):5.2f}x")
    plain = "torch.load resume"
    print(f"  resume_task / torch.load resume: {ratio('resume_task', plain):5.2f}x")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
