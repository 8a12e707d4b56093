"""Shared test helpers: tiny configs, in-process tasks, and real subprocess / torchrun training runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from reference_trainer.task import ReferenceTask

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = ROOT / "tools" / "train.py"
VENV_BIN = Path(sys.executable).parent


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A config that trains in about a second: 128 train / 64 test samples of 16x16, batch 16."""
    config: dict[str, Any] = {
        "seed": 0,
        "num_epochs": 2,
        "model": {"name": "small_cnn", "width": 8},
        "dataset": {"num_classes": 4, "image_size": 16, "train_samples": 128, "test_samples": 64, "batch_size": 16},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0},
        "lr_schedule": {"name": "cosine", "warmup_fraction": 0.0},
        "hooks": [],
    }
    config.update(overrides)
    return config


def make_task(hooks: Sequence[Any] = (), **overrides: Any) -> ReferenceTask:
    """An in-process reference task with the tiny config and the given hook instances."""
    return ReferenceTask(tiny_config(**overrides), hooks)


class CountingDataset(TensorDataset):
    """A TensorDataset that counts the samples it loads (what a resumed run should not load again)."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.loaded = 0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        self.loaded += 1
        return super().__getitem__(index)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tools"), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_until_signalled(command: Sequence[str], ready: Path, signum: int = signal.SIGTERM) -> tuple[int, str]:
    """Start `command` (a training job), send it `signum` once `ready` exists; its exit status and output."""
    job = subprocess.Popen(
        command, env=subprocess_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while not ready.exists():
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[0][-3000:]
        time.sleep(0.01)
    job.send_signal(signum)  # to the process, or to the torchrun agent, which forwards it to the ranks
    output, _ = job.communicate(timeout=120)
    return job.returncode, output


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config, indent=2))
    return path


def train_command(config_path: Path, run_dir: Path, nproc: int = 1, extra: Sequence[str] = ()) -> list[str]:
    """The command line that trains `config_path` on 1 process, or `nproc` gloo ranks under torchrun."""
    args = [str(TRAIN_SCRIPT), "--config", str(config_path), "--run-dir", str(run_dir), *extra]
    if nproc == 1:
        return [sys.executable, *args]
    return torchrun_command(TRAIN_SCRIPT, args[1:], nproc)


def torchrun_command(script: Path, args: Sequence[str] = (), nproc: int = 2) -> list[str]:
    """The command line that runs a script on `nproc` gloo ranks under torchrun (on 127.0.0.1, a free port)."""
    torchrun = [str(VENV_BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1"]
    return [*torchrun, "--master_port", str(free_port()), str(script), *args]


def run_training(
    tmp_path: Path,
    config: dict[str, Any],
    nproc: int = 1,
    extra: Sequence[str] = (),
    run_dir: Path | None = None,
    timeout: float = 300,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Train in a real subprocess (or torchrun job); on failure the assertion shows its output."""
    run_dir = run_dir or tmp_path / "run"
    config_path = write_config(tmp_path / f"config-{len(list(tmp_path.glob('config-*.json')))}.json", config)
    proc = subprocess.run(
        train_command(config_path, run_dir, nproc, extra),
        env=subprocess_env(),
        text=True,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if check:
        assert proc.returncode == 0, (
            f"training failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series under `logdir`, read by TensorBoard's own EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_same(a: Any, b: Any, path: str = "state") -> None:
    """Deep equality of two task states: tensors bit for bit (dtype and shape too), containers key by key."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {set(a) ^ set(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: lengths"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
