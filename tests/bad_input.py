"""Shared checks for bad-input tests: errors are documented classy-hooks classes naming hook, argument and fix;
warnings name the hook and training goes on. Torch-free: core's tests use it too."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pytest


def assert_reported(exc: BaseException, expected: type[BaseException], mentions: Iterable[str]) -> None:
    """`exc` is an `expected` defined by classy-hooks (never a bare builtin) and its message holds every mention."""
    message = str(exc)
    assert isinstance(exc, expected), f"expected {expected.__name__}, got {type(exc).__name__}: {message}"
    assert type(exc).__module__.startswith("classy_hooks."), f"a bare {type(exc).__name__} escaped: {message}"
    for word in mentions:
        assert word in message, f"the message does not mention {word!r}: {message}"


def run_to_the_end_and_warnings(task: Any, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Run a reference task to its last phase (a warning must not stop training) and return its warnings."""
    caplog.set_level(logging.INFO)
    task.run()
    assert task.phase_idx == len(task.phases) - 1, "training did not run to its last phase"
    assert task.num_updates == task.num_train_phases * 128, "training did not run every step"
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def assert_warned(warnings: list[str], mentions: Iterable[str]) -> None:
    """One of the warnings holds every mention (hook, argument, what happens instead or what to do)."""
    mentions = tuple(mentions)
    assert any(all(word in w for word in mentions) for w in warnings), f"no warning with {mentions}: {warnings}"
