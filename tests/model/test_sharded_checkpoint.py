"""Sharded checkpoints in one process: round trip, atomic commit, safe loading (what DCP would unpickle), errors.

The 2-rank FSDP2 stories (resume, SIGKILL, conversion) are in tests/integration/test_sharded_checkpoint_resume.py.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader

from classy_hooks.model import CheckpointError, CheckpointHook, ExponentialMovingAverageModelHook, load_checkpoint
from classy_hooks.model.checkpoint_io import check_weights_only, resume_task
from classy_hooks.model.sharded_checkpoint import (
    LATEST_SHARDED,
    UnsafeCheckpointError,
    commit_sharded_checkpoint,
    optimizer_state_by_index,
)
from helpers import ROOT, make_task, subprocess_env


def _hooks(folder: Path, **options: Any) -> list[Any]:
    return [CheckpointHook(str(folder), phase_types=["train", "test"], sharded=True, **options),
            ExponentialMovingAverageModelHook(0.8)]


@pytest.mark.parametrize("non_blocking", [False, True], ids=["sync", "async_save"])
def test_sharded_save_round_trips_bit_identically(tmp_path: Path, non_blocking: bool) -> None:
    first = make_task(_hooks(tmp_path, non_blocking=non_blocking), num_epochs=1)
    first.run()
    assert sorted(os.listdir(tmp_path)) == [LATEST_SHARDED, "model_phase-0_end.dcp", "model_phase-1_end.dcp"]
    assert sorted(os.listdir(tmp_path / "model_phase-1_end.dcp")) == [".checksums-0.json", ".metadata", "__0_0.distcp"]
    resumed = make_task(_hooks(tmp_path / "next"), num_epochs=1)
    resume_task(resumed, tmp_path)
    a, b = first.get_classy_state(), resumed.get_classy_state()
    assert (a["phase_idx"], a["num_updates"], a["losses"]) == (b["phase_idx"], b["num_updates"], b["losses"])
    for key, value in a["base_model"].items():
        assert torch.equal(value, b["base_model"][key]), key
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for index, slots in a["optimizer"]["state"].items():
        assert torch.equal(slots["momentum_buffer"], b["optimizer"]["state"][index]["momentum_buffer"])
    ema_a, ema_b = a["hooks"]["ExponentialMovingAverageModelHook"], b["hooks"]["ExponentialMovingAverageModelHook"]
    assert ema_a["num_updates"] == ema_b["num_updates"] and ema_a["swapped"] == ema_b["swapped"]
    for key, value in ema_a["ema_state"].items():
        assert torch.equal(value, ema_b["ema_state"][key]), key
    assert b["hooks"]["CheckpointHook"]["phase_counter"] == 2
    assert torch.equal(a["rng_state"], b["rng_state"])


def test_a_save_without_metadata_is_never_the_latest_and_is_cleaned_up(tmp_path: Path) -> None:
    make_task(_hooks(tmp_path), num_epochs=1).run()
    broken = tmp_path / ".model_phase-2_end.dcp.tmp"  # as a save killed before DCP wrote .metadata leaves it
    broken.mkdir()
    (broken / "__0_0.distcp").write_bytes(b"half a shard")
    with pytest.raises(RuntimeError, match=r"has no \.metadata: the save did not complete"):
        commit_sharded_checkpoint(str(tmp_path), "model_phase-2_end.dcp")
    assert (tmp_path / LATEST_SHARDED).read_text() == "model_phase-1_end.dcp\n"
    assert load_checkpoint(tmp_path)["classy_state_dict"]["phase_idx"] == 1
    task = make_task(_hooks(tmp_path), num_epochs=2)
    resume_task(task, tmp_path)
    task.run()  # on_start removes the temporary folder; phases 2 and 3 are saved
    assert not broken.exists()
    assert load_checkpoint(tmp_path)["classy_state_dict"]["phase_idx"] == 3


def test_pointer_to_an_incomplete_folder_is_an_error_unless_fallback(tmp_path: Path) -> None:
    make_task(_hooks(tmp_path), num_epochs=1).run()
    (tmp_path / "model_phase-1_end.dcp" / ".metadata").unlink()  # damaged by hand, not by a save
    with pytest.raises(CheckpointError, match=r"not a complete sharded checkpoint\. Use fallback=True"):
        load_checkpoint(tmp_path)
    assert load_checkpoint(tmp_path, fallback=True)["classy_state_dict"]["phase_idx"] == 0


class _Marker:
    """Unpickling this creates a folder: the stand-in for code an attacker's pickle would run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (self.path,)


def _flip_a_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_changed_byte_in_a_shard_is_named_on_load_and_fallback_resumes_from_the_previous(tmp_path: Path) -> None:
    make_task(_hooks(tmp_path), num_epochs=1).run()
    damaged = tmp_path / "model_phase-1_end.dcp"
    shard = damaged / "__0_0.distcp"
    _flip_a_byte(shard, shard.stat().st_size // 2)  # inside some tensor's bytes: DCP itself would load it silently
    expected = (
        r"sharded checkpoint .*model_phase-1_end\.dcp is damaged: __0_0\.distcp's content checksum does not match"
        r".*resume from the previous one, .*model_phase-0_end\.dcp \(load_checkpoint/resume_task with fallback=True"
    )
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=expected):
        resume_task(make_task(_hooks(tmp_path / "other"), num_epochs=1), tmp_path)
    assert load_checkpoint(tmp_path, fallback=True)["classy_state_dict"]["phase_idx"] == 0
    resumed = make_task(_hooks(tmp_path / "resumed"), num_epochs=1)
    resume_task(resumed, tmp_path, fallback=True)
    assert resumed.phase_idx == 0


