"""Shared check for bad-input tests: the error is a documented classy-hooks class and names hook, argument and fix."""

from __future__ import annotations

from collections.abc import Iterable


def assert_reported(exc: BaseException, expected: type[BaseException], mentions: Iterable[str]) -> None:
    """`exc` is an `expected` defined by classy-hooks (never a bare builtin) and its message holds every mention."""
    message = str(exc)
    assert isinstance(exc, expected), f"expected {expected.__name__}, got {type(exc).__name__}: {message}"
    assert type(exc).__module__.startswith("classy_hooks."), f"a bare {type(exc).__name__} escaped: {message}"
    for word in mentions:
        assert word in message, f"the message does not mention {word!r}: {message}"
