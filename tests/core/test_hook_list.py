"""Calling events on a hook list and saving/restoring hook states under collision-free keys."""

from __future__ import annotations

import logging

import pytest

from classy_hooks.core import (
    ClassyHook,
    ClassyHookFunctions,
    HookConfigError,
    call_hooks,
    check_hooks,
    get_hooks_state,
    set_hooks_state,
    state_keys,
)


class FolderHook(ClassyHook):
    on_start = on_phase_start = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.state.folder = folder
        self.state.steps = 0

    def on_step(self, task: object) -> None:
        self.state.steps += 1


class OtherHook(FolderHook):
    pass


def test_call_hooks_calls_each_hook_in_order() -> None:
    calls: list[str] = []

    class Recorder(ClassyHook):
        on_phase_start = on_step = on_phase_end = on_end = ClassyHook._noop

        def __init__(self, label: str) -> None:
            super().__init__()
            self.label = label

        def on_start(self, task: object) -> None:
            calls.append(self.label)

    call_hooks([Recorder("a"), Recorder("b")], ClassyHookFunctions.on_start, object())
    call_hooks([Recorder("c")], "on_start", object())
    assert calls == ["a", "b", "c"]


def test_two_hooks_of_one_class_get_distinct_keys() -> None:
    hooks = [FolderHook("a"), OtherHook("x"), FolderHook("b")]
    assert state_keys(hooks) == ["FolderHook", "OtherHook", "FolderHook#2"]


def test_states_of_same_class_hooks_do_not_collide() -> None:
    first, second = FolderHook("a"), FolderHook("b")
    second.on_step(None)
    saved = get_hooks_state([first, second])
    restored = [FolderHook("?"), FolderHook("?")]
    set_hooks_state(restored, saved)
    assert [h.get_classy_state() for h in restored] == [{"folder": "a", "steps": 0}, {"folder": "b", "steps": 1}]


def test_classy_vision_class_name_keys_still_load() -> None:
    hook = FolderHook("new")
    set_hooks_state([OtherHook("o"), hook], {"FolderHook": {"folder": "old", "steps": 9}})
    assert hook.get_classy_state() == {"folder": "old", "steps": 9}


def test_hook_without_saved_state_keeps_its_own_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    hook = FolderHook("mine")
    with caplog.at_level(logging.WARNING):
        set_hooks_state([hook], {})
    assert hook.get_classy_state() == {"folder": "mine", "steps": 0}
    assert "No saved state for hook FolderHook" in caplog.text


def test_check_hooks_rejects_non_hooks() -> None:
    with pytest.raises(HookConfigError, match=r"hooks\[1\] is a dict, not a ClassyHook"):
        check_hooks([FolderHook("a"), {"name": "checkpoint"}])