def test_a_truncated_shard_or_a_lost_checksum_list_is_named(tmp_path: Path) -> None:
    make_task(_hooks(tmp_path), num_epochs=1).run()
    checkpoint = tmp_path / "model_phase-1_end.dcp"
    shard = checkpoint / "__0_0.distcp"
    size = shard.stat().st_size
    os.truncate(shard, size - 100)
    with pytest.raises(CheckpointError, match=rf"__0_0\.distcp has {size - 100} bytes, {size} were written"):
        load_checkpoint(checkpoint)
    listing = json.loads((checkpoint / ".checksums-0.json").read_text())
    listing["world_size"] = 2  # as if rank 1's list were lost
    (checkpoint / ".checksums-0.json").write_text(json.dumps(listing))
    with pytest.raises(CheckpointError, match=r"written by 2 ranks but the checksum lists of rank\(s\) \[1\] are missing"):
        load_checkpoint(checkpoint)


def test_a_checkpoint_from_before_checksum_lists_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_task(_hooks(tmp_path), num_epochs=1).run()
    checkpoint = tmp_path / "model_phase-1_end.dcp"
    (checkpoint / ".checksums-0.json").unlink()
    assert load_checkpoint(checkpoint)["classy_state_dict"]["phase_idx"] == 1
    assert "has no checksum lists (an older writer): it is loaded unverified" in caplog.text


def test_metadata_unpickling_anything_but_dcp_metadata_is_refused_without_running_it(tmp_path: Path) -> None:
    make_task(_hooks(tmp_path), num_epochs=1).run()
    checkpoint = tmp_path / "model_phase-1_end.dcp"
    marker = tmp_path / "code-ran"
    (checkpoint / ".metadata").write_bytes(pickle.dumps(_Marker(str(marker))))
    with pytest.raises(UnsafeCheckpointError, match=r"wants to load posix\.mkdir"):
        load_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match=r"wants to load posix\.mkdir"):
        resume_task(make_task(_hooks(tmp_path / "other"), num_epochs=1), checkpoint)
    assert not marker.exists()
    with pytest.raises(AttributeError):  # what DCP's own reader does with the same folder (then it fails) ...
        FileSystemReader(str(checkpoint)).read_metadata()
    assert marker.is_dir()  # ... runs the attacker's code: hence the allowlist


def test_non_tensor_values_load_weights_only_so_pickled_objects_do_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    state = {"classy_state_dict": {"phase_idx": 0, "evil": _Marker(str(marker))}, "checkpoint_format_version": 1}
    with pytest.warns(UserWarning, match="assuming the intent is to save in a single process"):
        dcp.save(state, checkpoint_id=str(tmp_path / "model_phase-0_end.dcp"), no_dist=True)
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(tmp_path / "model_phase-0_end.dcp")
    assert not marker.exists()


def test_dtensor_in_single_file_mode_says_to_use_sharded(tmp_path: Path) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        shard = distribute_tensor(torch.ones(4), init_device_mesh("cpu", (1,)), [Shard(0)])
        with pytest.raises(CheckpointError, match=r"it is a DTensor .*CheckpointHook\(\.\.\., sharded=True\)"):
            check_weights_only({"w": shard})
        check_weights_only({"w": shard}, allow_dtensor=True)
    finally:
        dist.destroy_process_group()


def test_optimizer_state_by_name_goes_back_to_indices_in_param_group_order() -> None:
    by_name = {
        "state": {"b": {"step": 1}, "a": {"step": 2}},
        "param_groups": [{"lr": 0.1, "params": ["a"]}, {"lr": 0.2, "params": ["c", "b"]}],
    }
    assert optimizer_state_by_index(by_name) == {
        "state": {2: {"step": 1}, 0: {"step": 2}},
        "param_groups": [{"lr": 0.1, "params": [0]}, {"lr": 0.2, "params": [1, 2]}],
    }


def test_convert_command_rejects_a_single_file_checkpoint_clearly(tmp_path: Path) -> None:
    make_task([CheckpointHook(str(tmp_path))], num_epochs=1).run()
    proc = subprocess.run(
        [sys.executable, "-m", "classy_hooks.model.convert_checkpoint", str(tmp_path), str(tmp_path / "out.torch")],
        env=subprocess_env(),
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "is not a sharded checkpoint" in proc.stderr and not (tmp_path / "out.torch").exists()


def test_a_converted_checkpoint_carries_the_checksum_load_checkpoint_verifies(tmp_path: Path) -> None:
    from classy_hooks.model import convert_sharded_checkpoint
    from classy_hooks.model.checkpoint_file import verify_torch_file

    make_task([CheckpointHook(str(tmp_path / "sharded"), sharded=True)], num_epochs=1).run()
    converted = convert_sharded_checkpoint(tmp_path / "sharded", tmp_path / "one.torch")
    assert verify_torch_file(converted)  # True: a checksum was there and matched
    original = load_checkpoint(tmp_path / "sharded")["classy_state_dict"]
    loaded = load_checkpoint(converted)["classy_state_dict"]
    assert all(torch.equal(value, loaded["base_model"][key]) for key, value in original["base_model"].items())
    data = bytearray(Path(converted).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(converted).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"one\.torch"):
        load_checkpoint(converted)
