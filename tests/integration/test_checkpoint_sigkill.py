"""A training process SIGKILLed while it saves a checkpoint never loses the latest good checkpoint.

A helper process imports torch once and forks real training runs (ReferenceTask + CheckpointHook,
each resuming from the folder's latest checkpoint, as a restarted job would). The test watches
the folder, kills the run with SIGKILL at a random instant while a save's temporary file exists,
then loads the latest checkpoint with `load_checkpoint` (no fallback). Forking keeps each restart
at a few tens of milliseconds instead of a fresh interpreter and torch import.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from classy_hooks.model import load_checkpoint
from helpers import ROOT, subprocess_env, tiny_config

FORKER = r"""
import json, os, sys
import torch
torch.set_num_threads(1)
from reference_trainer.task import ReferenceTask
from classy_hooks.model import CheckpointHook, resume_task

folder, config = sys.argv[1], json.loads(sys.argv[2])
ReferenceTask(config, [])  # warm up: the first task imports torch's lazy modules (seconds); children inherit them
for _ in sys.stdin:  # one line per run to start
    pid = os.fork()
    if pid == 0:
        try:
            task = ReferenceTask(config, [CheckpointHook(folder, phase_types=["train", "test"])])
            if os.path.exists(os.path.join(folder, "checkpoint.torch")):
                resume_task(task, folder)
            task.run()
        finally:
            os._exit(0)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(status, flush=True)
"""

KILLS_DURING_SAVE = 20


def _latest_mtime(folder: Path) -> int | None:
    """When the latest checkpoint was last replaced (None before the first)."""
    try:
        return (folder / "checkpoint.torch").stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _saving(folder: Path) -> bool:
    return any(name.endswith(".tmp") for name in os.listdir(folder))


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the run launcher forks (POSIX)")
def test_sigkill_during_saves_never_loses_the_latest_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    # Wide convolutions on 8x8 inputs: a ~0.6 MB state whose save takes a large share of each phase.
    config = tiny_config(
        num_epochs=1000,  # more phases than the kills leave time for (the trainer scans its phase list per step)
        model={"name": "small_cnn", "width": 64},
        dataset={"num_classes": 4, "image_size": 8, "train_samples": 32, "test_samples": 16, "batch_size": 16},
    )
    forker = subprocess.Popen(
        [sys.executable, "-c", FORKER, str(folder), json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        cwd=ROOT,
    )
    assert forker.stdin is not None and forker.stdout is not None
    rng = random.Random(0)
    during_save, attempts, last_phase = 0, 0, -1
    try:
        while during_save < KILLS_DURING_SAVE:
            attempts += 1
            assert attempts <= 4 * KILLS_DURING_SAVE, f"only {during_save} of {attempts} kills hit a save"
            forker.stdin.write("run\n")
            forker.stdin.flush()
            committed_before = _latest_mtime(folder)
            pid = int(forker.stdout.readline())
            time.sleep(rng.uniform(0, 0.15))  # let some saves commit, then strike during a later one
            deadline = time.monotonic() + 30
            if attempts % 2:  # every other run first commits a save, so the runs progress however loaded the machine
                while _latest_mtime(folder) == committed_before:
                    assert time.monotonic() < deadline, "the run never committed a save"
                    time.sleep(0.0005)
            while not _saving(folder):
                assert time.monotonic() < deadline, "the run never started a save"
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, 0.005))
            hit = _saving(folder)
            os.kill(pid, signal.SIGKILL)
            status = int(forker.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            during_save += hit
            if (folder / "checkpoint.torch").exists():
                state = load_checkpoint(folder)["classy_state_dict"]  # never corrupt, no fallback needed
                assert state["phase_idx"] >= last_phase
                last_phase = state["phase_idx"]
    finally:
        forker.kill()
        forker.wait()
    print(f"{attempts} kills, {during_save} during a save, latest phase {last_phase}")
    assert last_phase >= 1, "no checkpoint survived the kills"
    for path in folder.glob("*.torch"):  # every committed file is complete
        load_checkpoint(path)
