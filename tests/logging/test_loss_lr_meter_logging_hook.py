"""LossLrMeterLoggingHook on the reference loop: what it logs, when, and how numbers read."""

from __future__ import annotations

import logging

import pytest
import torch
from logging_hook_utils import EPOCH_SCHEDULE_LRS, run_epoch_schedule_loop

from bad_input import assert_reported
from classy_hooks.core import HookConfigError, TaskContractError, build_hook
from classy_hooks.logging import LossLrMeterLoggingHook
from helpers import make_task

LOGGER = "classy_hooks.logging.loss_lr_meter_logging_hook"


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_constructors_and_bad_arguments() -> None:
    assert LossLrMeterLoggingHook().log_freq is None
    assert LossLrMeterLoggingHook.from_config({"log_freq": 5}).log_freq == 5
    hook = build_hook({"name": "loss_lr_meter_logging", "log_freq": 3})
    assert isinstance(hook, LossLrMeterLoggingHook) and hook.log_freq == 3
    for bad in ["5", 0, -1, True, 2.0]:
        with pytest.raises(HookConfigError, match="LossLrMeterLoggingHook: argument 'log_freq'"):
            LossLrMeterLoggingHook(log_freq=bad)
    with pytest.raises(HookConfigError, match="unknown key 'log_frequency'"):
        build_hook({"name": "loss_lr_meter_logging", "log_frequency": 3})


def test_on_start_names_missing_task_attributes() -> None:
    class NotATask:
        train = True

    with pytest.raises(TaskContractError, match=r"LossLrMeterLoggingHook.*'losses'"):
        LossLrMeterLoggingHook().on_start(NotATask())


def test_logs_every_log_freq_train_steps_and_every_phase_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    seen: list[float] = []

    class RecordLosses(LossLrMeterLoggingHook):
        def on_step(self, task):  # type: ignore[no-untyped-def]
            super().on_step(task)
            seen.append(float(task.last_batch.loss))

    task = make_task([RecordLosses(log_freq=3)])  # 2 epochs x 8 train batches, test after each
    task.run()
    lines = _messages(caplog)
    approximate = [m for m in lines if m.startswith("Approximate meters")]
    synced = [m for m in lines if m.startswith("Synced meters")]
    assert len(approximate) == 2 * 2  # steps 3 and 6 of each 8-batch train phase; never in test phases
    assert len(synced) == 4  # train, test, train, test
    assert all("train (train phase" in m for m in approximate)
    assert "37.5% done (3/8 batches)" in approximate[0] and "75.0% done (6/8 batches)" in approximate[1]
    # the step line's loss is the running mean of the phase's first 3 batch losses
    assert f"loss {sum(seen[:3]) / 3:.4g}," in approximate[0]
    assert "test (test phase 0, phase_idx 1), 100.0% done (4/4 batches)" in synced[1]
    assert "lr " in synced[0] and "lr " not in synced[1]  # learning rates on train phases only
    assert "accuracy: top_1=" in synced[1] and "top_5=" in synced[1]


def test_without_log_freq_only_phase_ends_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    make_task([LossLrMeterLoggingHook()], num_epochs=1).run()
    lines = _messages(caplog)
    assert len(lines) == 2 and all(m.startswith("Synced meters") for m in lines)


def test_small_learning_rates_stay_readable_and_every_param_group_is_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    task = make_task(
        [LossLrMeterLoggingHook(log_freq=4)],
        num_epochs=1,
        optimizer={"name": "sgd", "lr": 2.5e-5, "momentum": 0.9, "weight_decay": 0.0},
        lr_schedule={"name": "constant"},
    )
    task.run()
    assert "lr 2.5e-05," in _messages(caplog)[0]

    caplog.clear()
    model = torch.nn.Linear(2, 2)
    task = make_task(num_epochs=1)
    task.optimizer = torch.optim.SGD([{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 3e-6}])
    task.train, task.losses = True, [0.5, 0.25]
    task.dataloader = [None] * 2
    hook = LossLrMeterLoggingHook()
    hook.on_phase_end(task)
    assert "loss 0.375, lr [0.1, 3e-06]" in _messages(caplog)[0]


def test_phase_end_line_shows_the_phase_learning_rate_when_the_schedule_steps_before_phase_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Classy Vision's order (epoch schedule stepped before `on_phase_end`): the line is the phase's own rate."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    run_epoch_schedule_loop([LossLrMeterLoggingHook(log_freq=4)])
    lines = _messages(caplog)
    synced = [m for m in lines if m.startswith("Synced meters: train")]
    approximate = [m for m in lines if m.startswith("Approximate meters")]
    assert [m.split("lr ")[1] for m in synced] == [f"{lr:.4g}" for lr in EPOCH_SCHEDULE_LRS]
    assert [m.split("lr ")[1] for m in approximate] == [f"{lr:.4g}" for lr in EPOCH_SCHEDULE_LRS]


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----

def test_negative_log_freq_is_reported_by_the_constructor() -> None:
    with pytest.raises(HookConfigError) as info:
        build_hook({"name": "loss_lr_meter_logging", "log_freq": -5})
    assert_reported(info.value, HookConfigError, ("LossLrMeterLoggingHook", "log_freq", "Pass an int of at least 1"))


def test_task_without_meters_is_reported_at_on_start() -> None:
    task = make_task([build_hook({"name": "loss_lr_meter_logging", "log_freq": 2})])
    del task.meters
    with pytest.raises(TaskContractError) as info:
        task.run()
    assert_reported(info.value, TaskContractError, ("LossLrMeterLoggingHook", "meters", "Add them to your task"))
    assert task.num_updates == 0
