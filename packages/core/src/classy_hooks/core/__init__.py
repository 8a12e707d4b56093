"""classy-hooks-core: the hook base class, registry, task contract and distributed helpers.

Pure Python: importing it never imports torch or any optional dependency. Names are loaded on
first use (PEP 562), so `import classy_hooks.core` costs almost nothing at start-up.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not imported from typing: typing alone costs ~15 ms at start-up

# public name -> submodule that defines it
_EXPORTS = {
    "__version__": "_version",
    "ClassyHook": "classy_hook",
    "ClassyHookState": "classy_hook",
    "ClassyHookFunctions": "constants",
    "all_gather_objects": "distributed",
    "all_reduce": "distributed",
    "barrier": "distributed",
    "get_rank": "distributed",
    "get_world_size": "distributed",
    "is_distributed": "distributed",
    "is_primary": "distributed",
    "HookConfigError": "errors",
    "MissingExtraError": "errors",
    "ServerUnreachableError": "errors",
    "TaskContractError": "errors",
    "UnknownHookError": "errors",
    "RUNS_LAST": "hook_list",
    "call_hooks": "hook_list",
    "ordered_hooks": "hook_list",
    "check_hooks": "hook_list",
    "get_hooks_state": "hook_list",
    "set_hooks_state": "hook_list",
    "state_keys": "hook_list",
    "ENTRY_POINT_GROUP": "registry",
    "HOOK_REGISTRY": "registry",
    "KNOWN_HOOKS": "registry",
    "build_hook": "registry",
    "build_hooks": "registry",
    "get_hook_class": "registry",
    "register_hook": "registry",
    "registered_hook_names": "registry",
    "LoopTask": "loop_task",
    "PREEMPTED_EXIT_CODE": "preemption",
    "TrainingPreempted": "preemption",
    "OPTIONAL_TASK_ATTRIBUTES": "task",
    "LastBatch": "task",
    "Meter": "task",
    "KeepsDataPosition": "task",
    "Task": "task",
    "is_optimizer_step": "task",
    "plain_state_dict": "wrapped_models",
    "unwrap_model": "wrapped_models",
}

if TYPE_CHECKING:
    from typing import Any

    from classy_hooks.core._version import __version__
    from classy_hooks.core.classy_hook import ClassyHook, ClassyHookState
    from classy_hooks.core.constants import ClassyHookFunctions
    from classy_hooks.core.distributed import (
        all_gather_objects,
        all_reduce,
        barrier,
        get_rank,
        get_world_size,
        is_distributed,
        is_primary,
    )
    from classy_hooks.core.errors import (
        HookConfigError,
        MissingExtraError,
        ServerUnreachableError,
        TaskContractError,
        UnknownHookError,
    )
    from classy_hooks.core.hook_list import (
        RUNS_LAST,
        call_hooks,
        check_hooks,
        get_hooks_state,
        ordered_hooks,
        set_hooks_state,
        state_keys,
    )
    from classy_hooks.core.loop_task import LoopTask
    from classy_hooks.core.preemption import PREEMPTED_EXIT_CODE, TrainingPreempted
    from classy_hooks.core.registry import (
        ENTRY_POINT_GROUP,
        HOOK_REGISTRY,
        KNOWN_HOOKS,
        build_hook,
        build_hooks,
        get_hook_class,
        register_hook,
        registered_hook_names,
    )
    from classy_hooks.core.task import (
        OPTIONAL_TASK_ATTRIBUTES,
        KeepsDataPosition,
        LastBatch,
        Meter,
        Task,
        is_optimizer_step,
    )
    from classy_hooks.core.wrapped_models import plain_state_dict, unwrap_model


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` the first time it is asked for."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'classy_hooks.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"classy_hooks.core.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "ENTRY_POINT_GROUP",
    "HOOK_REGISTRY",
    "KNOWN_HOOKS",
    "OPTIONAL_TASK_ATTRIBUTES",
    "PREEMPTED_EXIT_CODE",
    "RUNS_LAST",
    "ClassyHook",
    "ClassyHookFunctions",
    "ClassyHookState",
    "HookConfigError",
    "KeepsDataPosition",
    "LastBatch",
    "LoopTask",
    "Meter",
    "MissingExtraError",
    "ServerUnreachableError",
    "Task",
    "TaskContractError",
    "TrainingPreempted",
    "UnknownHookError",
    "__version__",
    "all_gather_objects",
    "all_reduce",
    "barrier",
    "build_hook",
    "build_hooks",
    "call_hooks",
    "check_hooks",
    "get_hook_class",
    "get_hooks_state",
    "get_rank",
    "get_world_size",
    "is_distributed",
    "is_optimizer_step",
    "is_primary",
    "ordered_hooks",
    "plain_state_dict",
    "register_hook",
    "registered_hook_names",
    "set_hooks_state",
    "state_keys",
    "unwrap_model",
]
