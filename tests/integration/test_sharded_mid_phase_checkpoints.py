"""FSDP2 on 2 gloo ranks: step and preemption checkpoints are sharded (DCP) too, and resume inside the phase exactly.

Real torchrun jobs of the reference trainer (EMA, precise BatchNorm, CheckpointHook every 2 optimizer steps with
SIGTERM handling, sharded because the FSDP2 state holds DTensors). Each run must end with the straight run's final
checkpoint: model, optimizer (keyed by parameter name), EMA (sharded), meters, losses, counters, RNG, hook state.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from classy_hooks.core import PREEMPTED_EXIT_CODE
from classy_hooks.model import load_checkpoint
from helpers import assert_same, run_until_signalled, tiny_config, train_command, write_config
from integration.test_sharded_checkpoint_resume import _train

pytestmark = pytest.mark.slow


def _config() -> dict[str, Any]:
    checkpoint = {
        "name": "checkpoint",
        "checkpoint_folder": "{run_dir}/checkpoints",
        "phase_types": ["train", "test"],
        "checkpoint_every_n_steps": 2,
        "preemption_signals": ["SIGTERM"],
    }
    hooks = [checkpoint, {"name": "ema_model_weights", "decay": 0.8}, {"name": "precise_bn", "num_samples": 32}]
    # 256 samples in batches of 8 on 2 ranks: 16 batches per rank and phase, windows of 3 (the last one 1)
    dataset = {"num_classes": 4, "image_size": 16, "train_samples": 256, "test_samples": 64, "batch_size": 8}
    return tiny_config(num_epochs=3, fsdp=True, optimizer_period=3, dataset=dataset, hooks=hooks)


def _final_state(folder: Path) -> dict[str, Any]:
    """The final checkpoint's task state without the names of the checkpoints written (a preempted run's differ)."""
    state = load_checkpoint(folder)["classy_state_dict"]
    for key in ("written", "to_remove"):
        state["hooks"]["CheckpointHook"].pop(key)
    return state


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight")
    _train(run_dir, _config())
    return run_dir / "checkpoints"


def test_resume_from_a_sharded_step_checkpoint_continues_the_phase_bit_identically(
    straight: Path, tmp_path: Path
) -> None:
    start = straight / "model_phase-2_batch-6.dcp"  # the second optimizer window of the second train phase
    assert sorted(p.name for p in start.iterdir()) == [
        ".checksums-0.json", ".checksums-1.json", ".metadata", "__0_0.distcp", "__1_0.distcp"
    ]
    position = load_checkpoint(start)["classy_state_dict"]["data_position"]
    assert position["batches"] == 6 and len(position["ranks"]) == 2
    out = _train(tmp_path, _config(), ("--resume", str(start)))
    assert f"Resumed from {start}" in out
    assert_same(load_checkpoint(straight)["classy_state_dict"], load_checkpoint(tmp_path / "checkpoints")["classy_state_dict"])


def test_sigterm_writes_one_sharded_checkpoint_and_the_resume_ends_bit_identical(straight: Path, tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "config.json", _config())
    folder = tmp_path / "checkpoints"
    # signalled once the first train phase's checkpoint exists: inside the second train phase soon
    _, output = run_until_signalled(train_command(config_path, tmp_path, nproc=2), folder / "model_phase-1_end.dcp")
    written = set(re.findall(r"training preempted by SIGTERM: checkpoint (\S+) written", output))
    assert len(written) == 1, output[-3000:]  # both ranks name the same, single checkpoint
    preempted = Path(written.pop())
    assert preempted.is_dir() and preempted.suffix == ".dcp" and (preempted / ".metadata").is_file(), preempted
    assert output.count(f"exit with status {PREEMPTED_EXIT_CODE}") == 2, output[-3000:]
    out = _train(tmp_path, _config(), ("--resume", str(folder)))
    assert f"Resumed from {folder}" in out
    assert_same(_final_state(straight), _final_state(folder))
