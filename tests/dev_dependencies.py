"""Test-only dependencies: required in the dev venv, an honest skip only in the floors venvs that lack them.

`pytest.importorskip` alone would let a dev venv that lost a dependency (classy-vision, s3fs, fsspec, ...) skip
the tests that use it, hiding a missing part; here that is a failure naming the fix.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def in_dev_venv() -> bool:
    """True in the repository's own .venv (./tools/bootstrap installs every test-only dependency there)."""
    return Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()


def dev_dependency(module: str, reason: str) -> ModuleType:
    """Import `module`; outside the dev venv a missing module skips (with `reason`), inside it fails."""
    if not in_dev_venv():
        return pytest.importorskip(module, reason=reason)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(
            f"{module} is missing from the dev venv ({exc}); it is required there ({reason}). "
            "Run ./tools/bootstrap or install tools/requirements-dev.txt.",
            pytrace=False,
        )


def missing_dev_dependency(module: str) -> bool:
    """For `skipif`: True when `module` is absent outside the dev venv; inside it, absence fails at collection."""
    if importlib.util.find_spec(module) is not None:
        return False
    assert not in_dev_venv(), f"{module} is missing from the dev venv: run ./tools/bootstrap"
    return True
