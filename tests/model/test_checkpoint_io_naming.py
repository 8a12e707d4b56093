"""Checkpoint names and listing: phase-end, step and preemption checkpoints in training order, files and `.dcp`."""

from __future__ import annotations

import random
from pathlib import Path

from classy_hooks.model import CheckpointHook, load_checkpoint
from classy_hooks.model.checkpoint_io import (
    checkpoint_order,
    list_checkpoints,
    phase_checkpoint_name,
    remove_checkpoint,
    remove_stale_temp_files,
    step_checkpoint_name,
)
from classy_hooks.model.sharded_checkpoint import (
    list_sharded_checkpoints,
    remove_stale_sharded_temp,
    sharded_checkpoint_name,
)
from helpers import make_task

IN_TRAINING_ORDER = [
    "model_phase-0_batch-2.torch",
    "model_phase-0_batch-10.torch",  # by number, not by text
    "model_phase-0_end.torch",
    "model_phase-1_end.torch",
    "model_phase-2_batch-5.torch",
    "model_phase-2_batch-5_preempted.torch",
    "model_phase-2_end.torch",
    "model_phase-10_batch-1_preempted.torch",
]


def test_names_and_their_training_order() -> None:
    assert phase_checkpoint_name(3) == "model_phase-3_end.torch"
    assert step_checkpoint_name(3, 7) == "model_phase-3_batch-7.torch"
    assert step_checkpoint_name(3, 7, preempted=True) == "model_phase-3_batch-7_preempted.torch"
    assert sharded_checkpoint_name(3) == "model_phase-3_end.dcp"
    assert sharded_checkpoint_name(3, 7, preempted=True) == "model_phase-3_batch-7_preempted.dcp"
    shuffled = IN_TRAINING_ORDER[:]
    random.Random(0).shuffle(shuffled)
    assert sorted(shuffled, key=checkpoint_order) == IN_TRAINING_ORDER  # type: ignore[arg-type]
    for other in ("checkpoint.torch", "model_phase-1_end.torch.tmp", "model_phase-x_end.torch", "notes.txt"):
        assert checkpoint_order(other) is None


def test_list_checkpoints_is_newest_first_over_every_kind(tmp_path: Path) -> None:
    for name in [*IN_TRAINING_ORDER, "checkpoint.torch", "other.torch"]:
        (tmp_path / name).write_bytes(b"x")
    assert list_checkpoints(str(tmp_path)) == [str(tmp_path / "checkpoint.torch")] + [
        str(tmp_path / name) for name in reversed(IN_TRAINING_ORDER)
    ]


def test_fallback_takes_the_newest_complete_of_phase_step_and_preemption_checkpoints(tmp_path: Path) -> None:
    make_task([CheckpointHook(str(tmp_path), checkpoint_every_n_steps=3)], optimizer_period=2).run()
    newest = tmp_path / "model_phase-2_end.torch"
    # 4 optimizer steps per phase (after batches 2, 4, 6, 8); the 6th of the run is after batch 4 of phase 2
    step = tmp_path / "model_phase-2_batch-4.torch"
    assert step.exists() and newest.exists()
    (tmp_path / "checkpoint.torch").unlink()
    newest.write_bytes(newest.read_bytes()[:100])  # truncated: the newest is not complete
    state = load_checkpoint(tmp_path, fallback=True)["classy_state_dict"]
    assert state["phase_idx"] == 2 and state["data_position"]["batches"] == 4


def test_stale_temp_files_of_every_kind_are_removed(tmp_path: Path) -> None:
    temps = [
        ".checkpoint.torch.0123456789abcdef.tmp",
        ".model_phase-2_batch-5.torch.checkpoint.torch.0123.tmp",
        ".model_phase-2_batch-5_preempted.torch.checkpoint.torch.0123.tmp",
    ]
    for name in [*temps, "model_phase-2_batch-5.torch"]:
        (tmp_path / name).write_bytes(b"x")
    for name in (".model_phase-2_batch-5.dcp.tmp", ".model_phase-3_end.dcp.old.tmp"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__0_0.distcp").write_bytes(b"x")
    assert sorted(remove_stale_temp_files(str(tmp_path))) == sorted(temps)
    assert sorted(remove_stale_sharded_temp(str(tmp_path))) == [
        ".model_phase-2_batch-5.dcp.tmp",
        ".model_phase-3_end.dcp.old.tmp",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["model_phase-2_batch-5.torch"]


def test_sharded_folders_list_in_training_order_and_are_removed_through_a_temp_name(tmp_path: Path) -> None:
    names = ["model_phase-1_end.dcp", "model_phase-2_batch-3.dcp", "model_phase-2_end.dcp", "model_phase-4_end.dcp"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / ".metadata").write_bytes(b"x")
    (tmp_path / "model_phase-5_end.dcp").mkdir()  # incomplete: no metadata
    assert list_sharded_checkpoints(tmp_path) == [str(tmp_path / n) for n in reversed(names)]
    assert remove_checkpoint(str(tmp_path), "model_phase-2_batch-3.dcp")
    assert not remove_checkpoint(str(tmp_path), "model_phase-2_batch-3.dcp")
    assert not (tmp_path / "model_phase-2_batch-3.dcp").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
