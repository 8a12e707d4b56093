"""VisdomHook against a real Visdom server on 127.0.0.1, read back with the client's get_window_data."""

from __future__ import annotations

import io
import logging
import socket
import time
from typing import Any

import pytest
import torch
from logging_hook_utils import EPOCH_SCHEDULE_LRS, PhaseRecorder, VisdomServer, run_epoch_schedule_loop

from bad_input import assert_reported
from classy_hooks.core import ClassyHook, HookConfigError, TaskContractError, build_hook
from classy_hooks.logging import VisdomHook, visdom_hook
from helpers import free_port, make_task

LOGGER = "classy_hooks.logging.visdom_hook"


def test_constructors_and_bad_arguments() -> None:
    hook = VisdomHook("http://127.0.0.1", "8097")
    assert (hook.port, hook.env, hook.title_suffix) == (8097, "main", "")
    assert isinstance(VisdomHook.from_config({"server": "http://127.0.0.1", "port": 8097, "env": "e"}), VisdomHook)
    built = build_hook({"name": "visdom", "server": "http://localhost", "port": 1, "title_suffix": " (run 3)"})
    assert isinstance(built, VisdomHook) and built.title_suffix == " (run 3)"
    for port in ["$VISDOM_PORT", "", 0, 70000, 8097.0, True]:
        with pytest.raises(HookConfigError, match="VisdomHook: argument 'port'"):
            VisdomHook("http://127.0.0.1", port)
    with pytest.raises(HookConfigError, match="argument 'server' must be a URL"):
        VisdomHook("127.0.0.1", 8097)
    with pytest.raises(HookConfigError, match="argument 'env'"):
        VisdomHook("http://127.0.0.1", 8097, env="")
    with pytest.raises(HookConfigError, match="missing required key 'port'"):
        build_hook({"name": "visdom", "server": "http://127.0.0.1"})


def test_an_unreachable_server_is_a_clear_error_at_on_start() -> None:
    port = free_port()  # nothing listens there
    hook = VisdomHook("http://127.0.0.1", port)
    with pytest.raises(ConnectionError, match=rf"VisdomHook: arguments 'server'/'port': no Visdom server .*:{port}"):
        hook.on_start(make_task())


@pytest.mark.slow
def test_plots_every_phase_and_curves_of_different_lengths(shared_visdom_server: VisdomServer) -> None:
    recorder = PhaseRecorder()
    hook = VisdomHook("http://127.0.0.1", shared_visdom_server.port, env="curves", title_suffix=" [tiny]")
    make_task([hook, recorder], num_epochs=3, test_phase_period=2).run()  # test only after epoch 2 (index 1)
    loss = shared_visdom_server.lines(hook.window_id("loss"), "curves")
    train = [p for p in recorder.phases if p["type"] == "train"]
    test = [p for p in recorder.phases if p["type"] == "test"]
    assert [x for x, _ in loss["train"]] == [0, 1, 2] and [x for x, _ in loss["test"]] == [1]
    assert [y for _, y in loss["train"]] == pytest.approx([p["loss"] for p in train])
    assert [y for _, y in loss["test"]] == pytest.approx([p["loss"] for p in test])
    lr = shared_visdom_server.lines(hook.window_id("learning_rate"), "curves")
    assert [y for _, y in lr["lr"]] == pytest.approx([p["lr"] for p in train])
    top1 = shared_visdom_server.lines(hook.window_id("accuracy_top_1"), "curves")
    assert [y for _, y in top1["test"]] == pytest.approx([test[0]["meters"]["accuracy"]["top_1"]])
    window = shared_visdom_server.window(hook.window_id("loss"), "curves")
    assert window["title"] == "loss [tiny]"
    assert hook.state.metrics["loss"]["train"] == [[float(x), y] for x, y in loss["train"]]
    assert (shared_visdom_server.env_path / "curves.json").exists()  # on_end had the server save the env


@pytest.mark.slow
def test_a_test_only_run_without_optimizer_plots_losses(shared_visdom_server: VisdomServer) -> None:
    hook = VisdomHook("http://127.0.0.1", shared_visdom_server.port, env="test_only")
    make_task([hook], test_only=True).run()
    assert list(shared_visdom_server.lines(hook.window_id("loss"), "test_only")) == ["test"]
    assert "learning_rate" not in hook.state.metrics


