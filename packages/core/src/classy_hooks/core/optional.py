"""Importing optional dependencies with an error that says how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

from classy_hooks.core.errors import MissingExtraError


def import_extra(module: str, hook: str, distribution: str, extra: str, install: Optional[str] = None) -> ModuleType:
    """Import `module` or raise `MissingExtraError` with the command that installs it.

    The command is `pip install 'dist[extra]'` unless `install` gives another (for an extra whose plain line
    does not work, e.g. one that needs a build constraint).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        command = install or f"pip install '{distribution}[{extra}]'"
        raise MissingExtraError(
            f"{hook} needs the '{module.split('.')[0]}' package, which is not installed. Install it with: {command}"
        ) from exc
