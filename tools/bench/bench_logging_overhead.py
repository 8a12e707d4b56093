"""Per-step overhead of the classy-hooks-logging hooks on the reference loop, run by hand:

    .venv/bin/python tools/bench/bench_logging_overhead.py [--rounds 5] [--epochs 2] [--threads 1]
        [--train-samples 1024] [--no-visdom]

The demo's model and data (SmallCNN width 16, 32x32 images, batch 32, 1024 train samples) train
with no hooks and with all seven logging hooks as the demo configures them (log_freq=10,
log_period=10, progress bar, TensorBoard plot and graph, Visdom on a local server, complexity,
profiler). The two variants alternate round by round in one process, so they see the same
machine load. It prints, side by side:

1. end to end: median time per train step of each variant (a train phase from the first hook's
   `on_phase_start` to the last hook's `on_phase_end`, divided by its steps, so the per-phase
   work of the hooks is included, amortised) and their ratio;
2. direct: time spent inside the hooks' `on_phase_start`/`on_step`/`on_phase_end` per train
   step, per hook and in total, as a share of the no-hook step (less noisy than 1.);
3. the one-off `on_start` cost of each hook (graph, FLOPs, profiler, connecting to Visdom).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from classy_hooks.core import ClassyHook, build_hooks
from classy_hooks.core.deprecations import JIT_DEPRECATION_MESSAGE
from reference_trainer.task import ReferenceTask

warnings.filterwarnings("ignore", message=JIT_DEPRECATION_MESSAGE)

CONFIG: dict[str, Any] = {
    "seed": 0,
    "test_phase_period": 1,
    "model": {"name": "small_cnn"},
    "dataset": {"num_classes": 10, "image_size": 32, "train_samples": 1024, "test_samples": 256, "batch_size": 32},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0001},
    "lr_schedule": {"name": "cosine", "warmup_fraction": 0.1},
}


#: visdom's server without its asset download step (which fails offline)
VISDOM_SERVER = "from visdom.server.run_server import main; main()"


class PhaseClock(ClassyHook):
    """Records when train phases start (put it first) or end (put it last)."""

    def __init__(self, at: str) -> None:
        super().__init__()
        self.at = at
        self.times: list[float] = []
        self.cpu_times: list[float] = []  # CPU time of the training thread: less sensitive to other processes

    on_start = on_step = on_end = ClassyHook._noop

    def on_phase_start(self, task: Any) -> None:
        if self.at == "start" and task.train:
            self.times.append(time.perf_counter())
            self.cpu_times.append(time.thread_time())

    def on_phase_end(self, task: Any) -> None:
        if self.at == "end" and task.train:
            self.times.append(time.perf_counter())
            self.cpu_times.append(time.thread_time())


def timed(totals: dict[str, float], key: str, fn: Callable[[Any], None], train_only: bool) -> Callable[[Any], None]:
    @functools.wraps(fn)
    def wrapper(task: Any) -> None:
        start = time.perf_counter()
        fn(task)
        if not train_only or task.train:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start

    return wrapper


def hook_configs(run_dir: str, visdom_port: int | None) -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = [
        {"name": "loss_lr_meter_logging", "log_freq": 10},
        {"name": "progress_bar"},
        {"name": "model_complexity"},
        {"name": "profiler"},
        {"name": "tensorboard_plot", "summary_writer": {"logdir": f"{run_dir}/tensorboard"}, "log_period": 10},
        {"name": "model_tensorboard", "summary_writer": {"logdir": f"{run_dir}/tensorboard"}},
    ]
    if visdom_port is not None:
        configs.append({"name": "visdom", "server": "http://127.0.0.1", "port": visdom_port, "env": "bench"})
    return configs


def run_once(
    epochs: int, configs: list[dict[str, Any]], per_hook: dict[str, float], on_start: dict[str, float]
) -> tuple[float, float, int]:
    """Train once; return (wall seconds in train phases, training-thread CPU seconds in them, train steps)."""
    hooks = build_hooks(configs)
    for hook in hooks:
        for event in ("on_phase_start", "on_step", "on_phase_end"):
            key = f"{hook.name()}/{'step' if event == 'on_step' else 'phase'}"
            setattr(hook, event, timed(per_hook, key, getattr(hook, event), train_only=True))
        hook.on_start = timed(on_start, hook.name(), hook.on_start, train_only=False)  # type: ignore[method-assign]
    first, last = PhaseClock("start"), PhaseClock("end")
    task = ReferenceTask(dict(CONFIG, num_epochs=epochs), [first, *hooks, last])
    task.run()
    seconds = sum(end - start for start, end in zip(first.times, last.times))
    cpu = sum(end - start for start, end in zip(first.cpu_times, last.cpu_times))
    data = CONFIG["dataset"]
    return seconds, cpu, epochs * (data["train_samples"] // data["batch_size"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_visdom(env_path: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", VISDOM_SERVER, "-port", str(port), "-bind_local", "-env_path", env_path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.2)
    os.killpg(proc.pid, 9)
    raise SystemExit("the Visdom server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-samples", type=int, default=1024, help="1024 = the demo's 32 steps per epoch")
    parser.add_argument("--no-visdom", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    CONFIG["dataset"]["train_samples"] = args.train_samples
    workdir = tempfile.mkdtemp(prefix="bench_logging_")
    # log records are formatted and written, as in a real run (not dropped by a WARNING-level root)
    logging.basicConfig(level=logging.INFO, filename=os.path.join(workdir, "train.log"))
    server = None
    port = None
    if not args.no_visdom:
        server, port = start_visdom(os.path.join(workdir, "visdom"))
    try:
        plain: list[float] = []
        hooked: list[float] = []
        plain_cpu: list[float] = []
        hooked_cpu: list[float] = []
        per_hook: dict[str, float] = {}
        on_start: dict[str, float] = {}
        steps_hooked = 0
        run_once(1, [], {}, {})  # warm-up (allocator, kernels, imports)
        run_once(1, hook_configs(os.path.join(workdir, "warmup"), port), {}, {})
        for round_idx in range(args.rounds):
            seconds, cpu, steps = run_once(args.epochs, [], {}, {})
            plain.append(seconds / steps)
            plain_cpu.append(cpu / steps)
            run_dir = os.path.join(workdir, f"round{round_idx}")
            seconds, cpu, steps = run_once(args.epochs, hook_configs(run_dir, port), per_hook, on_start)
            hooked.append(seconds / steps)
            hooked_cpu.append(cpu / steps)
            steps_hooked += steps
        base = statistics.median(plain)
        with_hooks = statistics.median(hooked)
        steps_per_epoch = args.train_samples // CONFIG["dataset"]["batch_size"]
        print(
            f"reference loop: demo model and data, {args.epochs} epochs x {steps_per_epoch} train steps, "
            f"{args.threads} thread(s)"
        )
        print(f"rounds: {args.rounds} (alternating), visdom: {'off' if args.no_visdom else 'local server'}")
        print()
        print("1. end to end, median time per train step")
        print(f"   no hooks:            {base * 1e3:8.3f} ms")
        print(f"   logging hooks:       {with_hooks * 1e3:8.3f} ms")
        print(f"   ratio:               {with_hooks / base:8.4f}  ({(with_hooks / base - 1) * 100:+.2f} %)")
        cpu_base, cpu_hooked = statistics.median(plain_cpu), statistics.median(hooked_cpu)
        print("   training-thread CPU time per train step (ignores time stolen by other processes):")
        print(f"   no hooks:            {cpu_base * 1e3:8.3f} ms")
        print(f"   logging hooks:       {cpu_hooked * 1e3:8.3f} ms")
        print(f"   ratio:               {cpu_hooked / cpu_base:8.4f}  ({(cpu_hooked / cpu_base - 1) * 100:+.2f} %)")
        print()
        print("2. direct: time inside the hooks in train phases")
        phases = args.rounds * args.epochs
        names = sorted({key.split("/")[0] for key in per_hook}, key=lambda n: -per_hook.get(f"{n}/step", 0.0))
        print(f"   {'hook':24s} {'on_step':>10s} {'phase start+end':>16s} {'share of a step':>16s}")
        step_total = amortised_total = 0.0
        for name in names:
            step = per_hook.get(f"{name}/step", 0.0) / steps_hooked
            phase = per_hook.get(f"{name}/phase", 0.0) / phases
            amortised = step + per_hook.get(f"{name}/phase", 0.0) / steps_hooked
            step_total += step
            amortised_total += amortised
            print(f"   {name:24s} {step * 1e6:7.1f} us {phase * 1e3:13.2f} ms {amortised / base * 100:14.3f} %")
        print(
            f"   per-step work only (on_step), all hooks: {step_total * 1e6:7.1f} us = {step_total / base * 100:.3f} %"
        )
        print(
            f"   with per-phase work spread over the {steps_hooked // phases}-step phases: "
            f"{amortised_total * 1e6:7.1f} us = {amortised_total / base * 100:.3f} %"
        )
        print()
        print("3. one-off on_start cost per run (mean over rounds)")
        for name, seconds in sorted(on_start.items(), key=lambda kv: -kv[1]):
            print(f"   {name:28s} {seconds / args.rounds * 1e3:8.1f} ms")
    finally:
        if server is not None:
            os.killpg(server.pid, 9)
            server.wait()


if __name__ == "__main__":
    main()
