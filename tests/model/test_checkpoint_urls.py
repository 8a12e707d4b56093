"""CheckpointHook with a folder given as an fsspec URL (memory://, file://): written whole, pointer last, resumed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch

from classy_hooks.core import ClassyHook, HookConfigError
from classy_hooks.core.files import list_folder
from classy_hooks.model import CheckpointHook, ExponentialMovingAverageModelHook, load_checkpoint, resume_task
from classy_hooks.model.checkpoint_io import CheckpointError, list_checkpoints, remove_stale_temp_files
from helpers import make_task

#: Checkpoints at every phase end (the tiny run has 4: train, test, train, test).
PHASES = ["train", "test"]


@pytest.fixture
def memory_folder() -> Iterator[str]:
    url = f"memory://ckpt-{os.urandom(4).hex()}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


class _Interrupt(Exception):
    pass


class _StopAtPhase(ClassyHook):
    """Raises when phase `phase` starts: the earlier phases are done and checkpointed."""

    on_start = on_step = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, phase: int) -> None:
        super().__init__()
        self.phase = phase

    def on_phase_start(self, task: Any) -> None:
        if task.phase_idx == self.phase:
            raise _Interrupt


def assert_same_training_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Model, optimizer, counters and EMA are bit-identical."""
    assert (a["phase_idx"], a["num_updates"]) == (b["phase_idx"], b["num_updates"])
    for key, value in a["base_model"].items():
        assert torch.equal(value, b["base_model"][key]), key
    for index, slots in a["optimizer"]["state"].items():
        for name, value in slots.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), (index, name)
    ema_a, ema_b = (s["hooks"]["ExponentialMovingAverageModelHook"]["ema_state"] for s in (a, b))
    for key, value in ema_a.items():
        assert torch.equal(value, ema_b[key]), key


def interrupted_then_resumed(folder: str) -> dict[str, Any]:
    """Train 2 of 4 phases into `folder`, stop, resume a fresh task from `folder` and finish; its final state."""
    interrupted = make_task([CheckpointHook(folder, phase_types=PHASES), ExponentialMovingAverageModelHook(0.8), _StopAtPhase(2)])
    with pytest.raises(_Interrupt):
        interrupted.run()
    resumed = make_task([CheckpointHook(folder, phase_types=PHASES), ExponentialMovingAverageModelHook(0.8)])
    resume_task(resumed, folder)
    assert resumed.phase_idx == 1
    resumed.run()
    return resumed.get_classy_state()


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_resume_from_a_url_folder_is_bit_identical_to_a_straight_run(
    kind: str, memory_folder: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """s3: a real S3-compatible server on 127.0.0.1 (tests/s3_server.py)."""
    straight = make_task([CheckpointHook(str(tmp_path / "straight"), phase_types=PHASES), ExponentialMovingAverageModelHook(0.8)])
    straight.run()
    folder = {
        "memory": memory_folder,
        "file": f"file://{tmp_path}/resumed",
        "s3": f"{request.getfixturevalue('s3_bucket')}/resumed" if kind == "s3" else "",
    }[kind]
    assert_same_training_state(straight.get_classy_state(), interrupted_then_resumed(folder))
    names = list_folder(folder)
    assert names == ["checkpoint.torch", *(f"model_phase-{i}_end.torch" for i in range(4))]  # no temp file left
    latest = load_checkpoint(folder)
    assert latest["classy_state_dict"]["phase_idx"] == 3
    if kind != "file":
        assert list_checkpoints(folder)[:2] == [f"{folder}/checkpoint.torch", f"{folder}/model_phase-3_end.torch"]
    else:
        assert sorted(os.listdir(tmp_path)) == ["resumed", "straight"]  # never a folder named 'file:'


def test_damaged_url_checkpoint_is_refused_and_fallback_takes_the_previous(memory_folder: str) -> None:
    make_task([CheckpointHook(memory_folder, phase_types=PHASES)]).run()
    fs = fsspec.filesystem("memory")
    latest = f"{memory_folder}/checkpoint.torch"
    data = bytearray(fs.cat_file(latest))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(latest, bytes(data))
    with pytest.raises(CheckpointError, match=r"checkpoint memory://.*/checkpoint.torch is truncated or corrupt"):
        load_checkpoint(memory_folder)
    fallback = load_checkpoint(memory_folder, fallback=True)
    assert fallback["classy_state_dict"]["phase_idx"] == 3  # model_phase-3_end.torch, the same state


def test_stale_temp_files_of_a_killed_upload_are_removed(memory_folder: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"{memory_folder}/.checkpoint.torch.0123abcd.tmp", b"half")
    fs.pipe_file(f"{memory_folder}/notes.txt", b"keep")
    assert remove_stale_temp_files(memory_folder) == [".checkpoint.torch.0123abcd.tmp"]
    assert list_folder(memory_folder) == ["notes.txt"]


def test_keep_last_prunes_url_checkpoints(memory_folder: str) -> None:
    make_task([CheckpointHook(memory_folder, phase_types=PHASES, keep_last=2)]).run()
    assert list_folder(memory_folder) == ["checkpoint.torch", "model_phase-2_end.torch", "model_phase-3_end.torch"]


def test_sharded_checkpoints_to_a_url_are_refused_in_on_start(memory_folder: str) -> None:
    task = make_task([CheckpointHook(memory_folder, sharded=True)])
    with pytest.raises(HookConfigError, match=r"CheckpointHook: argument 'checkpoint_folder' = 'memory://.*' is a URL, "
                       r"but sharded .* sharded=False"):
        task.run()
    assert list_folder(memory_folder) == []


def test_a_sharded_checkpoint_converts_into_a_url_folder(
    memory_folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from classy_hooks.model.convert_checkpoint import convert_sharded_checkpoint

    make_task([CheckpointHook(str(tmp_path / "sharded"), sharded=True)], num_epochs=1).run()
    monkeypatch.chdir(tmp_path)
    assert convert_sharded_checkpoint(tmp_path / "sharded", memory_folder) == f"{memory_folder}/checkpoint.torch"
    assert sorted(os.listdir(tmp_path)) == ["sharded"]  # never a local folder named 'memory:'
    converted = load_checkpoint(memory_folder)["classy_state_dict"]
    original = load_checkpoint(tmp_path / "sharded")["classy_state_dict"]
    for key, value in original["base_model"].items():
        assert torch.equal(value, converted["base_model"][key]), key
