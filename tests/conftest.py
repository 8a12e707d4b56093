"""Pytest set-up shared by every test folder."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _isolate_torch_threads() -> None:
    """Keep in-process training tests predictable on the 2-core machine."""
    import torch

    torch.set_num_threads(1)
    logging.getLogger().setLevel(logging.INFO)
