"""A disk that fills up during a checkpoint save: the previous checkpoint stays intact, no partial file is left,
the error names the folder, the bytes needed and the fix; on_save_error decides whether training stops.

The checkpoint folder is a real tmpfs, mounted in a private mount namespace of the training process only, sized
to hold one checkpoint but not two: the phase-0 save fits, the phase-2 save's temporary file hits ENOSPC.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from classy_hooks.model import CheckpointHook
from helpers import make_task, subprocess_env

WORKER = Path(__file__).with_name("disk_full_worker.py")


def _checkpoint_bytes(tmp_path: Path) -> int:
    folder = tmp_path / "probe"
    make_task([CheckpointHook(str(folder))], num_epochs=1).run()
    return (folder / "checkpoint.torch").stat().st_size


def _train_on_a_small_tmpfs(tmp_path: Path, on_save_error: str, non_blocking: bool) -> tuple[dict, str, int]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and util-linux unshare (a private tmpfs mount)")
    size = _checkpoint_bytes(tmp_path)
    pages = (size * 3 // 2 + 4095) // 4096  # one checkpoint and a half: the second save cannot fit
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    mount = f'mount -t tmpfs -o size={pages * 4}k tmpfs "$0" && exec "$@"'
    command = ["unshare", "-m", "sh", "-c", mount, str(folder), sys.executable, str(WORKER), str(folder)]
    done = subprocess.run(
        [*command, on_save_error, "1" if non_blocking else "0"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0 and "mount" in done.stderr and "permission denied" in done.stderr.lower():
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr, size


def _assert_previous_checkpoint_intact(report: dict, folder: str) -> None:
    assert report["files"] == ["checkpoint.torch", "model_phase-0_end.torch"]  # no temporary file left
    assert report["verified"] is True and report["loaded_phase"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("non_blocking", [False, True], ids=["synchronous", "non_blocking"])
def test_full_disk_stops_training_by_default_with_the_folder_bytes_and_fix(tmp_path: Path, non_blocking: bool) -> None:
    report, _, size = _train_on_a_small_tmpfs(tmp_path, "raise", non_blocking)
    assert not report["finished"] and report["error_type"] == "CheckpointWriteError"
    error = report["error"]
    folder = str(tmp_path / "checkpoints")
    assert f"cannot write a checkpoint to {folder}: the disk is full (ENOSPC" in error
    assert report["needed_bytes"] >= size and f"It needs about {report['needed_bytes']} bytes" in error
    assert "The previous checkpoint is intact and no partial file was left" in error
    assert "keep_last" in error and "on_save_error='warn'" in error
    _assert_previous_checkpoint_intact(report, folder)


@pytest.mark.slow
def test_full_disk_with_warn_logs_the_error_and_training_finishes(tmp_path: Path) -> None:
    report, log, _ = _train_on_a_small_tmpfs(tmp_path, "warn", non_blocking=False)
    assert report["finished"] and report["last_phase"] == 3
    assert "the disk is full (ENOSPC" in log and "Training continues (on_save_error='warn')" in log
    _assert_previous_checkpoint_intact(report, str(tmp_path / "checkpoints"))
