"""The README's plain-PyTorch-loop example runs as printed and its hooks do their work."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT, subprocess_env, torchrun_command


def _readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def _run_script(code: str, folder: Path) -> subprocess.CompletedProcess[str]:
    folder.mkdir(exist_ok=True)
    script = folder / "plain_loop.py"
    script.write_text("import logging\nlogging.basicConfig(level=logging.INFO)\n" + code)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=folder, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _loop_lines(code: str) -> int:
    """Lines from the loop over phases to the end: what a user writes per run."""
    lines = code.strip().splitlines()
    return len(lines) - next(i for i, line in enumerate(lines) if line.startswith("for phase_type"))


@pytest.mark.slow
def test_readme_plain_loop_trains_logs_and_checkpoints(tmp_path: Path) -> None:
    code = _readme_block("## Hooks in a plain PyTorch loop")
    assert len(code.strip().splitlines()) <= 30 and _loop_lines(code) <= 10
    proc = _run_script(code, tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoints" / "checkpoint.torch", weights_only=True)
    assert checkpoint["classy_state_dict"]["phase_idx"] == 2  # the second train phase (phases: train, test, ...)
    assert proc.stderr.count("Synced meters: train") == 2  # LossLrMeterLoggingHook at each phase end
    assert proc.stderr.count("Synced meters: test") == 2
    assert proc.stderr.count("Approximate meters: train") == 4  # and every log_freq=4 steps
    assert "Saved checkpoint checkpoints/checkpoint.torch (phase 2)" in proc.stderr


@pytest.mark.slow
def test_readme_plain_loop_started_again_resumes_bit_identically(tmp_path: Path) -> None:
    code = _readme_block("## Hooks in a plain PyTorch loop")
    one_epoch = code.replace('("test", test)] * 2)', '("test", test)] * 1)')
    assert one_epoch != code
    _run_script(code, tmp_path / "straight")
    _run_script(one_epoch, tmp_path / "split")
    again = _run_script(code, tmp_path / "split")  # the same script started again: it resumes
    assert "Synced meters: train" in again.stderr and again.stderr.count("Synced meters: train") == 1
    straight, split = (
        torch.load(tmp_path / run / "checkpoints" / "checkpoint.torch", weights_only=True)["classy_state_dict"]
        for run in ("straight", "split")
    )
    assert straight["phase_idx"] == split["phase_idx"] == 2
    for name, value in straight["base_model"].items():
        assert torch.equal(value, split["base_model"][name]), name
    ema_straight = straight["hooks"]["ExponentialMovingAverageModelHook"]["ema_state"]
    ema_split = split["hooks"]["ExponentialMovingAverageModelHook"]["ema_state"]
    assert ema_straight.keys() == ema_split.keys()
    assert all(torch.equal(ema_straight[k], ema_split[k]) for k in ema_straight)


@pytest.mark.slow
def test_readme_gpu_loop_runs_on_the_cpu_and_under_torchrun(tmp_path: Path) -> None:
    code = _readme_block("### The same loop on a GPU")
    proc = _run_script(code, tmp_path / "single")
    assert proc.stderr.count("Synced meters: train") == 2
    script = tmp_path / "gpu_loop.py"
    script.write_text("import logging\nlogging.basicConfig(level=logging.INFO)\n" + code)
    two = subprocess.run(
        torchrun_command(script), cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=180
    )
    assert two.returncode == 0, two.stderr[-4000:]
    assert two.stderr.count("Synced meters: train") == 2  # logged by rank 0 only


def test_readme_custom_hook_example_registers_and_counts() -> None:
    code = _readme_block("## Writing a hook")
    namespace: dict = {}
    exec(compile(code.replace('"count_steps"', '"count_steps_readme_test"'), "README", "exec"), namespace)
    hook = namespace["CountStepsHook"]()
    task = type("T", (), {"train": True})()
    hook.on_start(task)
    hook.on_step(task)
    assert hook.get_classy_state() == {"steps": 1}
