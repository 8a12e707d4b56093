"""Story: on an FSDP2-sharded model (2 gloo ranks under torchrun) the EMA stays sharded, updates exactly,
test phases evaluate it, training resumes from the exact weights, and its state resumes from full tensors and
round-trips through torch.distributed.checkpoint; precise BN in the same run gives both weight sets
single-process statistics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import ROOT, subprocess_env, torchrun_command

WORKER = Path(__file__).with_name("fsdp2_ema_worker.py")


@pytest.mark.slow
def test_ema_on_fsdp2_is_sharded_exact_evaluated_and_resumable(tmp_path: Path) -> None:
    proc = subprocess.run(
        torchrun_command(WORKER, [str(tmp_path)]),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    assert "rank 0 ok" in proc.stdout and "rank 1 ok" in proc.stdout
    figures = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in figures:
        # this rank's EMA bytes are its own shards of the model (plus the small replicated BN buffers)
        assert rank["ema_local_bytes"] == rank["model_local_bytes"]
        assert 0.45 < rank["ema_local_bytes"] / rank["model_full_bytes"] < 0.56, rank
        assert "is sharded (a DTensor) but the model's tensor is not" in rank["plain_model_error"]
    # the two ranks' shards add up to the model (BN buffers counted on both ranks)
    assert sum(r["ema_local_bytes"] for r in figures) < 1.1 * figures[0]["model_full_bytes"]
    assert sorted(p.name for p in (tmp_path / "dcp").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
