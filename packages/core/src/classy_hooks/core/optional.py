"""Importing optional dependencies with an error that says how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType

from classy_hooks.core.errors import MissingExtraError


def import_extra(module: str, hook: str, distribution: str, extra: str) -> ModuleType:
    """Import `module` or raise `MissingExtraError` with the `pip install 'dist[extra]'` line."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{hook} needs the '{module.split('.')[0]}' package, which is not installed. "
            f"Install it with: pip install '{distribution}[{extra}]'"
        ) from exc
