"""`ClassyHook`, the base class of every hook, and `ClassyHookState`, the home of its checkpointed state."""

from __future__ import annotations

import abc
import inspect
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from classy_hooks.core.config import check_config_keys, constructor_arguments
from classy_hooks.core.errors import TaskContractError
from classy_hooks.core.task import Task


def has_task_attribute(task: Any, name: str) -> bool:
    """True if `task` has attribute `name`, found without running a property or descriptor.

    Looks in the instance and class dicts (`inspect.getattr_static`). Only for a class that computes
    attributes in `__getattr__` is the attribute read, and then any error but `AttributeError` means
    "present" (the value exists but cannot be computed yet), never an unrelated exception.
    """
    try:
        inspect.getattr_static(task, name)
        return True
    except AttributeError:
        pass
    if inspect.getattr_static(type(task), "__getattr__", None) is None:
        return False
    try:
        getattr(task, name)
    except AttributeError:
        return False
    except Exception:
        return True
    return True


class ClassyHookState:
    """Attribute bag for a hook's state; only what is stored here goes into checkpoints."""

    def get_classy_state(self) -> dict[str, Any]:
        """Return a shallow copy of the state fields."""
        return dict(self.__dict__)

    def set_classy_state(self, state_dict: Mapping[str, Any]) -> None:
        """Update (not replace) the fields, so an old checkpoint loads into a hook that gained a field."""
        self.__dict__.update(state_dict)

    def __repr__(self) -> str:
        return f"ClassyHookState({self.__dict__!r})"


class ClassyHook(abc.ABC):
    """Base class for hooks: the training loop calls the five `on_*` functions with the task.

    Subclasses set unused hook functions to `ClassyHook._noop` and keep everything that must
    survive a resume on `self.state`.
    """

    #: Task attributes this hook reads; `check_task` verifies them (call it from `on_start`).
    task_attributes: ClassVar[tuple[str, ...]] = ()

    #: When the hook acts relative to the others: `call_hooks` and `build_hooks` run hooks in ascending
    #: `order`, equal orders in list order. 0 by default; CheckpointHook declares `RUNS_LAST` (saves after the rest).
    order: ClassVar[int] = 0

    def __init__(self) -> None:
        self.state = ClassyHookState()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ClassyHook:
        """Build the hook from a config dict; unknown or missing keys are a `HookConfigError`."""
        required, optional, accepts_any = constructor_arguments(cls)
        check_config_keys(cls.name(), config, required, optional, accepts_any)
        return cls(**config)

    @classmethod
    def name(cls) -> str:
        """The hook's name in logs and the default key of its checkpointed state: the class name."""
        return cls.__name__

    def state_key(self) -> str:
        """Key under which this hook's state is stored; `name()` unless a hook needs more detail."""
        return self.name()

    def _noop(self, *args: Any, **kwargs: Any) -> None:  # noqa: B027 - deliberately empty, not abstract
        """Stand-in for hook functions a hook does not use."""

    def check_task(self, task: Task, attributes: Iterable[str] | None = None) -> None:
        """Raise `TaskContractError` if `task` lacks any of the attributes this hook reads.

        Presence is checked without evaluating anything (`has_task_attribute`): a property that is
        only valid later, e.g. ClassificationTask's `num_batches_per_phase` before the first phase, is present.
        """
        names = self.task_attributes if attributes is None else tuple(attributes)
        missing = [a for a in names if not has_task_attribute(task, a)]
        if missing:
            raise TaskContractError(
                f"{self.name()}: the task ({type(task).__name__}) has no attribute(s) {missing}, "
                f"which this hook reads. Add them to your task; classy_hooks.core.Task documents each one."
            )

    def get_classy_state(self) -> dict[str, Any]:
        """Return the hook's state as a plain dict (what checkpoints store)."""
        return self.state.get_classy_state()

    def set_classy_state(self, state_dict: Mapping[str, Any]) -> None:
        """Restore state saved by `get_classy_state`, keeping fields the checkpoint does not have."""
        self.state.set_classy_state(state_dict)

    @abc.abstractmethod
    def on_start(self, task: Task) -> None:
        """Called once before the first phase, after any checkpoint has been restored."""

    @abc.abstractmethod
    def on_phase_start(self, task: Task) -> None:
        """Called at the start of each phase, after the task has advanced to it."""

    @abc.abstractmethod
    def on_step(self, task: Task) -> None:
        """Called after each batch (train or test) with `task.last_batch` filled in."""

    @abc.abstractmethod
    def on_phase_end(self, task: Task) -> None:
        """Called at the end of each phase, after losses and meters were synced across ranks."""

    @abc.abstractmethod
    def on_end(self, task: Task) -> None:
        """Called once after the last phase."""
