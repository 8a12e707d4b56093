"""Argument checks shared by every hook package, so that all errors read alike.

Each check raises `HookConfigError` naming the hook, the argument, what was wrong and what to pass.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from typing import Any

from classy_hooks.core.errors import HookConfigError


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def config_error(hook: str, arg: str, problem: str, fix: str) -> HookConfigError:
    """Build the uniform error: `<Hook>: argument '<arg>' <problem>. <fix>`."""
    return HookConfigError(f"{hook}: argument '{arg}' {problem}. {fix}")


def check_int(hook: str, arg: str, value: Any, *, minimum: int | None = None) -> int:
    """Require an int (bools are rejected) that is at least `minimum` when given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise config_error(hook, arg, f"must be an int, got {_describe(value)}", "Pass a whole number.")
    if minimum is not None and value < minimum:
        raise config_error(hook, arg, f"must be >= {minimum}, got {value}", f"Pass an int of at least {minimum}.")
    return value


def check_optional_int(hook: str, arg: str, value: Any, *, minimum: int | None = None) -> int | None:
    """Like `check_int`, but None is allowed (it usually means 'disabled')."""
    return None if value is None else check_int(hook, arg, value, minimum=minimum)


def check_float(hook: str, arg: str, value: Any, *, low: float | None = None, high: float | None = None) -> float:
    """Require a finite real number within the closed range [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise config_error(hook, arg, f"must be a finite number, got {_describe(value)}", "Pass a float.")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise config_error(hook, arg, f"must lie in [{lo}, {hi}], got {value}", f"Pass a value between {lo} and {hi}.")
    return float(value)


def check_bool(hook: str, arg: str, value: Any) -> bool:
    """Require a real bool, so that a string like 'false' is not silently truthy."""
    if not isinstance(value, bool):
        raise config_error(hook, arg, f"must be a bool, got {_describe(value)}", "Pass true or false.")
    return value


def check_str(hook: str, arg: str, value: Any, *, non_empty: bool = True) -> str:
    """Require a string, non-empty unless told otherwise."""
    if not isinstance(value, str):
        raise config_error(hook, arg, f"must be a str, got {_describe(value)}", "Pass a string.")
    if non_empty and not value:
        raise config_error(hook, arg, "must not be empty", "Pass a non-empty string.")
    return value


def check_choice(hook: str, arg: str, value: Any, choices: Collection[Any]) -> Any:
    """Require one of a fixed set of values."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise config_error(hook, arg, f"must be one of {options}, got {_describe(value)}", f"Pass one of {options}.")
    return value


def check_subset(hook: str, arg: str, value: Any, allowed: Collection[str]) -> list[str]:
    """Require a non-empty list/tuple/set of strings, each one of `allowed`; return it as a list."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise config_error(
            hook, arg, f"must be a list of strings, got {_describe(value)}", f"Pass e.g. {sorted(allowed)}."
        )
    items = list(value)
    bad = [v for v in items if v not in allowed]
    if not items or bad:
        problem = "must not be empty" if not items else f"has unknown values {bad}"
        raise config_error(hook, arg, problem, f"Use a non-empty subset of {sorted(allowed)}.")
    return items


def check_plain_data(hook: str, arg: str, value: Any, path: str = "") -> Any:
    """Require JSON-like data (dict with str keys, list, str, int, float, bool, None)."""
    where = f"{arg}{path}"
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain_data(hook, arg, item, f"{path}[{i}]")
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise config_error(hook, where, f"has a non-string key {key!r}", "Use string keys only.")
            check_plain_data(hook, arg, item, f"{path}[{key!r}]")
        return value
    raise config_error(
        hook,
        where,
        f"holds {_describe(value)}, which is not plain data",
        "Use only dicts, lists, strings, numbers, bools and None.",
    )
