"""Use classy-hooks hooks inside Classy Vision: its `task.set_hooks()` accepts them, its config names build them.

Classy Vision's `ClassificationTask.set_hooks` asserts `isinstance(hook, classy_vision.hooks.ClassyHook)` and its
`build_task(config)` builds the config's `"hooks"` list from Classy Vision's own registry. `use_in_classy_vision`
declares `classy_hooks.core.ClassyHook` a virtual subclass of Classy Vision's (`abc.ABCMeta.register`, its public
API) and registers every classy-hooks hook in Classy Vision's registry, so an unmodified task, `build_task` and
`LocalTrainer` run classy-hooks hooks. The hooks themselves are not wrapped: they are the same objects,
so hooks that look for each other in `task.hooks` (precise BN and the EMA) keep working. Classy Vision's loop calls
`task.hooks` in list order: pass `ordered_hooks(hooks)` to `set_hooks` (CheckpointHook warns otherwise).
Classy Vision's module is passed in, so classy-hooks-core never imports it (nor torch).
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from classy_hooks.core.classy_hook import ClassyHook
from classy_hooks.core.errors import HookConfigError
from classy_hooks.core.registry import get_hook_class, registered_hook_names

logger = logging.getLogger(__name__)


def use_in_classy_vision(classy_vision_hooks: ModuleType, *, prefix: str = "") -> dict[str, type[ClassyHook]]:
    """Make every classy-hooks hook a Classy Vision hook; return the Classy Vision names registered.

    `classy_vision_hooks` is the module `classy_vision.hooks` (`import classy_vision.hooks` and pass it).
    Each classy-hooks name (e.g. `"checkpoint"`, `"ema_model_weights"`; every hook registered in this process or
    declared by an installed classy-hooks package) is registered in Classy Vision's registry as
    `prefix + name`. With the default `prefix=""` it replaces Classy Vision's own hook of that name, so an
    existing config's `"hooks"` list builds classy-hooks hooks unchanged; with e.g. `prefix="classy_hooks."` the
    two coexist (`{"name": "classy_hooks.checkpoint", ...}`). Call it before `build_task(config)`; calling it
    again is harmless. A task cannot hold a Classy Vision hook and a classy-hooks hook of the same class name
    (Classy Vision keys hook state by class name).
    """
    base = getattr(classy_vision_hooks, "ClassyHook", None)
    register = getattr(classy_vision_hooks, "register_hook", None)
    if not isinstance(base, type) or not callable(register) or not hasattr(base, "register"):
        raise HookConfigError(
            f"use_in_classy_vision: expected the module classy_vision.hooks, got {classy_vision_hooks!r}. "
            "Pass it: `import classy_vision.hooks; use_in_classy_vision(classy_vision.hooks)`."
        )
    if not isinstance(prefix, str):
        raise HookConfigError(
            f"use_in_classy_vision: prefix must be a string, got {prefix!r}. Pass e.g. '' or 'classy_hooks.'"
        )
    base.register(ClassyHook)  # issubclass/isinstance checks of Classy Vision now accept every classy-hooks hook
    registered: dict[str, type[ClassyHook]] = {}
    for name in registered_hook_names():
        hook_class = get_hook_class(name)  # an installed package that fails to import is an error, not a fallback
        classy_name = prefix + name
        replaced: Any = _registered_class(classy_vision_hooks, classy_name)
        if replaced is not None and replaced is not hook_class:
            logger.info(
                "use_in_classy_vision: Classy Vision's hook name %r now builds classy-hooks' %s (was %s.%s).",
                classy_name,
                hook_class.__qualname__,
                replaced.__module__,
                replaced.__qualname__,
            )
        register(classy_name, bypass_checks=True)(hook_class)  # bypass: Classy's own class names are taken
        registered[classy_name] = hook_class
    return registered


def _registered_class(classy_vision_hooks: ModuleType, name: str) -> Any:
    """The class Classy Vision's registry builds for `name`, or None (its `HOOK_REGISTRY` is a public dict)."""
    table = getattr(classy_vision_hooks, "HOOK_REGISTRY", None)
    return table.get(name) if isinstance(table, dict) else None
