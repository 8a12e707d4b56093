"""Calling events on a hook list and saving/restoring hook states under collision-free keys."""

from __future__ import annotations

import logging

import pytest

from classy_hooks.core import (
    ClassyHook,
    ClassyHookFunctions,
    HookConfigError,
    build_hooks,
    call_hooks,
    check_hooks,
    get_hooks_state,
    register_hook,
    set_hooks_state,
    state_keys,
)
from classy_hooks.core.hook_list import RUNS_LAST, ordered_hooks, warn_if_out_of_order


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


class _Recorder(ClassyHook):
    on_phase_start = on_step = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, label: str, calls: list[str]) -> None:
        super().__init__()
        self.label = label
        self.calls = calls

    def on_start(self, task: object) -> None:
        self.calls.append(self.label)


class _Last(_Recorder):
    order = RUNS_LAST


class _Early(_Recorder):
    order = -1


def test_call_hooks_runs_hooks_in_declared_order_then_list_order() -> None:
    calls: list[str] = []
    hooks = [_Last("last", calls), _Recorder("a", calls), _Early("early", calls), _Recorder("b", calls)]
    call_hooks(hooks, "on_start", object())
    assert calls == ["early", "a", "b", "last"]
    assert [h.label for h in hooks] == ["last", "a", "early", "b"]  # the caller's list is left as it is
    assert [h.label for h in ordered_hooks(hooks)] == calls


def test_build_hooks_returns_hooks_in_declared_order() -> None:
    register_hook("test_hook_list_runs_last")(type("HookListRunsLast", (_Last,), {}))
    register_hook("test_hook_list_plain")(type("HookListPlain", (_Recorder,), {}))
    built = build_hooks(
        [
            {"name": "test_hook_list_runs_last", "label": "last", "calls": []},
            {"name": "test_hook_list_plain", "label": "first", "calls": []},
            {"name": "test_hook_list_plain", "label": "second", "calls": []},
        ]
    )
    assert [h.label for h in built] == ["first", "second", "last"]  # type: ignore[attr-defined]


def test_a_loop_iterating_its_own_list_out_of_order_is_warned_not_reordered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    last, plain = _Last("last", calls), _Recorder("plain", calls)
    hooks = [last, plain]
    with caplog.at_level(logging.WARNING):
        assert warn_if_out_of_order(last, hooks)  # a hand-written `for hook in hooks: hook.on_start(task)`
    assert hooks == [last, plain]
    assert "_Last: the loop calls task.hooks in the order ['_Last', '_Recorder']" in caplog.text
    assert "declare ['_Recorder', '_Last']" in caplog.text and "call_hooks" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert not warn_if_out_of_order(last, [plain, last])  # in order
        assert not warn_if_out_of_order(last, None)  # no task.hooks: nothing to check

        class _Checks(_Recorder):
            def on_start(self, task: object) -> None:
                calls.append(str(warn_if_out_of_order(self, hooks)))

        hooks = [last, _Checks("checks", calls)]
        call_hooks(hooks, "on_start", object())  # call_hooks applies the order itself: no warning
    assert calls[-2:] == ["False", "last"] and caplog.text == ""
