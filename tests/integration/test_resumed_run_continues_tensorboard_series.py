"""A run resumed from a checkpoint continues its TensorBoard curves: same steps, no duplicate points.

Real processes: run 1 trains to the end with CheckpointHook and TensorboardPlotHook; run 2 is
`tools/train.py --resume <checkpoint after the first train phase>` into the same run folder, as
after a crash that happened once that checkpoint was written. TensorBoard's own reader must
then see every series exactly as the uninterrupted run wrote it, each step once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dev_dependencies import dev_dependency
from helpers import run_training, tiny_config

dev_dependency("classy_hooks.model", reason="resuming needs classy-hooks-model's load_checkpoint")


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series under `logdir`, read by TensorBoard's own EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_resumed_run_continues_the_tensorboard_series(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = tiny_config(
        num_epochs=3,
        hooks=[
            {"name": "tensorboard_plot", "summary_writer": {"logdir": "{run_dir}/tensorboard"}, "log_period": 3},
            {"name": "checkpoint", "checkpoint_folder": "{run_dir}/checkpoints"},
        ],
    )
    run_training(tmp_path, config, run_dir=run_dir)
    uninterrupted = read_scalars(run_dir / "tensorboard")
    assert [s for s, _ in uninterrupted["Losses/train"]] == [8, 16, 24]

    checkpoint = run_dir / "checkpoints" / "model_phase-0_end.torch"
    assert checkpoint.exists(), sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    proc = run_training(tmp_path, config, run_dir=run_dir, extra=["--resume", str(checkpoint)])
    assert "resumed at step 8" in proc.stdout

    resumed = read_scalars(run_dir / "tensorboard")
    assert set(resumed) == set(uninterrupted)
    for tag, points in resumed.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{tag}: duplicate or overlapping steps {steps}"
        assert steps == [s for s, _ in uninterrupted[tag]], tag
        if not tag.startswith("Speed/"):  # timings differ between runs; everything else is deterministic
            expected = [v for _, v in uninterrupted[tag]]
            assert [v for _, v in points] == pytest.approx(expected, rel=1e-4, abs=1e-6), tag
