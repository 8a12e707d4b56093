"""checkpoint_writer: snapshots in reused buffers, one long-lived writer thread, errors raised at wait."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from classy_hooks.model import CheckpointError, load_checkpoint
from classy_hooks.model.checkpoint_writer import CheckpointWriter, StateSnapshot
from helpers import subprocess_env


def _state() -> dict:
    weight = torch.randn(4, 3)
    return {
        "base_model": OrderedDict(weight=weight, tied=weight, bias=torch.zeros(3)),
        "optimizer": {"state": {0: {"momentum_buffer": torch.ones(4, 3).t()}}, "param_groups": [{"lr": 0.1}]},
        "misc": (torch.Size([2]), torch.float16, "text", None, 3, 1.5),
    }


def test_snapshot_is_an_equal_copy_that_later_training_does_not_change() -> None:
    state = _state()
    snapshot = StateSnapshot().take(state)
    assert type(snapshot["base_model"]) is OrderedDict and list(snapshot["base_model"]) == ["weight", "tied", "bias"]
    assert snapshot["misc"] == state["misc"]
    for key in ("weight", "bias"):
        assert torch.equal(snapshot["base_model"][key], state["base_model"][key])
    momentum = snapshot["optimizer"]["state"][0]["momentum_buffer"]
    assert momentum.stride() == state["optimizer"]["state"][0]["momentum_buffer"].stride()  # layout kept
    assert snapshot["base_model"]["tied"] is snapshot["base_model"]["weight"]  # one tensor, copied once
    state["base_model"]["weight"].add_(1.0)
    assert not torch.equal(snapshot["base_model"]["weight"], state["base_model"]["weight"])


def test_snapshot_buffers_are_reused_when_the_layout_matches() -> None:
    snapshots = StateSnapshot()
    state = _state()
    first = snapshots.take(state)["base_model"]["bias"]
    pointer = first.data_ptr()
    state["base_model"]["bias"].fill_(5.0)
    second = snapshots.take(state)["base_model"]["bias"]
    assert second.data_ptr() == pointer and torch.equal(second, torch.full((3,), 5.0))
    state["base_model"]["bias"] = torch.zeros(6)  # another shape: a fresh buffer
    assert snapshots.take(state)["base_model"]["bias"].shape == (6,)


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        (np.zeros(2), r"\['x'\].*numpy"),
        ({(1, 2): 3}, r"key \(1, 2\)"),
        (torch.zeros(1).as_subclass(torch.nn.Buffer), r"\['x'\].*tensor subclass"),
    ],
)
def test_snapshot_names_a_value_weights_only_loading_would_reject(bad: object, where: str) -> None:
    with pytest.raises(CheckpointError, match=where):
        StateSnapshot().take({"ok": torch.ones(1), "x": bad})


def test_jobs_run_in_order_on_one_long_lived_thread() -> None:
    seen: list[tuple[int, int]] = []
    writer = CheckpointWriter(lambda job: seen.append((job, threading.get_ident())))
    for job in range(5):
        writer.submit(job)
    writer.wait()
    assert [job for job, _ in seen] == [0, 1, 2, 3, 4]
    assert len({thread for _, thread in seen}) == 1 and seen[0][1] != threading.get_ident()
    assert not writer.in_flight
    writer.close()
    writer.submit(5)  # a closed writer starts a new thread
    writer.close()
    assert seen[-1][0] == 5


def test_a_failed_job_is_raised_by_the_next_wait_or_submit() -> None:
    def write(job: int) -> None:
        if job == 1:
            raise OSError(28, "No space left on device")

    writer = CheckpointWriter(write)
    writer.submit(1)
    with pytest.raises(OSError, match="No space"):
        writer.submit(2)
    writer.submit(3)
    writer.close()


def test_submit_returns_while_the_job_is_written() -> None:
    release = threading.Event()
    writer = CheckpointWriter(lambda job: release.wait(10))
    start = time.perf_counter()
    writer.submit(0)
    assert time.perf_counter() - start < 1.0 and writer.in_flight
    release.set()
    writer.close()
    assert not writer.in_flight


@pytest.mark.slow
def test_a_save_in_flight_when_the_program_ends_is_completed_and_the_program_exits(tmp_path: Path) -> None:
    """The writer is no daemon (the save completes) yet never keeps an idle program alive."""
    script = f"""
import time, torch
from classy_hooks.model.checkpoint_io import make_checkpoint, write_checkpoint
from classy_hooks.model.checkpoint_writer import CheckpointWriter
def slow_write(job):
    time.sleep(1.0)
    write_checkpoint({str(tmp_path)!r}, make_checkpoint({{"phase_idx": 7, "w": torch.ones(1000)}}))
writer = CheckpointWriter(slow_write)
writer.submit(None)
"""
    done = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), timeout=120, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(tmp_path)["classy_state_dict"]["phase_idx"] == 7
