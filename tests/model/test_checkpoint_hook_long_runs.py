"""CheckpointHook for long runs: step and time checkpoints, preemption signals, keep_last pruning (one process).

Real signals (`os.kill` of this process), real files; the multi-process stories are in
tests/integration/test_preemption.py and test_mid_phase_resume.py.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from classy_hooks.core import ClassyHook, HookConfigError, TaskContractError, build_hook
from classy_hooks.core.preemption import PREEMPTED_EXIT_CODE, TrainingPreempted
from classy_hooks.model import CheckpointHook, load_checkpoint
from classy_hooks.model.checkpoint_io import list_checkpoints, resume_task
from helpers import assert_same, make_task


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    ("config", "argument"),
    [
        ({"checkpoint_every_n_steps": 0}, "checkpoint_every_n_steps"),
        ({"checkpoint_every_n_steps": 2.5}, "checkpoint_every_n_steps"),
        ({"checkpoint_every_n_seconds": 0}, "checkpoint_every_n_seconds"),
        ({"checkpoint_every_n_seconds": "1h"}, "checkpoint_every_n_seconds"),
        ({"checkpoint_every_n_seconds": float("inf")}, "checkpoint_every_n_seconds"),
        ({"keep_last": 0}, "keep_last"),
        ({"keep_last": True}, "keep_last"),
        ({"preemption_signals": "SIGTERM"}, "preemption_signals"),
        ({"preemption_signals": ["SIGTERN"]}, "preemption_signals"),
        ({"preemption_signals": ["SIGKILL"]}, "preemption_signals"),
        ({"agree_every_n_steps": 0}, "agree_every_n_steps"),
    ],
)
def test_bad_long_run_arguments_are_clear_errors(config: dict[str, Any], argument: str) -> None:
    with pytest.raises(HookConfigError, match=rf"CheckpointHook: argument '{argument}'.*\. \w"):
        build_hook({"name": "checkpoint", "checkpoint_folder": "x", **config})


def test_defaults_keep_classy_vision_behaviour(tmp_path: Path) -> None:
    hook = CheckpointHook(str(tmp_path))
    assert (hook.checkpoint_every_n_steps, hook.checkpoint_every_n_seconds, hook.keep_last) == (None, None, None)
    assert hook.preemption_signals == [] and not hook.saves_mid_phase
    before = signal.getsignal(signal.SIGTERM)
    make_task([hook], optimizer_period=3).run()
    assert signal.getsignal(signal.SIGTERM) is before
    assert _names(tmp_path) == ["checkpoint.torch", "model_phase-0_end.torch", "model_phase-2_end.torch"]


def test_every_n_steps_names_the_position_and_stores_the_data_position(tmp_path: Path) -> None:
    # 8 batches per phase, an optimizer step every 3 batches and at the phase end: steps after batches 3, 6, 8
    hook = CheckpointHook(str(tmp_path), checkpoint_every_n_steps=2)
    make_task([hook], optimizer_period=3).run()
    assert hook.state.optimizer_steps == 6
    assert _names(tmp_path) == [
        "checkpoint.torch",
        "model_phase-0_batch-6.torch",
        "model_phase-0_end.torch",
        "model_phase-2_batch-3.torch",
        "model_phase-2_batch-8.torch",
        "model_phase-2_end.torch",
    ]
    state = load_checkpoint(tmp_path / "model_phase-2_batch-3.torch")["classy_state_dict"]
    position = state["data_position"]
    assert position["batches"] == 3 and position["phase_idx"] == 2 and len(position["ranks"]) == 1
    assert position["ranks"][0]["losses"].shape == (3,)
    assert "data_position" not in load_checkpoint(tmp_path / "model_phase-2_end.torch")["classy_state_dict"]


def test_every_n_seconds_saves_inside_phases(tmp_path: Path) -> None:
    hook = CheckpointHook(str(tmp_path), checkpoint_every_n_seconds=0.001)
    make_task([hook]).run()
    inside = [n for n in _names(tmp_path) if "_batch-" in n]
    assert len(inside) == 16, inside  # every optimizer step of both train phases is 1 ms after the previous save


def test_a_task_without_data_position_is_refused_in_on_start(tmp_path: Path) -> None:
    class NoPosition:
        phase_type, phase_idx, train = "train", 0, True

        def get_classy_state(self) -> dict[str, Any]:
            return {}

    with pytest.raises(TaskContractError, match=r"CheckpointHook.*get_data_position.*DATA_POSITION_KEY"):
        CheckpointHook(str(tmp_path), checkpoint_every_n_steps=5).on_start(NoPosition())
    CheckpointHook(str(tmp_path)).on_start(NoPosition())  # phase-end checkpoints only: nothing more is needed


class _SignalAt(ClassyHook):
    """Sends real signals to this process on the train step after `batch` of phase `phase` (before the save)."""

    on_start = on_phase_start = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, phase: int, batch: int, signums: list[int]) -> None:
        super().__init__()
        self.phase, self.batch, self.signums = phase, batch, signums

    def on_step(self, task: Any) -> None:
        if task.phase_idx == self.phase and task.batches_done == self.batch:
            for signum in self.signums:
                os.kill(os.getpid(), signum)


def test_sigterm_stops_at_the_next_optimizer_step_after_one_checkpoint(tmp_path: Path) -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        hook = CheckpointHook(str(tmp_path), preemption_signals=["SIGTERM", "SIGUSR1"])
        # signalled after batch 4 of phase 2 (a micro-step): the next optimizer step is after batch 6; a second
        # signal right after the first only sets the flag again
        task = make_task([hook, _SignalAt(2, 4, [signal.SIGTERM, signal.SIGTERM])], optimizer_period=3)
        with pytest.raises(TrainingPreempted) as stop:
            task.run()
        assert stop.value.exit_code == PREEMPTED_EXIT_CODE == 75 and stop.value.signal_name == "SIGTERM"
        assert stop.value.checkpoint == os.path.join(str(tmp_path), "model_phase-2_batch-6_preempted.torch")
        assert task.batches_done == 6
        assert signal.getsignal(signal.SIGUSR1) is not hook._on_signal  # restored after the save
        os.kill(os.getpid(), signal.SIGUSR1)
        assert received == [signal.SIGUSR1]  # the previous handler is back
        assert list_checkpoints(str(tmp_path))[:2] == [
            str(tmp_path / "checkpoint.torch"),
            stop.value.checkpoint,
        ]
        assert load_checkpoint(tmp_path)["classy_state_dict"]["data_position"]["batches"] == 6
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_handlers_are_installed_only_on_the_main_thread(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            CheckpointHook(str(tmp_path), preemption_signals=["SIGUSR1"]).on_start(make_task())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], HookConfigError)
    assert "preemption_signals" in str(errors[0]) and "main thread" in str(errors[0])


def test_keep_last_removes_old_checkpoints_after_the_new_one_is_durable(tmp_path: Path) -> None:
    hook = CheckpointHook(str(tmp_path), checkpoint_every_n_steps=1, keep_last=2)
    make_task([hook], num_epochs=2).run()
    assert _names(tmp_path) == ["checkpoint.torch", "model_phase-2_batch-8.torch", "model_phase-2_end.torch"]
    assert hook.state.written == ["model_phase-2_batch-8.torch", "model_phase-2_end.torch"]
    assert hook.state.to_remove == []
    assert load_checkpoint(tmp_path)["classy_state_dict"]["phase_idx"] == 2


def test_the_checkpoint_a_run_resumed_from_is_never_removed_by_it(tmp_path: Path) -> None:
    make_task([CheckpointHook(str(tmp_path), checkpoint_every_n_steps=4)], num_epochs=1).run()
    start = "model_phase-0_batch-4.torch"
    assert start in _names(tmp_path)
    hook = CheckpointHook(str(tmp_path / "resumed"), checkpoint_every_n_steps=1, keep_last=1)
    task = make_task([hook], num_epochs=2)
    resume_task(task, tmp_path / start)
    os.makedirs(tmp_path / "resumed")
    os.link(tmp_path / start, tmp_path / "resumed" / start)  # the resumed run's folder holds the file it came from
    task.run()
    assert _names(tmp_path / "resumed") == ["checkpoint.torch", start, "model_phase-2_end.torch"]
    assert hook.state.to_remove == [start]  # a run resumed from a later checkpoint removes it


def test_sharded_checkpoints_are_pruned_too(tmp_path: Path) -> None:
    hook = CheckpointHook(str(tmp_path), sharded=True, keep_last=1, phase_types=["train", "test"])
    make_task([hook], num_epochs=2).run()
    assert _names(tmp_path) == ["checkpoint.latest", "model_phase-3_end.dcp"]
    assert load_checkpoint(tmp_path)["classy_state_dict"]["phase_idx"] == 3


def test_a_signal_during_a_test_phase_stops_at_its_end_and_resumes_bit_identically(tmp_path: Path) -> None:
    straight = make_task([CheckpointHook(str(tmp_path / "straight"), preemption_signals=["SIGTERM"])])
    straight.run()
    hook = CheckpointHook(str(tmp_path / "stopped"), preemption_signals=["SIGTERM"])
    task = make_task([hook, _SignalAt(1, 2, [signal.SIGTERM])])  # phase 1 is a test phase: no optimizer step
    with pytest.raises(TrainingPreempted) as stop:
        task.run()
    assert stop.value.checkpoint == os.path.join(str(tmp_path / "stopped"), "model_phase-1_end.torch")
    assert _names(tmp_path / "stopped") == ["checkpoint.torch", "model_phase-0_end.torch", "model_phase-1_end.torch"]
    resumed = make_task([CheckpointHook(str(tmp_path / "stopped"), preemption_signals=["SIGTERM"])])
    resume_task(resumed, tmp_path / "stopped")
    resumed.run()
    final, expected = resumed.get_classy_state(), straight.get_classy_state()
    for state in (final, expected):
        del state["hooks"]["CheckpointHook"]["written"]  # the stopped run also wrote model_phase-1_end.torch
    assert_same(expected, final)
