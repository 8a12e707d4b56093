"""load_checkpoint / resume_task / check_weights_only: clear errors on bad files, fallback to the newest valid one."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bad_input import assert_reported
from classy_hooks.model import CheckpointError, CheckpointHook, check_weights_only, list_checkpoints, load_checkpoint
from classy_hooks.model.checkpoint_io import make_checkpoint, remove_stale_temp_files, resume_task, write_checkpoint
from helpers import make_task


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A checkpoint folder from a real 2-epoch run with train and test checkpoints (phases 0..3)."""
    make_task([CheckpointHook(str(tmp_path), phase_types=["train", "test"])]).run()
    return tmp_path


def test_a_folder_means_its_checkpoint_torch(folder: Path) -> None:
    assert load_checkpoint(folder)["classy_state_dict"]["phase_idx"] == 3
    assert load_checkpoint(str(folder / "checkpoint.torch"))["classy_state_dict"]["phase_idx"] == 3
    assert list_checkpoints(str(folder)) == [str(folder / "checkpoint.torch")] + [
        str(folder / f"model_phase-{i}_end.torch") for i in (3, 2, 1, 0)
    ]


def test_missing_checkpoint_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=str(tmp_path / "checkpoint.torch")):
        load_checkpoint(tmp_path)


def _truncate(path: Path) -> None:
    # A new inode: checkpoint.torch shares its inode with the newest per-phase file (a hard link).
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_is_a_clear_error_naming_the_file(folder: Path, damage: str) -> None:
    latest = folder / "checkpoint.torch"
    if damage == "truncate":
        _truncate(latest)
    else:
        latest.unlink()
        latest.write_bytes(b"" if damage == "empty" else b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=rf"{latest}.*truncated or corrupt.*fallback=True"):
        load_checkpoint(folder)


def test_fallback_loads_the_newest_valid_checkpoint(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    _truncate(folder / "checkpoint.torch")
    _truncate(folder / "model_phase-3_end.torch")
    with caplog.at_level(logging.WARNING):
        checkpoint = load_checkpoint(folder, fallback=True)
    assert checkpoint["classy_state_dict"]["phase_idx"] == 2
    assert "model_phase-2_end.torch" in caplog.text and "checkpoint.torch" in caplog.text
    # A damaged per-phase file given by name falls back within its folder too.
    assert load_checkpoint(folder / "model_phase-3_end.torch", fallback=True)["classy_state_dict"]["phase_idx"] == 2


def test_fallback_with_nothing_valid_is_an_error(folder: Path) -> None:
    for path in folder.iterdir():
        _truncate(path)
    with pytest.raises(CheckpointError, match="No valid checkpoint to fall back to"):
        load_checkpoint(folder, fallback=True)


def test_files_that_are_not_checkpoints_are_rejected(tmp_path: Path) -> None:
    torch.save([1, 2], tmp_path / "list.torch")
    torch.save({"classy_state_dict": {}, "checkpoint_format_version": 99}, tmp_path / "future.torch")
    with pytest.raises(CheckpointError, match="holds no 'classy_state_dict'"):
        load_checkpoint(tmp_path / "list.torch")
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "future.torch")


def test_classy_vision_layout_without_version_loads(tmp_path: Path) -> None:
    torch.save({"input_args": None, "classy_state_dict": {"phase_idx": 4}}, tmp_path / "checkpoint.torch")
    assert load_checkpoint(tmp_path)["classy_state_dict"] == {"phase_idx": 4}


def test_resume_task_restores_the_task(folder: Path) -> None:
    task = make_task([CheckpointHook(str(folder / "again"))])
    checkpoint = resume_task(task, folder)
    assert task.phase_idx == 3 and checkpoint["classy_state_dict"]["phase_idx"] == 3
    for key, value in checkpoint["classy_state_dict"]["base_model"].items():
        assert torch.equal(task.base_model.state_dict()[key], value)


