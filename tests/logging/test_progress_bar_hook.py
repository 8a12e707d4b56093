"""ProgressBarHook: a real tqdm bar on a terminal (a pty), a few log lines otherwise."""

from __future__ import annotations

import io
import logging
import os
import pty
import sys
import threading
from types import SimpleNamespace

import pytest

from bad_input import assert_reported
from classy_hooks.core import HookConfigError, TaskContractError, build_hook
from classy_hooks.logging import ProgressBarHook
from helpers import make_task

LOGGER = "classy_hooks.logging.progress_bar_hook"


def test_constructors_and_bad_config() -> None:
    assert isinstance(ProgressBarHook(), ProgressBarHook)
    assert isinstance(ProgressBarHook.from_config({}), ProgressBarHook)
    assert isinstance(build_hook({"name": "progress_bar"}), ProgressBarHook)
    with pytest.raises(HookConfigError, match="unknown key 'size'"):
        build_hook({"name": "progress_bar", "size": 3})


def test_not_a_terminal_gives_at_most_four_lines_per_phase(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    stderr = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", stderr)
    make_task([ProgressBarHook()], num_epochs=2).run()  # 8 train, 4 test batches per phase
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    train0 = [m for m in lines if m.startswith("train phase 0:")]
    test1 = [m for m in lines if m.startswith("test phase 1:")]
    assert len(lines) == 4 * 4  # 4 phases (train, test, train, test), 25/50/75/100 % each
    assert [m.split()[3] for m in train0] == ["25%", "50%", "75%", "100%"]
    assert "8/8" in train0[-1] and "4/4" in test1[-1]
    assert stderr.getvalue() == ""  # no bar redraws in a log file


def test_on_a_terminal_a_tqdm_bar_advances_per_batch_for_train_and_test(monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with os.fdopen(slave, "w", buffering=1) as terminal:
        assert terminal.isatty()
        monkeypatch.setattr(sys, "stderr", terminal)
        hook = ProgressBarHook()
        task = make_task([hook], num_epochs=1)  # 8 train batches, 4 test batches
        task.run()
        terminal.flush()
        assert hook.progress_bar is None  # closed at phase end
    reader.join(timeout=5)
    os.close(master)
    out = b"".join(chunks).decode(errors="replace")
    assert "train phase 0" in out and "8/8" in out
    assert "test phase 1" in out and "4/4" in out
    assert "\r" in out  # redrawn in place


def test_nothing_happens_without_on_phase_start() -> None:
    hook = ProgressBarHook()
    task = make_task()
    hook.on_step(task)
    hook.on_phase_end(task)
    assert hook.progress_bar is None and hook.batches == 0


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----

def test_unknown_config_key_is_reported_by_build_hook() -> None:
    with pytest.raises(HookConfigError) as info:
        build_hook({"name": "progress_bar", "refresh_rate": 1})
    assert_reported(info.value, HookConfigError, ("ProgressBarHook", "refresh_rate", "Remove it"))


def test_task_without_num_batches_per_phase_is_reported_at_on_start() -> None:
    with pytest.raises(TaskContractError) as info:
        build_hook({"name": "progress_bar"}).on_start(SimpleNamespace(phase_type="train", phase_idx=0))
    assert_reported(info.value, TaskContractError, ("ProgressBarHook", "num_batches_per_phase", "Add them to your task"))
