"""Under torchrun with 2 gloo ranks, only rank 0 logs, writes event files and sends plots."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from logging_hook_utils import VisdomServer, read_scalars

from helpers import ROOT, subprocess_env, tiny_config, train_command, write_config


@pytest.mark.slow
def test_two_gloo_ranks_only_the_primary_logs_writes_and_sends(tmp_path: Path, visdom_server: VisdomServer) -> None:
    run_dir = tmp_path / "run"
    config = tiny_config(
        num_epochs=2,
        hooks=[
            {"name": "loss_lr_meter_logging", "log_freq": 2},
            {"name": "progress_bar"},
            {"name": "model_complexity"},
            {"name": "profiler"},
            {"name": "tensorboard_plot", "summary_writer": {"logdir": "{run_dir}/tensorboard"}, "log_period": 2},
            {"name": "model_tensorboard", "summary_writer": {"logdir": "{run_dir}/tensorboard"}},
            {"name": "visdom", "server": "http://127.0.0.1", "port": "$VISDOM_PORT", "env": "two_ranks"},
        ],
    )
    command = train_command(write_config(tmp_path / "config.json", config), run_dir, nproc=2)
    logs = tmp_path / "rank_logs"
    command[1:1] = ["--redirects", "3", "--log-dir", str(logs)]  # each rank's stdout/stderr in its own file
    env = subprocess_env() | {"VISDOM_PORT": str(visdom_server.port)}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def output(rank: int) -> str:
        files = sorted(logs.rglob(f"{rank}/std*.log"))
        assert len(files) == 2, files
        return "".join(f.read_text() for f in files)

    rank0, rank1 = output(0), output(1)
    for text in (
        "Synced meters: train",
        "Approximate meters: train",
        "train phase 0: 100%",
        "FLOPs per sample",
        "forward and backward of SmallCNN",
        "wrote the graph of SmallCNN",
        "VisdomHook: plotting to",
    ):
        assert text in rank0, text
    assert "classy_hooks.logging" not in rank1  # not one record from any logging hook on rank 1

    event_files = sorted(p.name.rsplit(".", 1)[-1] for p in (run_dir / "tensorboard").iterdir())
    assert event_files == ["ModelTensorboardHook", "TensorboardPlotHook"]  # one writer each, rank 0's
    scalars = read_scalars(run_dir / "tensorboard")
    assert [step for step, _ in scalars["Losses/train"]] == [4, 8]  # 128 samples / 2 ranks / batch 16
    loss = visdom_server.lines("two_ranks:loss", "two_ranks")
    assert len(loss["train"]) == 2 and len(loss["test"]) == 2  # a second sender would double the points
