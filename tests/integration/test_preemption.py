"""SIGTERM (a preemption) at random instants stops training at a step boundary with one checkpoint; the resumed
run ends bit-identical to an uninterrupted one.

- 2 gloo ranks under torchrun (preemption_worker.py): >= 20 SIGTERMs at random instants, to rank 0, rank 1 or
  both, sometimes twice in a row (a second signal during the save); every attempt resumes from the folder
  the way `tools/train.py --resume` does. Every round's final state equals the straight run's.
- The command line: `tools/train.py` exits with status 75 after a SIGTERM, on one process and under
  torchrun (SIGTERM to the torchrun agent, as a scheduler sends it), and `--resume` finishes the run
  bit-identically.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from classy_hooks.core.preemption import PREEMPTED_EXIT_CODE
from classy_hooks.model import load_checkpoint
from classy_hooks.model.checkpoint_io import checkpoint_order
from helpers import (
    ROOT,
    assert_same,
    run_until_signalled,
    subprocess_env,
    tiny_config,
    torchrun_command,
    train_command,
    write_config,
)

WORKER = Path(__file__).with_name("preemption_worker.py")
SIGNALS_UNDER_TORCHRUN = 20


def _config(keep_last: int | None = 2, epochs: int = 6) -> dict[str, Any]:
    hook = {
        "name": "checkpoint",
        "checkpoint_folder": "{run_dir}/checkpoints",
        "preemption_signals": ["SIGTERM", "SIGUSR1"],
        "keep_last": keep_last,
    }
    return tiny_config(
        num_epochs=epochs,
        optimizer_period=3,
        test_phase_period=2,
        dataset={"num_classes": 4, "image_size": 16, "train_samples": 256, "test_samples": 32, "batch_size": 4},
        hooks=[hook, {"name": "ema_model_weights", "decay": 0.9, "device": "cpu"}],
    )


def _final_state(folder: Path) -> dict[str, Any]:
    """The final checkpoint's task state, without the list of checkpoint names (preempted ones differ by name)."""
    state = load_checkpoint(folder)["classy_state_dict"]
    for key in ("written", "to_remove"):
        state["hooks"]["CheckpointHook"].pop(key)
    state["hooks"].pop("_AnnounceStart", None)  # the worker's test hook, in its rounds only
    return state


def _events(out: Path) -> list[str]:
    try:
        return (out / "events.log").read_text().splitlines()
    except FileNotFoundError:
        return []


def _wait_for(out: Path, proc: subprocess.Popen[str], predicate: Any, timeout: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = _events(out)
        if predicate(events):
            return events
        assert proc.poll() is None, f"worker job ended early ({proc.returncode}): {proc.communicate()[0][-3000:]}"
        time.sleep(0.01)
    raise AssertionError(f"timed out; events so far: {_events(out)[-5:]}")


@pytest.mark.slow
def test_sigterm_at_random_instants_on_two_ranks_resumes_bit_identically(tmp_path: Path) -> None:
    rng = random.Random(13)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        torchrun_command(WORKER, [str(out), json.dumps(_config())]),
        env=subprocess_env(),
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(out, proc, lambda ev: "straight done" in ev, timeout=300)
        pids = [int((out / f"rank{r}.pid").read_text()) for r in (0, 1)]
        preempted, attempt = 0, 0

        def started(events: list[str]) -> list[int]:
            return [int(e.split()[1]) for e in events if e.startswith("started ")]

        while preempted < SIGNALS_UNDER_TORCHRUN:
            # the next attempt that trains (one resumed at the very end trains nothing and logs no "started")
            events = _wait_for(out, proc, lambda ev, a=attempt: any(n > a for n in started(ev)))
            attempt = max(started(events))
            time.sleep(rng.uniform(0.0, 0.25))
            targets = rng.choice([pids[:1], pids[1:], pids])
            for pid in targets:
                os.kill(pid, signal.SIGTERM)
            if rng.random() < 0.3:  # a second signal while the first one's checkpoint is being written
                time.sleep(rng.uniform(0.0, 0.01))
                os.kill(rng.choice(pids), signal.SIGTERM)
            events = _wait_for(
                out,
                proc,
                lambda ev, a=attempt: any(e.startswith(f"preempted {a} ") for e in ev) or max(started(ev)) > a,
            )
            preempted += any(e.startswith(f"preempted {attempt} ") for e in events)
        (out / "stop").touch()
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = _events(out)
    rounds = [e for e in events if e.startswith("finished")]
    assert sum(e.startswith("preempted") for e in events) >= SIGNALS_UNDER_TORCHRUN and rounds
    for event in (e for e in events if e.startswith("preempted")):  # a step's _preempted file, or a phase end's
        name = event.split()[-1]
        assert " SIGTERM " in event and checkpoint_order(name) is not None, event
        assert name.endswith("_preempted.torch") or name.endswith("_end.torch"), event
    # The straight run's last checkpoint is its last train phase's end. A round whose last signal came during the
    # final test phase has a newer checkpoint (that test phase's end, taken for the preemption): compare the same
    # train-phase-end file in every round.
    straight_folder = out / "straight" / "checkpoints"
    last_train_end = max(
        (p.name for p in straight_folder.iterdir() if p.name.startswith("model_phase-")), key=checkpoint_order
    )
    straight = _final_state(straight_folder)
    assert_same(straight, _final_state(straight_folder / last_train_end), "straight")
    for k in range(len(rounds)):
        folder = out / f"round-{k}" / "checkpoints"
        assert_same(straight, _final_state(folder / last_train_end), f"round {k}")
        names = sorted(p.name for p in folder.iterdir())
        assert not [n for n in names if n.startswith(".")], names  # no temporary file is left
        assert len([n for n in names if n.startswith("model_phase-")]) <= 3, names  # keep_last=2 (+ resumed-from)


def _sigterm_once_then_resume(tmp_path: Path, nproc: int) -> None:
    config = _config(keep_last=None, epochs=4)
    config_path = write_config(tmp_path / "config.json", config)
    straight = subprocess.run(
        train_command(config_path, tmp_path / "straight", nproc), env=subprocess_env(), cwd=ROOT, capture_output=True
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    run_dir = tmp_path / "preempted"
    folder = run_dir / "checkpoints"
    # signalled once a checkpoint exists: training runs, with the handlers installed
    status, output = run_until_signalled(train_command(config_path, run_dir, nproc), folder / "model_phase-0_end.torch")
    written = re.findall(r"training preempted by SIGTERM: checkpoint (\S+) written", output)
    assert written and all(Path(path).is_file() for path in written), output[-3000:]
    assert len(set(written)) == 1 and len(list(folder.glob("*_preempted.torch"))) <= 1  # one checkpoint
    if nproc == 1:
        assert status == PREEMPTED_EXIT_CODE, output[-3000:]
    else:  # each rank exits with 75; torchrun reports a signal it received itself with status 1
        assert output.count(f"exit with status {PREEMPTED_EXIT_CODE}") == 2 and status == 1, output[-3000:]
    resumed = subprocess.run(
        train_command(config_path, run_dir, nproc, ["--resume", str(folder)]),
        env=subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Resumed from {folder}" in resumed.stdout
    assert_same(_final_state(tmp_path / "straight" / "checkpoints"), _final_state(folder))


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_sigterm_exits_75_and_resume_finishes_bit_identically(tmp_path: Path, nproc: int) -> None:
    _sigterm_once_then_resume(tmp_path, nproc)
