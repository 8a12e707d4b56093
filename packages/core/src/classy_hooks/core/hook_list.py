"""Operations on a task's list of hooks: calling an event on all of them in their declared order, checking that
order, saving and restoring their state."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from classy_hooks.core.classy_hook import ClassyHook
from classy_hooks.core.constants import ClassyHookFunctions
from classy_hooks.core.errors import HookConfigError
from classy_hooks.core.task import Task

logger = logging.getLogger(__name__)

#: The `order` of a hook that must act after every other hook of an event (CheckpointHook: its save captures
#: what the others did in `on_phase_end`, e.g. precise BatchNorm's statistics).
RUNS_LAST = 100

_dispatching = threading.local()  # `.active` is True while call_hooks runs an event (which applies the order)


def _order(hook: Any) -> int:
    return int(getattr(hook, "order", 0))


def ordered_hooks(hooks: Sequence[ClassyHook]) -> list[ClassyHook]:
    """`hooks` in the order they act: ascending `ClassyHook.order`, and list order among equal orders."""
    return sorted(hooks, key=_order)


def call_hooks(hooks: Sequence[ClassyHook], function: ClassyHookFunctions | str, task: Task) -> None:
    """Call one hook function (e.g. `on_step`) on every hook: in declared `order`, then in list order."""
    name = ClassyHookFunctions(function).value
    was_active = getattr(_dispatching, "active", False)
    _dispatching.active = True
    try:
        for hook in ordered_hooks(hooks):
            getattr(hook, name)(task)
    finally:
        _dispatching.active = was_active


def warn_if_out_of_order(hook: ClassyHook, hooks: Any) -> bool:
    """Warn if a loop calls `hooks` itself (not through `call_hooks`) in an order their `order`s forbid.

    For a hook whose place matters: CheckpointHook calls it from `on_start` (so once per run) with
    `task.hooks`. Nothing is reordered: the loop owns its list. Returns True when it warned.
    """
    if getattr(_dispatching, "active", False) or not isinstance(hooks, (list, tuple)):
        return False  # call_hooks applies the declared order itself; nothing known about other containers
    if list(hooks) == ordered_hooks(hooks):
        return False
    names = [type(h).__name__ for h in hooks]
    logger.warning(
        "%s: the loop calls task.hooks in the order %s, but the hooks declare %s (ClassyHook.order). "
        "Call hook functions with classy_hooks.core.call_hooks, or iterate ordered_hooks(hooks).",
        hook.name(),
        names,
        [type(h).__name__ for h in ordered_hooks(hooks)],
    )
    return True


def check_hooks(hooks: Sequence[Any]) -> list[ClassyHook]:
    """Return `hooks` as a list, raising a clear error if an element is not a `ClassyHook`."""
    out = list(hooks)
    for i, hook in enumerate(out):
        if not isinstance(hook, ClassyHook):
            raise HookConfigError(
                f"hooks[{i}] is a {type(hook).__name__}, not a ClassyHook. "
                "Build hooks with build_hook(...) or subclass classy_hooks.core.ClassyHook."
            )
    return out


def state_keys(hooks: Sequence[ClassyHook]) -> list[str]:
    """Unique state keys, one per hook: `state_key()`, with `#2`, `#3`... for later duplicates."""
    seen: Counter[str] = Counter()
    keys = []
    for hook in hooks:
        base = hook.state_key()
        seen[base] += 1
        keys.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return keys


def get_hooks_state(hooks: Sequence[ClassyHook]) -> dict[str, dict[str, Any]]:
    """Gather every hook's state under collision-free keys (the `hooks` entry of a task state)."""
    return {key: hook.get_classy_state() for key, hook in zip(state_keys(hooks), hooks)}


def set_hooks_state(hooks: Sequence[ClassyHook], states: Mapping[str, Mapping[str, Any]]) -> None:
    """Restore hook states saved by `get_hooks_state`.

    A hook is matched by its key; failing that, by its class name when exactly one hook has that
    class (the layout Classy Vision checkpoints use). Hooks with no saved state keep their own.
    """
    class_counts = Counter(hook.name() for hook in hooks)
    for key, hook in zip(state_keys(hooks), hooks):
        if key in states:
            hook.set_classy_state(states[key])
        elif class_counts[hook.name()] == 1 and hook.name() in states:
            hook.set_classy_state(states[hook.name()])
        else:
            logger.warning("No saved state for hook %s (key %r); it starts fresh.", hook.name(), key)