def test_check_weights_only_accepts_what_torch_load_accepts(tmp_path: Path) -> None:
    state = {
        "t": torch.ones(2, dtype=torch.bfloat16),
        "p": torch.nn.Parameter(torch.zeros(1)),
        "od": OrderedDict(a=1),
        3: [None, True, 1.5, "s", b"b", (1, 2), {4}, torch.Size([2]), torch.float16, torch.device("cpu")],
    }
    check_weights_only(state)
    torch.save(state, tmp_path / "s.pt")
    torch.load(tmp_path / "s.pt", weights_only=True)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": {"b": np.zeros(2)}}, r"\['a'\]\['b'\].*numpy"),
        ({"a": [1, object()]}, r"\['a'\]\[1\]"),
        ({(1, 2): 3}, r"key \(1, 2\)"),
        ({"s": torch.zeros(1).as_subclass(torch.nn.Buffer)}, r"\['s'\].*tensor subclass"),
    ],
)
def test_check_weights_only_names_the_offending_key(value: object, where: str, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=where):
        check_weights_only(value)
    with pytest.raises(CheckpointError):
        write_checkpoint(str(tmp_path), make_checkpoint({"x": value}))
    assert os.listdir(tmp_path) == []


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".checkpoint.torch.abc.tmp").write_bytes(b"x")
    (tmp_path / ".model_phase-3_end.torch.abc.tmp").write_bytes(b"x")
    (tmp_path / "keep.tmp").write_bytes(b"x")
    assert sorted(remove_stale_temp_files(str(tmp_path))) == [
        ".checkpoint.torch.abc.tmp",
        ".model_phase-3_end.torch.abc.tmp",
    ]
    assert os.listdir(tmp_path) == ["keep.tmp"]


def _same_model_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


@pytest.mark.slow
def test_compiled_run_checkpoint_loads_into_the_uncompiled_model_and_back(tmp_path: Path) -> None:
    compiled = make_task([CheckpointHook(str(tmp_path / "compiled"))], num_epochs=1, compile={"backend": "aot_eager"})
    compiled.run()
    saved = load_checkpoint(tmp_path / "compiled")["classy_state_dict"]
    assert not any("_orig_mod" in key for key in saved["base_model"])
    eager = make_task([CheckpointHook(str(tmp_path / "eager"))], num_epochs=2)
    resume_task(eager, tmp_path / "compiled")  # compiled -> uncompiled
    _same_model_state(eager.base_model.state_dict(), saved["base_model"])
    eager.run()
    back = make_task([], num_epochs=2, compile={"backend": "aot_eager"})
    resume_task(back, tmp_path / "eager")  # uncompiled -> compiled
    _same_model_state(back.base_model.state_dict(), load_checkpoint(tmp_path / "eager")["classy_state_dict"]["base_model"])


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module.", "module._orig_mod."])
def test_old_checkpoints_with_wrapper_keys_load_with_plain_keys(folder: Path, tmp_path: Path, prefix: str) -> None:
    checkpoint = load_checkpoint(folder)
    state = checkpoint["classy_state_dict"]
    old = make_checkpoint({**state, "base_model": {prefix + k: v for k, v in state["base_model"].items()}})
    old["classy_state_dict"]["base_model"] = {prefix + k: v for k, v in state["base_model"].items()}  # as written then
    torch.save(old, tmp_path / "old.torch")
    loaded = load_checkpoint(tmp_path / "old.torch")["classy_state_dict"]["base_model"]
    _same_model_state(loaded, state["base_model"])
    task = make_task([], num_epochs=2)
    resume_task(task, tmp_path / "old.torch")
    _same_model_state(task.base_model.state_dict(), state["base_model"])


def test_make_checkpoint_writes_the_plain_modules_keys() -> None:
    model = torch.nn.Linear(2, 2)
    wrapped = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    assert sorted(make_checkpoint({"base_model": wrapped})["classy_state_dict"]["base_model"]) == ["bias", "weight"]


