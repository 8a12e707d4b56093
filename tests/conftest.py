"""Pytest set-up shared by every test folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from package_index import built_distributions, package_index  # noqa: F401 - session fixtures for every test
from s3_server import s3_bucket, s3_server  # noqa: F401 - a real S3-compatible server (moto) for fsspec URL tests
from visdom_server import VisdomServer


@pytest.fixture(autouse=True)
def _isolate_torch_threads() -> None:
    """Keep in-process training tests predictable on the 2-core machine."""
    import torch

    torch.set_num_threads(1)
    logging.getLogger().setLevel(logging.INFO)


@pytest.fixture
def visdom_server(tmp_path: Path) -> Iterator[VisdomServer]:
    """A real Visdom server on 127.0.0.1 for one test (killed, with its process group, afterwards)."""
    server = VisdomServer(tmp_path / "visdom")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared_visdom_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VisdomServer]:
    """One Visdom server for a whole test module (tests use their own envs)."""
    server = VisdomServer(tmp_path_factory.mktemp("visdom"))
    try:
        yield server
    finally:
        server.stop()
