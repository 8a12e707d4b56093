"""Story: a Classy Vision user's ClassificationTask steps its epoch schedule before the hooks' `on_phase_end`; the
learning rate classy-hooks plots and logs for a train phase is still the one that phase trained with (Classy
Vision's own TensorBoard hook records the rates of the phase's steps), read back with TensorBoard's own reader."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from classy_vision_runs import build_classification_task, classification_config, classy_hooks_in_classy_vision, train

from helpers import read_scalars

#: classification_config's epoch schedule: {"name": "step", "values": [0.1, 0.05, 0.01]} over 3 epochs.
PHASE_LRS = [0.1, 0.05, 0.01]


@pytest.mark.slow
def test_learning_rate_of_each_train_phase_is_the_one_it_trained_with(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="classy_hooks.logging")
    hooks = [
        {"name": "tensorboard_plot", "summary_writer": {"logdir": str(tmp_path / "tb")}, "log_period": 1},
        {"name": "loss_lr_meter_logging"},
    ]
    with classy_hooks_in_classy_vision():
        task = train(build_classification_task(classification_config(hooks, num_epochs=3)))
    assert task.train_phase_idx == 2
    scalars = read_scalars(tmp_path / "tb")
    groups = sorted(tag for tag in scalars if tag.startswith("LearningRate/train/group_"))
    assert groups == ["LearningRate/train/group_0", "LearningRate/train/group_1"]  # Classy splits weight decay
    for tag in groups:
        assert [v for _, v in scalars[tag]] == pytest.approx(PHASE_LRS), tag
        # every step of a phase trained with that phase's rate
        steps = scalars[tag.replace("LearningRate/train", "LearningRate/train_step")]
        assert [v for _, v in steps] == pytest.approx([lr for lr in PHASE_LRS for _ in range(len(steps) // 3)])
    synced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Synced meters: train")]
    assert [m.split("lr ")[1].split("]")[0] for m in synced] == [f"[{lr:.4g}, {lr:.4g}" for lr in PHASE_LRS]