def _flip_in_place(path: Path, offset: int) -> None:
    """One flipped bit, written into the file itself (every hard link to it sees it, as with disk damage)."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x04]))


def test_a_flipped_byte_is_named_with_the_previous_checkpoint_offered(folder: Path) -> None:
    latest = folder / "checkpoint.torch"
    _flip_in_place(latest, latest.stat().st_size // 2)  # also model_phase-3_end.torch: the same file
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(folder)
    message = str(caught.value)
    assert str(latest) in message and "content checksum does not match" in message
    assert f"The previous checkpoint is {folder / 'model_phase-2_end.torch'}" in message
    with pytest.raises(CheckpointError, match=r"model_phase-2_end\.torch"):
        resume_task(make_task([], num_epochs=2), folder)
    assert load_checkpoint(folder, fallback=True)["classy_state_dict"]["phase_idx"] == 2


def test_every_saved_checkpoint_verifies(folder: Path) -> None:
    from classy_hooks.model.checkpoint_file import verify_torch_file

    for path in list_checkpoints(str(folder)):
        assert verify_torch_file(path) is True, path


def test_checkpoints_without_a_checksum_load_with_a_warning(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint = load_checkpoint(folder)
    for name, extra in (("plain.torch", {}), ("legacy.torch", {"_use_new_zipfile_serialization": False})):
        torch.save(checkpoint, tmp_path / name, **extra)  # as Classy Vision or an earlier version wrote them
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            loaded = load_checkpoint(tmp_path / name)
        assert loaded["classy_state_dict"]["phase_idx"] == 3
        assert f"{tmp_path / name} has no content checksum" in caplog.text and "unverified" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_checkpoint(folder)
    assert "no content checksum" not in caplog.text


def test_resumed_tensors_do_not_write_through_to_the_file(folder: Path) -> None:
    """The checkpoint is memory-mapped copy-on-write: training on the resumed state never changes the file."""
    before = (folder / "checkpoint.torch").read_bytes()
    task = make_task([], num_epochs=4)
    resume_task(task, folder)
    task.run()  # two more epochs update the model and the optimizer's momentum in place
    assert (folder / "checkpoint.torch").read_bytes() == before


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----


def _truncated(tmp: Path) -> Path:
    folder = tmp / "ckpt"
    make_task([CheckpointHook(str(folder))], num_epochs=1).run()
    path = folder / "checkpoint.torch"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _garbage(tmp: Path) -> Path:
    (tmp / "checkpoint.torch").write_bytes(b"this is not a checkpoint\n" * 10)
    return tmp / "checkpoint.torch"


def _foreign(tmp: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp / "weights.pt")
    return tmp / "weights.pt"


@pytest.mark.parametrize(
    ("load", "mentions"),
    [
        pytest.param(lambda tmp: load_checkpoint(_truncated(tmp)), ("checkpoint.torch", "truncated", "restore the file from a copy"), id="truncated"),
        pytest.param(lambda tmp: resume_task(make_task(), _garbage(tmp)), ("checkpoint.torch", "corrupt", "start the run without resuming"), id="resume-garbage-file"),
        pytest.param(lambda tmp: resume_task(make_task(), tmp / "no-such-run"), ("no-such-run", "does not exist", "Pass a checkpoint file or a folder"), id="resume-missing-folder"),
        pytest.param(lambda tmp: load_checkpoint(_foreign(tmp)), ("weights.pt", "not written by CheckpointHook", "Pass a checkpoint.torch"), id="not-written-by-checkpoint-hook"),
        pytest.param(lambda tmp: load_checkpoint(_garbage(tmp), fallback=True), ("checkpoint.torch", "No valid checkpoint to fall back to", "restore the file"), id="fallback-finds-nothing-valid"),
    ],
)
def test_bad_checkpoint_is_refused_before_anything_is_restored(tmp_path: Path, load: Any, mentions: tuple[str, ...]) -> None:
    with pytest.raises(CheckpointError) as info:
        load(tmp_path)
    assert_reported(info.value, CheckpointError, ("load_checkpoint", *mentions))
