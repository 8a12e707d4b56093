"""Story: under torchrun with 2 gloo ranks, each test phase's predictions file (and predictions.csv, the latest)
holds every test sample exactly once with one header, the rank part files are gone, and only the primary rank wrote
the exported models."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_exported_models_load_and_run import EXPORT_HOOKS, check_against_csv

from helpers import run_training, tiny_config


@pytest.mark.slow
def test_two_ranks_write_one_complete_predictions_file(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = run_training(tmp_path, tiny_config(hooks=EXPORT_HOOKS), nproc=2, run_dir=run_dir)
    log = proc.stdout + proc.stderr
    assert log.count("TorchscriptHook: wrote") == 1 and log.count("TorchExportHook: wrote") == 1
    assert log.count("OutputCSVHook: wrote 64 predictions of test phase 3") == 1
    assert sorted(p.name for p in (run_dir / "predictions").iterdir()) == [  # the rank parts merged and removed
        "predictions.csv", "predictions.phase00001.csv", "predictions.phase00003.csv"
    ]
    text = (run_dir / "predictions" / "predictions.csv").read_text()
    assert text.count("sample_id") == 1 and len(text.splitlines()) == 1 + 64
    assert text == (run_dir / "predictions" / "predictions.phase00003.csv").read_text()  # the latest test phase
    # Rows come from both ranks (rank 1 has the odd-indexed samples) and match the final model.
    check_against_csv(run_dir)
