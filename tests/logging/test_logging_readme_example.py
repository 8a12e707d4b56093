"""The package README's plain-loop example runs as printed and logs what it promises."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "packages" / "hooks-logging" / "README.md"


def test_readme_plain_loop_runs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="classy_hooks.logging")
    match = re.search(r"## In a plain PyTorch loop\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert match
    exec(compile(match.group(1), str(README), "exec"), {"__name__": "readme_example"})
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Approximate meters: train") for m in messages) == 4  # log_freq=5, 20 steps
    assert any(m.startswith("Synced meters: train") and "lr 0.001" in m for m in messages)
    assert any("train phase 0: 100% 20/20" in m for m in messages)
