"""A run resumed from a checkpoint taken inside a phase ends bit-identical to the uninterrupted run.

Gradient accumulation every 3 batches over 8-batch phases (the period does not divide the phase):
the last window of a phase is shorter and applied at the phase end, so no gradient is pending in
any checkpoint. Compared: everything `get_classy_state` holds (model, optimizer, EMA, meters, losses,
RNG, counters, hook states), in process, through `tools/train.py --resume` and on 2 gloo ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from classy_hooks.core import ClassyHook
from classy_hooks.model import (
    CheckpointHook,
    ExponentialMovingAverageModelHook,
    PreciseBatchNormHook,
    load_checkpoint,
    resume_task,
)
from helpers import assert_same, make_task, run_training, tiny_config


def _hooks(folder: Path) -> list[ClassyHook]:
    return [
        CheckpointHook(str(folder), phase_types=["train", "test"], checkpoint_every_n_steps=2),
        ExponentialMovingAverageModelHook(0.8),
        PreciseBatchNormHook(40),  # iterates task.dataloader at phase ends: the whole phase's, after a resume too
    ]


def test_accumulation_windows_end_at_the_phase_end() -> None:
    steps: list[tuple[int, bool]] = []

    class Record(ClassyHook):
        on_start = on_phase_start = on_phase_end = on_end = ClassyHook._noop

        def on_step(self, task: Any) -> None:
            if task.train:
                steps.append((task.batches_done, task.is_optimizer_step))

    task = make_task([Record()], optimizer_period=3, num_epochs=1)
    task.run()
    assert [b for b, step in steps if step] == [3, 6, 8]
    assert all(p.grad is None for p in task.base_model.parameters())  # nothing carried past the phase end


def test_resume_from_every_mid_phase_checkpoint_is_bit_identical(tmp_path: Path) -> None:
    straight = make_task(_hooks(tmp_path / "straight"), optimizer_period=3)
    straight.run()
    inside = sorted((tmp_path / "straight").glob("model_phase-*_batch-*.torch"))
    assert [p.name for p in inside] == [
        "model_phase-0_batch-6.torch",
        "model_phase-2_batch-3.torch",
        "model_phase-2_batch-8.torch",  # the last batch: the phase end follows right after the resume
    ]
    for start in inside:
        resumed = make_task(_hooks(tmp_path / start.stem), optimizer_period=3)
        resume_task(resumed, start)
        assert resumed.phase_idx == int(start.name.split("-")[1].split("_")[0])
        resumed.run()
        assert_same(straight.get_classy_state(), resumed.get_classy_state(), start.name)


def test_sharded_mid_phase_checkpoints_resume_bit_identically_in_one_process(tmp_path: Path) -> None:
    def hooks(folder: Path) -> list[ClassyHook]:
        return [CheckpointHook(str(folder), sharded=True, checkpoint_every_n_steps=2), ExponentialMovingAverageModelHook(0.8)]

    straight = make_task(hooks(tmp_path / "straight"), optimizer_period=3)
    straight.run()
    inside = sorted((tmp_path / "straight").glob("model_phase-*_batch-*.dcp"))
    assert [p.name for p in inside] == ["model_phase-0_batch-6.dcp", "model_phase-2_batch-3.dcp", "model_phase-2_batch-8.dcp"]
    position = load_checkpoint(inside[1])["classy_state_dict"]["data_position"]
    assert position["batches"] == 3 and position["ranks"][0]["losses"].numel() == 3
    for start in inside:
        resumed = make_task(hooks(tmp_path / start.stem), optimizer_period=3)
        resume_task(resumed, start)
        resumed.run()
        assert_same(straight.get_classy_state(), resumed.get_classy_state(), start.name)


def _trainer_config() -> dict[str, Any]:
    return tiny_config(
        optimizer_period=3,
        test_phase_period=0,  # train phases only: the final checkpoint holds a train phase's losses and meters
        num_epochs=3,
        hooks=[
            {"name": "checkpoint", "checkpoint_folder": "{run_dir}/checkpoints", "checkpoint_every_n_steps": 1},
            {"name": "ema_model_weights", "decay": 0.8, "device": "cpu"},
        ],
    )


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_trainer_resumed_inside_a_phase_matches_the_straight_run(tmp_path: Path, nproc: int) -> None:
    # 128 samples, batch 16: 8 batches per phase on 1 rank, 4 per rank on 2 ranks (windows of 3 and 1)
    config = _trainer_config()
    run_training(tmp_path, config, nproc=nproc, run_dir=tmp_path / "straight")
    folder = tmp_path / "straight" / "checkpoints"
    start = folder / "model_phase-1_batch-3.torch"  # after the first window of the second phase
    position = load_checkpoint(start)["classy_state_dict"]["data_position"]
    assert len(position["ranks"]) == nproc and position["ranks"][0]["losses"].numel() == position["batches"]
    proc = run_training(tmp_path, config, nproc=nproc, run_dir=tmp_path / "resumed", extra=["--resume", str(start)])
    assert "Resumed from" in proc.stdout + proc.stderr
    assert_same(
        load_checkpoint(folder)["classy_state_dict"],
        load_checkpoint(tmp_path / "resumed" / "checkpoints")["classy_state_dict"],
    )