@pytest.mark.slow
def test_a_resumed_run_redraws_from_its_state_without_points_from_after_the_checkpoint(
    shared_visdom_server: VisdomServer,
) -> None:
    recorder = PhaseRecorder(snapshot_after_phase=1)  # state after epoch 0 and its test phase
    make_task([VisdomHook("http://127.0.0.1", shared_visdom_server.port, env="resume"), recorder], num_epochs=2).run()
    hook = VisdomHook("http://127.0.0.1", shared_visdom_server.port, env="resume")
    task = make_task([hook, PhaseRecorder()], num_epochs=2)
    assert recorder.snapshot is not None
    task.set_classy_state(recorder.snapshot)
    task.run()
    loss = shared_visdom_server.lines(hook.window_id("loss"), "resume")
    assert [x for x, _ in loss["train"]] == [0, 1] and [x for x, _ in loss["test"]] == [0, 1]
    expected = [p["loss"] for p in recorder.phases]
    assert [y for _, y in loss["train"]] == pytest.approx(expected[0::2], rel=1e-4)
    assert [y for _, y in loss["test"]] == pytest.approx(expected[1::2], rel=1e-4)
    buffer = io.BytesIO()  # the history is plain data: it loads with weights_only
    torch.save(hook.get_classy_state(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["metrics"]["loss"]["train"][0][0] == 0.0


class KillServerAfterPhase(ClassyHook):
    """Test hook: kills the Visdom server at the end of the given phase (after VisdomHook ran)."""

    def __init__(self, server: VisdomServer, phase_idx: int) -> None:
        super().__init__()
        self.server, self.phase_idx = server, phase_idx

    on_start = on_phase_start = on_step = on_end = ClassyHook._noop

    def on_phase_end(self, task: Any) -> None:
        if task.phase_idx == self.phase_idx:
            self.server.stop()


@pytest.mark.slow
def test_a_server_that_goes_away_mid_run_costs_one_warning_and_training_finishes(
    visdom_server: VisdomServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    hook = VisdomHook("http://127.0.0.1", visdom_server.port, env="killed")
    recorder = PhaseRecorder()
    task = make_task([hook, KillServerAfterPhase(visdom_server, phase_idx=1), recorder], num_epochs=3)
    task.run()  # must not raise
    assert len(recorder.phases) == 6  # every phase ran
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "lost the Visdom server" in warnings[0]
    assert len(hook.state.metrics["loss"]["train"]) == 3  # the history is still complete


@pytest.mark.slow
def test_learning_rate_is_the_phase_own_when_the_schedule_steps_before_phase_end(
    shared_visdom_server: VisdomServer,
) -> None:
    """Classy Vision's order (epoch schedule stepped before `on_phase_end`): no shift by one phase."""
    hook = VisdomHook("http://127.0.0.1", shared_visdom_server.port, env="epoch_schedule")
    run_epoch_schedule_loop([hook])
    lr = shared_visdom_server.lines(hook.window_id("learning_rate"), "epoch_schedule")
    assert [x for x, _ in lr["lr"]] == [0, 1, 2]
    assert [y for _, y in lr["lr"]] == pytest.approx(EPOCH_SCHEDULE_LRS)


def test_a_server_that_accepts_but_never_answers_is_a_clear_error_within_the_request_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every request has a timeout (visdom sends without one): a hung server cannot block on_start or the sender."""
    monkeypatch.setattr(visdom_hook, "REQUEST_TIMEOUT", 0.5)
    with socket.socket() as listener:  # a real TCP server on 127.0.0.1 that accepts and then says nothing
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        hook = VisdomHook("http://127.0.0.1", port)
        start = time.monotonic()
        expected = rf"VisdomHook: arguments 'server'/'port': .*:{port} \(the server did not answer\)"
        with pytest.raises(ConnectionError, match=expected):
            hook.on_start(make_task())
        assert time.monotonic() - start < 20.0  # without the timeout it would wait forever


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----

@pytest.mark.parametrize(
    ("config", "argument", "fix"),
    [
        pytest.param({"server": "http://127.0.0.1", "port": 70000}, "port", "Pass the port the Visdom server listens on", id="port-out-of-range"),
        pytest.param({"server": "localhost", "port": 8097}, "server", 'Pass e.g. "http://127.0.0.1"', id="server-without-scheme"),
    ],
)
def test_bad_config_is_reported_by_the_constructor(config: dict[str, Any], argument: str, fix: str) -> None:
    with pytest.raises(HookConfigError) as info:
        build_hook({"name": "visdom", **config})
    assert_reported(info.value, HookConfigError, ("VisdomHook", argument, fix))


def test_unreachable_server_is_reported_at_on_start() -> None:
    port = free_port()
    task = make_task([build_hook({"name": "visdom", "server": "http://127.0.0.1", "port": port})])
    with pytest.raises(HookConfigError) as info:
        task.run()
    assert isinstance(info.value, ConnectionError)  # callers catching ConnectionError still do
    assert_reported(info.value, HookConfigError, ("VisdomHook", "server", "port", str(port), "Start one"))
    assert task.num_updates == 0


def test_task_without_optimizer_is_reported_at_on_start() -> None:
    task = make_task([build_hook({"name": "visdom", "server": "http://127.0.0.1", "port": free_port()})])
    del task.optimizer
    with pytest.raises(TaskContractError) as info:
        task.run()
    assert_reported(info.value, TaskContractError, ("VisdomHook", "optimizer", "Add them to your task"))
    assert task.num_updates == 0
