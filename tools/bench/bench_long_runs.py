"""Long-run checkpoints: what a step checkpoint, a preemption check and a SIGTERM cost, as ratios of a training step.

Run: .venv/bin/python tools/bench/bench_long_runs.py [--rounds 7]
     .venv/bin/torchrun --nproc_per_node 2 tools/bench/bench_long_runs.py --agreement [--rounds 7]

The training step is the reference trainer's (`ReferenceTask`, torchvision resnet18, batch 8 of 64x64 images,
SGD with momentum, 1 torch thread), so the checkpointed state is a real task state (~90 MB: weights, momentum,
meters, RNG, hook states). Each round runs every measurement once, interleaved; each figure is the median over
rounds of its ratio to the training step measured in the same round (the floor here is "no checkpoint at all").

- step checkpoint stall, synchronous: `CheckpointHook(checkpoint_every_n_steps=1, keep_last=2).on_step` right
  after a step (data position, temp file, fsync, link, rename, folder fsync, prune) / one training step.
  One `torch.save` + fsync of the same state is shown beside it (the write's own floor).
- step checkpoint stall, non-blocking: the same with `non_blocking=True` (the CPU copy on the training
  thread); the background write is waited for outside the timed region.
- on_step when nothing is due (preemption on, no collective on one process) / one training step.
- SIGTERM to exit: a real `tools/train.py` process (same model, a checkpoint after every step, so the time
  between two of its step checkpoints is "one step + one save" in that process) is signalled halfway into a
  step; the time until its preemption checkpoint is written (the file's mtime) and until it has exited are
  ratios of that step + save. Beside them, the floor of any exit: the teardown of a process that imported
  torch and took one resnet18 step (from its last line to its end).

--agreement (under torchrun, gloo): the cost of the ranks' agreement on a preemption signal, one all_reduce of
two float64 per check, as `on_step` measures it with `agree_every_n_steps` 1 and 8 (per step, averaged) / one
DDP training step of the same resnet18 on 2 ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from classy_hooks.model import CheckpointHook  # noqa: E402
from reference_trainer.task import ReferenceTask  # noqa: E402

CONFIG: dict[str, Any] = {
    "seed": 0,
    "num_epochs": 1,
    "test_phase_period": 0,
    "model": {"name": "resnet18"},
    "dataset": {"num_classes": 10, "image_size": 64, "train_samples": 4096, "test_samples": 8, "batch_size": 8},
    "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
}


class Stepper:
    """Runs the reference task's training steps one at a time (its loop, unrolled), so hooks can be timed between."""

    def __init__(self, task: ReferenceTask) -> None:
        self.task = task
        task._wrap_distributed()
        task._advance_phase()
        self.batches = iter(enumerate(task.dataloader))

    def step(self) -> float:
        start = time.perf_counter()
        batch_idx, batch = next(self.batches)
        self.task._step(batch, batch_idx, 0.0)
        return time.perf_counter() - start


