"""A plain loop on `LoopTask`, SIGKILLed inside a train phase and started again, ends bit-identical to a straight run.

The worker (`loop_task_mid_phase_worker.py`) shuffles with the global generator, draws input noise and dropout,
accumulates gradients over 3 of 10 batches and checkpoints every 2 optimizer steps; the kill comes two batches
after the step checkpoint at batch 6 of phase 2, so the resumed run redoes batches 7 and 8. Compared: the whole
final checkpoint (model, optimizer, EMA, meters, gathered losses, counters, hook states, RNG). With torch's
DataLoader the resumed run draws the 6 batches done again and drops them; with torchdata's StatefulDataLoader it
loads only the 4 batches left.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from classy_hooks.model import load_checkpoint
from dev_dependencies import dev_dependency
from helpers import assert_same, subprocess_env, torchrun_command

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("loop_task_mid_phase_worker.py")


def _run(folder: Path, nproc: int, loader: str, *args: str) -> subprocess.CompletedProcess[str]:
    arguments = [str(folder), *args]
    command = [sys.executable, str(WORKER), *arguments] if nproc == 1 else torchrun_command(WORKER, arguments, nproc)
    env = {**subprocess_env(), "LOOP_TASK_LOADER": loader}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("nproc", "loader"), [(1, "torch"), (2, "torch"), (1, "stateful"), (2, "stateful")])
def test_sigkill_inside_a_phase_then_resume_is_bit_identical(tmp_path: Path, nproc: int, loader: str) -> None:
    if loader == "stateful":
        dev_dependency("torchdata.stateful_dataloader", reason="torchdata is a test-only dev dependency")
    straight = _run(tmp_path / "straight", nproc, loader)
    assert straight.returncode == 0, straight.stderr[-4000:]

    killed = _run(tmp_path / "run", nproc, loader, "2", "8")
    expected_status = -signal.SIGKILL if nproc == 1 else 1  # torchrun reports a rank killed by a signal as 1
    assert killed.returncode == expected_status, killed.stderr[-4000:]
    assert load_checkpoint(tmp_path / "run")["classy_state_dict"]["data_position"]["batches"] == 6

    resumed = _run(tmp_path / "run", nproc, loader)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for rank in range(nproc):  # every rank continued phase 2 after its 6th batch
        assert (tmp_path / "run" / f"resumed-{rank}.txt").read_text() == "2 6"
        # samples of the training set loaded by the resumed run: its 4 batches left, plus the 6 done for a DataLoader
        loaded = int((tmp_path / "run" / f"loaded-{rank}.txt").read_text())
        assert loaded == (4 * 4 if loader == "stateful" else 10 * 4)
    final = load_checkpoint(tmp_path / "run")
    assert final["classy_state_dict"]["phase_idx"] == 3
    assert_same(load_checkpoint(tmp_path / "straight"), final)
