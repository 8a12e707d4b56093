"""The package README's plain-loop example runs as printed and leaves a loadable checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import ROOT


def test_readme_plain_loop_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "packages" / "hooks-model" / "README.md").read_text()
    code = re.search(r"## A plain loop.*?```python\n(.*?)```", text, re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    checkpoint = namespace["checkpoint"]
    assert isinstance(checkpoint, dict)
    state = checkpoint["classy_state_dict"]
    assert state["phase_idx"] == 3
    assert state["hooks"]["ExponentialMovingAverageModelHook"]["num_updates"] == 16
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())[0] == "checkpoint.torch"