def _timed(function: Any, *args: Any) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def _torch_save_fsync(state: Any, path: str) -> float:
    start = time.perf_counter()
    with open(path, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - start


TEARDOWN = """
import sys, time, torch, torchvision
model = torchvision.models.resnet18(num_classes=10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
model(torch.randn(8, 3, 64, 64)).sum().backward()
optimizer.step()
print(time.time(), flush=True)
sys.exit(75)
"""


def _teardown_floor() -> float:
    """Seconds a process that imported torch and took one resnet18 step needs to exit (interpreter teardown)."""
    proc = subprocess.run([sys.executable, "-c", TEARDOWN], capture_output=True, text=True, check=False)
    return time.time() - float(proc.stdout.split()[-1])


def _sigterm_to_exit(folder: str) -> tuple[float, float, float]:
    """A real tools/train.py run (resnet18, a checkpoint after every step) signalled while training: seconds of one
    step with its checkpoint there (between two step checkpoints), from SIGTERM to its preemption checkpoint
    written, and from SIGTERM to the exit."""
    config = dict(CONFIG)
    config["hooks"] = [
        {"name": "checkpoint", "checkpoint_folder": "{run_dir}/ckpt", "preemption_signals": ["SIGTERM"],
         "checkpoint_every_n_steps": 1}
    ]
    run_dir = os.path.join(folder, f"run-{time.monotonic_ns()}")
    os.makedirs(run_dir)
    config_path = os.path.join(run_dir, "config.json")
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tools")}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "train.py"), "--config", config_path, "--run-dir", run_dir],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = Path(run_dir, "ckpt")
    while not (ckpt / "model_phase-0_batch-4.torch").exists():  # training runs (warmed up), handlers installed
        if proc.poll() is not None:
            raise RuntimeError("the training run ended before its 4th step checkpoint")
        time.sleep(0.005)
    step_with_save = (ckpt / "model_phase-0_batch-4.torch").stat().st_mtime - (
        ckpt / "model_phase-0_batch-3.torch"
    ).stat().st_mtime
    time.sleep(step_with_save / 2)  # some way into the next step
    start, wall = time.perf_counter(), time.time()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait()
    seconds = time.perf_counter() - start
    if code != 75:
        raise RuntimeError(f"the run exited with {code}, not 75, after SIGTERM")
    (written,) = ckpt.glob("*_preempted.torch")
    return step_with_save, written.stat().st_mtime - wall, seconds


def single_process(rounds: int) -> None:
    torch.set_num_threads(1)
    folder = tempfile.mkdtemp(prefix="bench-long-runs-")
    sync_hook = CheckpointHook(os.path.join(folder, "sync"), checkpoint_every_n_steps=1, keep_last=2)
    async_hook = CheckpointHook(
        os.path.join(folder, "async"), checkpoint_every_n_steps=1, keep_last=2, non_blocking=True
    )
    idle_hook = CheckpointHook(os.path.join(folder, "idle"), preemption_signals=["SIGTERM"])
    task = ReferenceTask(CONFIG, [sync_hook, async_hook, idle_hook])
    for hook in (sync_hook, async_hook, idle_hook):
        hook.on_start(task)
    stepper = Stepper(task)
    for _ in range(3):
        stepper.step()  # warm-up
    state_mb = sum(t.numel() * t.element_size() for t in task.base_model.state_dict().values()) * 2 / 1e6
    rows: dict[str, list[float]] = {k: [] for k in ("step", "sync", "async", "save", "idle")}
    rows.update({k: [] for k in ("there", "saved", "sigterm", "teardown")})
    for r in range(rounds):
        step = statistics.median(stepper.step() for _ in range(3))
        rows["step"].append(step)
        stepper.step()
        rows["sync"].append(_timed(sync_hook.on_step, task) / step)
        stepper.step()
        rows["async"].append(_timed(async_hook.on_step, task) / step)
        async_hook.wait()
        rows["save"].append(_torch_save_fsync(task.get_classy_state(), os.path.join(folder, "plain.torch")) / step)
        stepper.step()
        rows["idle"].append(_timed(idle_hook.on_step, task) / step)
        if r < max(3, rounds // 2):
            there, saved, exited = _sigterm_to_exit(folder)
            rows["there"].append(there)
            rows["saved"].append(saved / there)
            rows["sigterm"].append(exited / there)
            rows["teardown"].append(_teardown_floor() / there)
        print(f"round {r + 1}/{rounds}: step {step * 1e3:.1f} ms", flush=True)
    for hook in (sync_hook, async_hook, idle_hook):
        hook.on_end(task)
    step_ms = statistics.median(rows["step"]) * 1e3
    print(f"\nresnet18 CPU training step (batch 8, 64x64, 1 thread): {step_ms:.1f} ms; state ~{state_mb:.0f} MB")
    print("median over rounds, as a ratio of one training step of the same round:")
    labels = {
        "sync": "step checkpoint stall, synchronous (CheckpointHook.on_step)",
        "save": "  floor of its write: torch.save + fsync of the same state",
        "async": "step checkpoint stall, non_blocking=True (CPU copy)",
        "idle": "on_step with nothing due (preemption on, 1 process)",
    }
    for key, label in labels.items():
        values = rows[key]
        print(f"  {label:62s} {statistics.median(values):8.3f}x  ({statistics.median(values) * step_ms:8.1f} ms)")
    there = statistics.median(rows["there"]) * 1e3
    print(f"a real tools/train.py process (its own threads), one step + its checkpoint there: {there:.0f} ms; "
          "as a ratio of that:")
    for key, label in {
        "saved": "SIGTERM to its preemption checkpoint written",
        "sigterm": "SIGTERM to process exit",
        "teardown": "  floor of the exit: teardown of a process that imported torch",
    }.items():
        values = rows[key]
        print(f"  {label:62s} {statistics.median(values):8.3f}x  ({statistics.median(values) * there:8.1f} ms)")


def agreement(rounds: int) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    hooks = {k: CheckpointHook(tempfile.mkdtemp(), preemption_signals=["SIGUSR1"], agree_every_n_steps=k)
             for k in (1, 8)}
    task = ReferenceTask(CONFIG, list(hooks.values()))
    for hook in hooks.values():
        hook.on_start(task)
    stepper = Stepper(task)
    for _ in range(3):
        stepper.step()
    ratios: dict[int, list[float]] = {1: [], 8: []}
    for _ in range(rounds):
        dist.barrier()
        step = statistics.median(stepper.step() for _ in range(3))
        for k, hook in hooks.items():
            dist.barrier()
            cost = statistics.fmean(_timed(hook.on_step, task) for _ in range(16))
            ratios[k].append(cost / step)
        if dist.get_rank() == 0:
            print(f"step {step * 1e3:.1f} ms", flush=True)
    for hook in hooks.values():
        hook.on_end(task)
    if dist.get_rank() == 0:
        for k, values in ratios.items():
            print(f"preemption agreement, agree_every_n_steps={k}: {statistics.median(values):.5f}x of a DDP step "
                  "(2 gloo ranks, resnet18)")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--agreement", action="store_true", help="under torchrun: the cost of agreeing on a signal")
    args = parser.parse_args()
    if args.agreement:
        agreement(args.rounds)
    else:
        single_process(args.rounds)


if __name__ == "__main__":
    main()
