"""Checking a hook config against the hook's constructor before anything is built."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from classy_hooks.core.errors import HookConfigError


def constructor_arguments(cls: type) -> tuple[set[str], set[str], bool]:
    """Return (required, optional, accepts_any_keyword) for `cls.__init__`."""
    import inspect  # deferred: only from_config needs it, and it is slow to import

    params = list(inspect.signature(cls).parameters.values())
    required: set[str] = set()
    optional: set[str] = set()
    var_keyword = False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            var_keyword = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            (required if p.default is p.empty else optional).add(p.name)
    return required, optional, var_keyword


def check_config_keys(
    hook_name: str,
    config: Mapping[str, Any],
    required: set[str],
    optional: set[str],
    accepts_any: bool = False,
) -> None:
    """Raise `HookConfigError` for a missing required key or, unless `accepts_any`, an unknown key."""
    if not isinstance(config, Mapping):
        raise HookConfigError(
            f"{hook_name}: config must be a dict of constructor arguments, got {type(config).__name__}."
        )
    missing = sorted(required - set(config))
    if missing:
        raise HookConfigError(
            f"{hook_name}: config is missing required key '{missing[0]}'"
            f" (required: {sorted(required)}). Add it to the hook's config."
        )
    if accepts_any:
        return
    known = required | optional
    for key in config:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"Did you mean '{close[0]}'?" if close else "Remove it."
            accepted = f"accepted keys are {sorted(known)}" if known else "this hook takes no arguments"
            raise HookConfigError(f"{hook_name}: config has unknown key '{key}'; {accepted}. {hint}")
