"""A non-blocking checkpoint save in flight when training crashes is still written completely."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from classy_hooks.model import load_checkpoint
from helpers import ROOT, subprocess_env, tiny_config

SCRIPT = r"""
import json, sys
import torch
from reference_trainer.task import ReferenceTask
from classy_hooks.core import ClassyHook
from classy_hooks.model import CheckpointHook

class Ballast(ClassyHook):
    # Big state (~160 MB) so that the background write is still running when the crash comes.
    on_start = on_step = on_phase_end = on_end = ClassyHook._noop
    def __init__(self):
        super().__init__()
        self.state.ballast = torch.ones(40_000_000)
    def on_phase_start(self, task):
        if task.phase_idx == 1:
            print("in flight:", checkpoint.save_in_flight, flush=True)
            raise RuntimeError("training crashed")

checkpoint = CheckpointHook(sys.argv[1], non_blocking=True)
ReferenceTask(json.loads(sys.argv[2]), [Ballast(), checkpoint]).run()
"""


@pytest.mark.slow
def test_crash_during_a_background_save_still_completes_it(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder), json.dumps(tiny_config(num_epochs=1))],
        env=subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "training crashed" in proc.stderr
    assert "in flight: True" in proc.stdout, proc.stdout + proc.stderr
    state = load_checkpoint(folder)["classy_state_dict"]
    assert state["phase_idx"] == 0
    assert torch.equal(state["hooks"]["Ballast"]["ballast"], torch.ones(40_000_000))
