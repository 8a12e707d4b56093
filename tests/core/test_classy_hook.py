"""ClassyHook: state round trip with update semantics, name(), _noop, from_config checks, task checks."""

from __future__ import annotations

import pytest

from classy_hooks.core import ClassyHook, ClassyHookFunctions, HookConfigError, TaskContractError


class CounterHook(ClassyHook):
    task_attributes = ("train", "losses")
    on_phase_start = ClassyHook._noop
    on_phase_end = ClassyHook._noop
    on_end = ClassyHook._noop

    def __init__(self, start: int, step: int = 1) -> None:
        super().__init__()
        self.state.count = start
        self.step = step

    def on_start(self, task: object) -> None:
        self.check_task(task)

    def on_step(self, task: object) -> None:
        self.state.count += self.step


class CounterHookWithNewField(CounterHook):
    def __init__(self, start: int, step: int = 1) -> None:
        super().__init__(start, step)
        self.state.history = []


def test_hook_functions_are_the_five_events_in_call_order() -> None:
    assert [f.value for f in ClassyHookFunctions] == ["on_start", "on_phase_start", "on_step", "on_phase_end", "on_end"]


def test_state_round_trips_into_a_fresh_hook() -> None:
    hook = CounterHook(3)
    hook.on_step(object())
    fresh = CounterHook(0)
    fresh.set_classy_state(hook.get_classy_state())
    assert fresh.get_classy_state() == {"count": 4}


def test_get_classy_state_is_a_copy_not_a_live_reference() -> None:
    hook = CounterHook(1)
    state = hook.get_classy_state()
    state["count"] = 99
    assert hook.state.count == 1


def test_old_checkpoint_loads_into_a_hook_that_gained_a_field() -> None:
    old_state = CounterHook(7).get_classy_state()
    newer = CounterHookWithNewField(0)
    newer.set_classy_state(old_state)
    assert newer.get_classy_state() == {"count": 7, "history": []}


def test_name_is_the_class_name_and_noop_does_nothing() -> None:
    hook = CounterHook(0)
    assert CounterHook.name() == "CounterHook" == hook.state_key()
    assert hook.on_end(object()) is None


def test_hook_with_an_abstract_function_left_out_cannot_be_built() -> None:
    class Incomplete(ClassyHook):
        on_start = on_phase_start = on_step = on_phase_end = ClassyHook._noop

    with pytest.raises(TypeError, match="on_end"):
        Incomplete()  # type: ignore[abstract]


def test_from_config_builds_with_known_keys() -> None:
    hook = CounterHook.from_config({"start": 2, "step": 5})
    assert isinstance(hook, CounterHook)
    assert (hook.state.count, hook.step) == (2, 5)


def test_from_config_unknown_key_names_hook_key_and_close_match() -> None:
    with pytest.raises(HookConfigError, match=r"CounterHook: config has unknown key 'stpe'.*Did you mean 'step'"):
        CounterHook.from_config({"start": 1, "stpe": 2})


def test_from_config_missing_key_names_hook_and_key() -> None:
    with pytest.raises(HookConfigError, match=r"CounterHook: config is missing required key 'start'"):
        CounterHook.from_config({"step": 2})


def test_from_config_rejects_a_non_dict() -> None:
    with pytest.raises(HookConfigError, match="must be a dict"):
        CounterHook.from_config(["start", 1])  # type: ignore[arg-type]


def test_config_errors_are_value_errors() -> None:
    assert issubclass(HookConfigError, ValueError)


def test_check_task_names_the_hook_and_the_missing_attributes() -> None:
    class NoLosses:
        train = True

    with pytest.raises(
        TaskContractError, match=r"CounterHook: the task \(NoLosses\) has no attribute\(s\) \['losses'\]"
    ):
        CounterHook(0).on_start(NoLosses())
