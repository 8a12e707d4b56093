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


class ClassificationTaskLike:
    """A task whose `num_batches_per_phase` is only valid once a phase has started, as in Classy Vision."""

    train = True

    def __init__(self) -> None:
        self.data_iterator = None
        self.evaluated = 0

    @property
    def losses(self) -> list[float]:
        self.evaluated += 1
        return []

    @property
    def num_batches_per_phase(self) -> int:
        self.evaluated += 1
        return len(self.data_iterator)  # type: ignore[arg-type]  # TypeError before the first phase


def test_check_task_never_evaluates_a_property() -> None:
    task = ClassificationTaskLike()
    CounterHook(0).check_task(task, ["train", "losses", "num_batches_per_phase"])
    assert task.evaluated == 0


def test_a_property_that_raises_is_present_not_missing_nor_an_unrelated_error() -> None:
    class RaisingProperties:
        @property
        def train(self) -> bool:
            raise AttributeError("not set up yet")

        @property
        def losses(self) -> list[float]:
            raise TypeError("not valid before the first phase")

    CounterHook(0).on_start(RaisingProperties())


def test_check_task_sees_instance_slot_and_inherited_attributes() -> None:
    class Base:
        train = False

    class Slotted(Base):
        __slots__ = ("losses",)

        def __init__(self) -> None:
            self.losses: list[float] = []

    CounterHook(0).on_start(Slotted())


def test_check_task_asks_a_dynamic_task_and_an_error_there_means_present() -> None:
    class Forwarding:
        """Forwards attribute reads to a wrapped task, the way a proxy does."""

        def __init__(self, inner: object) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

    hook = CounterHook(0)
    hook.check_task(Forwarding(ClassificationTaskLike()), ["train", "num_batches_per_phase"])
    with pytest.raises(TaskContractError, match=r"has no attribute\(s\) \['phase_idx'\]"):
        hook.check_task(Forwarding(ClassificationTaskLike()), ["train", "phase_idx"])


def test_check_task_still_reports_what_is_really_missing() -> None:
    with pytest.raises(TaskContractError, match=r"\['losses', 'phase_idx'\]"):
        CounterHook(0).check_task(type("Bare", (), {"train": True})(), ["train", "losses", "phase_idx"])
