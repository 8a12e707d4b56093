"""The hook registry: `register_hook`, `build_hook`, and lookup of hooks through entry points.

Names not registered in this process are looked up in the entry-point group `classy_hooks.hooks`
and only the requested hook's module is imported, so `build_hook({"name": "checkpoint"})` works
without importing `classy_hooks.model` first.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from classy_hooks.core.classy_hook import ClassyHook
from classy_hooks.core.errors import HookConfigError, UnknownHookError
from classy_hooks.core.hook_list import ordered_hooks

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

ENTRY_POINT_GROUP = "classy_hooks.hooks"

#: First-party hook names and the distribution that provides each (for the install hint).
KNOWN_HOOKS: Mapping[str, str] = {
    "checkpoint": "classy-hooks-model",
    "ema_model_weights": "classy-hooks-model",
    "precise_bn": "classy-hooks-model",
    "loss_lr_meter_logging": "classy-hooks-logging",
    "progress_bar": "classy-hooks-logging",
    "tensorboard_plot": "classy-hooks-logging",
    "model_tensorboard": "classy-hooks-logging",
    "visdom": "classy-hooks-logging",
    "model_complexity": "classy-hooks-logging",
    "profiler": "classy-hooks-logging",
    "torchscript": "classy-hooks-export",
    "output_csv": "classy-hooks-export",
    "torch_export": "classy-hooks-export",
}

HOOK_REGISTRY: dict[str, type[ClassyHook]] = {}
_REGISTERED_AT: dict[str, str] = {}
_CLASS_NAMES: dict[str, str] = {}  # class name -> registry name

H = TypeVar("H", bound=type)


def register_hook(name: str, bypass_checks: bool = False) -> Callable[[H], H]:
    """Class decorator registering a `ClassyHook` subclass under `name`.

    A duplicate name, a class that is not a `ClassyHook`, or a class name already registered under
    another name is a `ValueError` that shows where the first registration happened.
    `bypass_checks=True` skips those checks and overwrites (for module reloads in notebooks).
    """

    def decorate(cls: H) -> H:
        import traceback  # deferred: only registration needs it

        where = "".join(traceback.format_stack(limit=2)[:-1])
        if not bypass_checks:
            if name in HOOK_REGISTRY:
                raise HookConfigError(
                    f"register_hook: the name '{name}' is already registered to "
                    f"{HOOK_REGISTRY[name].__qualname__}, first registered at:\n{_REGISTERED_AT[name]}"
                    "Pick another name, or pass bypass_checks=True when re-importing a module."
                )
            if not (isinstance(cls, type) and issubclass(cls, ClassyHook)):
                raise HookConfigError(
                    f"register_hook('{name}'): {cls!r} is not a subclass of ClassyHook. Only hooks can be registered."
                )
            if cls.__name__ in _CLASS_NAMES:
                first = _CLASS_NAMES[cls.__name__]
                raise HookConfigError(
                    f"register_hook('{name}'): a class named {cls.__name__} is already registered as "
                    f"'{first}', first registered at:\n{_REGISTERED_AT[first]}"
                    "Hook states are keyed by class name, so class names must be unique; rename the class."
                )
        HOOK_REGISTRY[name] = cls
        _REGISTERED_AT[name] = where
        _CLASS_NAMES[cls.__name__] = name
        return cls

    return decorate


def _entry_points() -> dict[str, EntryPoint]:
    # imported here: importlib.metadata costs ~40 ms, paid only when a name is not registered yet
    from importlib.metadata import entry_points

    if sys.version_info >= (3, 10):
        found: Iterable[EntryPoint] = entry_points(group=ENTRY_POINT_GROUP)
    else:  # Python 3.9: entry_points() takes no argument and maps each group to its entry points
        found = entry_points().get(ENTRY_POINT_GROUP, ())
    return {ep.name: ep for ep in found}


def get_hook_class(name: str) -> type[ClassyHook]:
    """Find the hook class registered as `name`, loading it from its entry point if needed."""
    if name in HOOK_REGISTRY:
        return HOOK_REGISTRY[name]
    entry_points = _entry_points()
    if name in entry_points:
        loaded = entry_points[name].load()
        if name in HOOK_REGISTRY:
            return HOOK_REGISTRY[name]
        if isinstance(loaded, type) and issubclass(loaded, ClassyHook):
            return loaded
        raise UnknownHookError(
            f"build_hook: entry point '{name}' in group '{ENTRY_POINT_GROUP}' points to {loaded!r}, "
            "which is not a ClassyHook subclass. Fix the entry point in that package's metadata."
        )
    raise UnknownHookError(_unknown_name_message(name, set(HOOK_REGISTRY) | set(entry_points)))


def _unknown_name_message(name: str, available: set[str]) -> str:
    if name in KNOWN_HOOKS:
        dist = KNOWN_HOOKS[name]
        return (
            f"build_hook: the hook '{name}' is provided by {dist}, which is not installed. "
            f"Install it with: pip install {dist}"
        )
    import difflib

    candidates = sorted(available | set(KNOWN_HOOKS))
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"build_hook: no hook is registered under the name '{name}'.{hint} "
        f"Available: {sorted(available) or 'none'}. A hook of your own must be decorated with "
        f"@register_hook('{name}') and its module imported, or declared in the "
        f"'{ENTRY_POINT_GROUP}' entry-point group."
    )


def build_hook(hook_config: Mapping[str, Any]) -> ClassyHook:
    """Build one hook from `{"name": <registered name>, **constructor_arguments}`."""
    if not isinstance(hook_config, Mapping):
        raise HookConfigError(
            f"build_hook: a hook config must be a dict like {{'name': 'checkpoint', ...}}, "
            f"got {type(hook_config).__name__}. Pass one dict per hook."
        )
    if "name" not in hook_config:
        raise HookConfigError(
            f"build_hook: the config {dict(hook_config)!r} has no 'name' key. "
            "Add the registered hook name, e.g. {'name': 'checkpoint', ...}."
        )
    config = copy.deepcopy(dict(hook_config))
    name = config.pop("name")
    if not isinstance(name, str):
        raise HookConfigError(
            f"build_hook: 'name' must be a string, got {name!r}. Pass the registered hook name, e.g. 'checkpoint'."
        )
    return get_hook_class(name).from_config(config)


def build_hooks(hook_configs: Sequence[Mapping[str, Any]]) -> list[ClassyHook]:
    """Build a list of hooks, one per config, in the order they act (`ClassyHook.order`, then config order)."""
    if isinstance(hook_configs, (str, bytes, Mapping)) or not isinstance(hook_configs, Sequence):
        raise HookConfigError(f"build_hooks: expected a list of hook configs, got {type(hook_configs).__name__}.")
    return ordered_hooks([build_hook(config) for config in hook_configs])


def registered_hook_names() -> list[str]:
    """Every hook name available: registered in this process or declared by an installed package."""
    return sorted(set(HOOK_REGISTRY) | set(_entry_points()))
