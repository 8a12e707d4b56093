"""classy-hooks-core: the hook base class, registry, task contract and distributed helpers.

Pure Python: importing it never imports torch or any optional dependency.
"""

from classy_hooks.core._version import __version__
from classy_hooks.core.classy_hook import ClassyHook, ClassyHookState
from classy_hooks.core.constants import ClassyHookFunctions
from classy_hooks.core.distributed import (
    all_reduce,
    barrier,
    get_rank,
    get_world_size,
    is_distributed,
    is_primary,
)
from classy_hooks.core.errors import HookConfigError, MissingExtraError, TaskContractError, UnknownHookError
from classy_hooks.core.hook_list import call_hooks, check_hooks, get_hooks_state, set_hooks_state, state_keys
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
from classy_hooks.core.task import OPTIONAL_TASK_ATTRIBUTES, LastBatch, Meter, Task, is_optimizer_step

__all__ = [
    "ENTRY_POINT_GROUP",
    "HOOK_REGISTRY",
    "KNOWN_HOOKS",
    "OPTIONAL_TASK_ATTRIBUTES",
    "ClassyHook",
    "ClassyHookFunctions",
    "ClassyHookState",
    "HookConfigError",
    "LastBatch",
    "Meter",
    "MissingExtraError",
    "Task",
    "TaskContractError",
    "UnknownHookError",
    "__version__",
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
    "register_hook",
    "registered_hook_names",
    "set_hooks_state",
    "state_keys",
]
