"""Fixtures for the logging hooks: a real Visdom server on 127.0.0.1 (started and killed per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from logging_hook_utils import VisdomServer


@pytest.fixture
def visdom_server(tmp_path: Path) -> Iterator[VisdomServer]:
    server = VisdomServer(tmp_path / "visdom")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared_visdom_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VisdomServer]:
    """One server for a test module's read-only tests (each test uses its own env)."""
    server = VisdomServer(tmp_path_factory.mktemp("visdom"))
    try:
        yield server
    finally:
        server.stop()
