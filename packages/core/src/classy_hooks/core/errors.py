"""Exception types raised by classy-hooks; each message names the hook, the argument and the fix."""

from __future__ import annotations


class HookConfigError(ValueError):
    """A hook was given a bad argument or config key (raised before training starts)."""


class ServerUnreachableError(HookConfigError, ConnectionError):
    """A hook's server/port arguments name a service that does not answer (checked in `on_start`).

    Also a `ConnectionError`, so callers that catch the builtin keep working.
    """


class UnknownHookError(ValueError, LookupError):
    """`build_hook` was asked for a name that no installed package registers."""


class TaskContractError(TypeError):
    """The task handed to a hook lacks an attribute that hook reads (see `classy_hooks.core.Task`)."""


class MissingExtraError(ImportError):
    """A hook needs an optional dependency that is not installed; the message has the pip line."""
