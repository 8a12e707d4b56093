"""Story: under torchrun (2 gloo ranks) precise BN never deadlocks when the ranks hold different numbers of
batches (FSDP2 with the EMA, FSDP2 with an empty rank, DDP), and gives every rank the single-process statistics
of the union of the batches."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import ROOT, subprocess_env, torchrun_command

WORKER = Path(__file__).with_name("uneven_precise_bn_worker.py")


@pytest.mark.slow
def test_precise_bn_with_uneven_batches_per_rank_finishes_with_union_statistics() -> None:
    # The worker's process group times out after 30 s, so a deadlock fails well within this timeout.
    proc = subprocess.run(
        torchrun_command(WORKER), env=subprocess_env(), capture_output=True, text=True, timeout=240, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    for story in ("fsdp2+ema 3 vs 1", "fsdp2 2 vs 0", "ddp 3 vs 1"):
        for rank in (0, 1):
            assert f"rank {rank} {story} ok" in proc.stdout, story
