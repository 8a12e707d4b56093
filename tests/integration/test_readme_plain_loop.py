"""The README's plain-PyTorch-loop example runs as printed and its hooks do their work."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT, subprocess_env


def _readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


@pytest.mark.slow
def test_readme_plain_loop_trains_logs_and_checkpoints(tmp_path: Path) -> None:
    code = _readme_block("## Hooks in a plain PyTorch loop")
    assert 15 <= len(code.strip().splitlines()) <= 45
    script = tmp_path / "plain_loop.py"
    script.write_text("import logging\nlogging.basicConfig(level=logging.INFO)\n" + code)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    checkpoint = torch.load(tmp_path / "checkpoints" / "checkpoint.torch", weights_only=True)
    assert checkpoint["classy_state_dict"]["phase_idx"] == 1
    assert proc.stderr.count("Synced meters: train") == 2  # LossLrMeterLoggingHook at each phase end
    assert proc.stderr.count("Approximate meters: train") == 4  # and every log_freq=4 steps
    assert "Saved checkpoint checkpoints/checkpoint.torch (phase 1)" in proc.stderr


def test_readme_custom_hook_example_registers_and_counts() -> None:
    code = _readme_block("## Writing a hook")
    namespace: dict = {}
    exec(compile(code.replace('"count_steps"', '"count_steps_readme_test"'), "README", "exec"), namespace)
    hook = namespace["CountStepsHook"]()
    task = type("T", (), {"train": True})()
    hook.on_start(task)
    hook.on_step(task)
    assert hook.get_classy_state() == {"steps": 1}
