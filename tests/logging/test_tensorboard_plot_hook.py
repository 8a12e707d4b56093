"""TensorboardPlotHook, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
import torch
from logging_hook_utils import EPOCH_SCHEDULE_LRS, PhaseRecorder, read_scalars, run_epoch_schedule_loop
from tensorboardX import SummaryWriter

from bad_input import assert_reported, assert_warned, run_to_the_end_and_warnings
from classy_hooks.core import HookConfigError, TaskContractError, build_hook
from classy_hooks.logging import TensorboardPlotHook
from dev_dependencies import dev_dependency
from helpers import make_task

TAG = re.compile(r"^[A-Za-z0-9_.\-/]+$")


def _hook(logdir: Path, log_period: int = 3) -> TensorboardPlotHook:
    return build_hook({"name": "tensorboard_plot", "summary_writer": {"logdir": str(logdir)}, "log_period": log_period})  # type: ignore[return-value]


def test_constructors_and_bad_arguments(tmp_path: Path) -> None:
    writer = SummaryWriter(logdir=str(tmp_path / "direct"))
    assert TensorboardPlotHook(writer).log_period == 10
    assert TensorboardPlotHook(None, log_period=5).tb_writer is None
    hook = TensorboardPlotHook.from_config({"summary_writer": {"logdir": str(tmp_path / "tb")}, "log_period": 4})
    assert isinstance(hook, TensorboardPlotHook) and hook.log_period == 4
    assert isinstance(_hook(tmp_path / "tb"), TensorboardPlotHook)
    assert not (tmp_path / "tb").exists()  # nothing is created before on_start
    for bad in ["10", 0, 2.5, True]:
        with pytest.raises(HookConfigError, match="TensorboardPlotHook: argument 'log_period'"):
            TensorboardPlotHook(None, log_period=bad)
    with pytest.raises(HookConfigError, match="argument 'tb_writer' must be a SummaryWriter"):
        TensorboardPlotHook("runs/tb")
    with pytest.raises(HookConfigError, match="missing required key 'summary_writer'"):
        build_hook({"name": "tensorboard_plot"})
    with pytest.raises(HookConfigError, match="argument 'summary_writer' must be a dict"):
        build_hook({"name": "tensorboard_plot", "summary_writer": "runs/tb"})
    with pytest.raises(HookConfigError, match=r"unknown key 'log_dirr'.*Did you mean 'log_dir'"):
        build_hook({"name": "tensorboard_plot", "summary_writer": {"log_dirr": "x"}})
    with pytest.raises(TaskContractError, match="TensorboardPlotHook"):
        _hook(tmp_path / "tb").on_start(object())
    writer.close()


def test_unwritable_log_folder_fails_in_on_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(HookConfigError, match=r"TensorboardPlotHook: argument 'summary_writer'.*is a file"):
        _hook(tmp_path / "file").on_start(make_task())


def test_losses_learning_rates_and_meters_per_phase_and_per_step(tmp_path: Path) -> None:
    recorder = PhaseRecorder()
    hook = _hook(tmp_path / "tb", log_period=3)
    make_task([hook, recorder], num_epochs=2).run()  # 8 train batches per epoch, a test phase after each
    scalars = read_scalars(tmp_path / "tb")
    assert all(TAG.match(tag) for tag in scalars), sorted(scalars)
    train = [p for p in recorder.phases if p["type"] == "train"]
    test = [p for p in recorder.phases if p["type"] == "test"]
    # one step unit everywhere: train iterations done; test phases sit at the iteration they ran after
    assert [s for s, _ in scalars["Losses/train"]] == [8, 16]
    assert [s for s, _ in scalars["Losses/test"]] == [8, 16]
    assert [v for _, v in scalars["Losses/train"]] == pytest.approx([p["loss"] for p in train], rel=1e-6)
    assert [v for _, v in scalars["Losses/test"]] == pytest.approx([p["loss"] for p in test], rel=1e-6)
    assert [v for _, v in scalars["LearningRate/train"]] == pytest.approx([p["lr"] for p in train], rel=1e-6)
    for phase, records in [("train", train), ("test", test)]:
        for key in ("top_1", "top_5"):
            values = [v for _, v in scalars[f"Meters/{phase}/accuracy/{key}"]]
            assert values == pytest.approx([p["meters"]["accuracy"][key] for p in records], rel=1e-6)
    # per-step points every log_period iterations: mean loss of the iterations since the last point
    steps = [s for s, _ in scalars["Losses/train_step"]]
    assert steps == [3, 6, 9, 12, 15]
    losses = recorder.step_losses
    assert scalars["Losses/train_step"][0][1] == pytest.approx(sum(losses[0:3]) / 3, rel=1e-5)
    assert scalars["Losses/train_step"][2][1] == pytest.approx(losses[8], rel=1e-5)  # phase 2 starts at iteration 9
    assert [s for s, _ in scalars["LearningRate/train_step"]] == steps
    assert {"Speed/train/im_per_sec", "Speed/test/im_per_sec", "Speed/train/sample_fetch_seconds"} <= set(scalars)
    # the state (step counter, last step's scalars) loads with weights_only
    buffer = io.BytesIO()
    torch.save(hook.get_classy_state(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["step"] == 16 and state["tail_step"] == 16 and "Losses/test" in state["tail"]


def test_meter_and_group_names_become_legal_tags_without_tensorboard_rewriting_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    class SpacedMeter:
        name = "top k accuracy (%)"
        value = {"at 1": 0.5, "label": "not a number"}

        def reset(self) -> None: ...

        def update(self, output: torch.Tensor, target: torch.Tensor) -> None: ...

        def sync_state(self) -> None: ...

    task = make_task([_hook(tmp_path / "tb", log_period=100)], num_epochs=1)
    task.meters.append(SpacedMeter())
    params = list(task.base_model.parameters())
    task.optimizer = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:], "lr": 1e-5}], lr=0.1)
    task.run()
    scalars = read_scalars(tmp_path / "tb")
    assert "Meters/train/top_k_accuracy____/at_1" in scalars
    assert {"LearningRate/train/group_0", "LearningRate/train/group_1"} <= set(scalars)
    assert all(TAG.match(tag) for tag in scalars)
    assert not [r for r in caplog.records if "illegal" in r.getMessage()]


def test_a_resumed_run_continues_the_same_series_without_duplicate_points(tmp_path: Path) -> None:
    """Run 1 goes to the end; run 2 resumes from run 1's state after phase 0 (a crash after the
    checkpoint), writing into the same folder. Readers must see each point exactly once."""
    logdir = tmp_path / "tb"
    recorder = PhaseRecorder(snapshot_after_phase=0)
    make_task([_hook(logdir), recorder], num_epochs=3).run()
    uninterrupted = read_scalars(logdir)
    assert recorder.snapshot is not None

    resumed_task = make_task([_hook(logdir), PhaseRecorder()], num_epochs=3)
    resumed_task.set_classy_state(recorder.snapshot)
    resumed_task.run()
    resumed = read_scalars(logdir)
    assert set(resumed) == set(uninterrupted)
    for tag, points in resumed.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{tag}: duplicate or unordered steps {steps}"
        assert steps == [s for s, _ in uninterrupted[tag]], tag
        expected = [v for _, v in uninterrupted[tag]]
        if not tag.startswith("Speed/"):
            assert [v for _, v in points] == pytest.approx(expected, rel=1e-4, abs=1e-6), tag


def test_a_writer_passed_in_is_used_and_left_open(tmp_path: Path) -> None:
    writer = SummaryWriter(logdir=str(tmp_path / "tb"))
    hook = TensorboardPlotHook(writer, log_period=4)
    make_task([hook], num_epochs=1).run()
    writer.add_scalar("after/end", 1.0, 0)  # still usable: the hook closes only writers it made
    writer.close()
    scalars = read_scalars(tmp_path / "tb")
    assert [s for s, _ in scalars["Losses/train_step"]] == [4, 8] and "after/end" in scalars


def test_each_phase_is_on_disk_when_its_phase_end_returns(tmp_path: Path) -> None:
    """A checkpoint written right after a phase must never record a step whose values could be lost."""
    seen: list[list[int]] = []

    class ReadAfterPhase(PhaseRecorder):
        def on_phase_end(self, task):  # type: ignore[no-untyped-def]
            if task.train:
                seen.append([s for s, _ in read_scalars(tmp_path / "tb").get("Losses/train", [])])

    make_task([_hook(tmp_path / "tb"), ReadAfterPhase()], num_epochs=2).run()
    assert seen == [[8], [8, 16]]


def test_learning_rate_of_a_phase_is_the_one_it_trained_with_when_the_schedule_steps_before_phase_end(
    tmp_path: Path,
) -> None:
    """Classy Vision's order (epoch schedule stepped before `on_phase_end`): no shift by one phase."""
    run_epoch_schedule_loop([_hook(tmp_path / "tb", log_period=2)])
    scalars = read_scalars(tmp_path / "tb")
    assert [v for _, v in scalars["LearningRate/train"]] == pytest.approx(EPOCH_SCHEDULE_LRS)
    assert [s for s, _ in scalars["LearningRate/train"]] == [4, 8, 12]
    # per-step points: the rate the step trained with (2 per phase of 4 steps)
    assert [v for _, v in scalars["LearningRate/train_step"]] == pytest.approx(
        [lr for lr in EPOCH_SCHEDULE_LRS for _ in range(2)]
    )


def test_a_tensorboardx_without_the_tested_internals_falls_back_to_its_public_flush_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A tensorboardX release that renamed its writer-thread internals: one warning naming its version, plots kept."""
    import tensorboardX

    from classy_hooks.logging import tensorboard_plot_hook

    monkeypatch.setattr(tensorboard_plot_hook, "TENSORBOARDX_INTERNALS", ("_queue_renamed", "_worker", "_closed"))
    monkeypatch.setattr(tensorboard_plot_hook, "_warned_versions", set())
    caplog.set_level(logging.WARNING, logger="classy_hooks.logging")
    make_task([_hook(tmp_path / "tb", log_period=4)], num_epochs=2).run()
    warnings = [r.getMessage() for r in caplog.records if "cannot wait for its writer thread" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once, not at every phase end
    assert warnings[0].startswith(f"TensorboardPlotHook: tensorboardX {tensorboardX.__version__} has no")
    assert "tested with tensorboardX 2.6.2.2 to 2.6.5" in warnings[0] and "tensorboardX>=2.6.2.2,<2.7" in warnings[0]
    scalars = read_scalars(tmp_path / "tb")  # on_end closed the writer: every scalar is on disk
    assert [s for s, _ in scalars["Losses/train"]] == [8, 16]
    assert [s for s, _ in scalars["Losses/train_step"]] == [4, 8, 12, 16]


def test_a_torch_summary_writer_is_flushed_through_its_public_api_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Classy Vision passed `torch.utils.tensorboard.SummaryWriter`s: its own flush() waits, nothing private is read."""
    from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

    seen: list[list[int]] = []

    class ReadAfterPhase(PhaseRecorder):
        def on_phase_end(self, task):  # type: ignore[no-untyped-def]
            if task.train:
                seen.append([s for s, _ in read_scalars(tmp_path / "tb").get("Losses/train", [])])

    writer = TorchSummaryWriter(log_dir=str(tmp_path / "tb"))
    caplog.set_level(logging.WARNING, logger="classy_hooks.logging")
    make_task([TensorboardPlotHook(writer, log_period=4), ReadAfterPhase()], num_epochs=2).run()
    writer.close()
    assert seen == [[8], [8, 16]]
    assert not [r for r in caplog.records if r.name.startswith("classy_hooks.logging")]


def test_classy_vision_hook_state_continues_the_step_axis(tmp_path: Path) -> None:
    """A checkpoint of Classy Vision's own TensorboardPlotHook: its train step count becomes `step`, nothing stray."""
    classy_hooks = dev_dependency("classy_vision.hooks", reason="classy-vision is a test-only dev dependency")
    classy_hook = classy_hooks.TensorboardPlotHook(SummaryWriter(str(tmp_path / "classy")))
    classy_hook.state.step_count = {"train": 24, "test": 8}
    classy_state = classy_hook.get_classy_state()
    assert set(classy_state) == {"step_count", "cum_sample_fetch_time"}

    hook = _hook(tmp_path / "ours")
    hook.set_classy_state(classy_state)
    assert hook.get_classy_state() == {"step": 24, "tail_step": -1, "tail": {}}
    hook.set_classy_state({"step": 5, "tail_step": 5, "tail": {"Losses/train": 1.0}})  # our own state: as saved
    assert hook.state.step == 5 and hook.state.tail == {"Losses/train": 1.0}


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----

@pytest.mark.parametrize(
    ("config", "mentions"),
    [
        pytest.param({"summary_writer": "runs/tb"}, ("summary_writer", "Pass e.g. {\"logdir\""), id="summary-writer-not-a-dict"),
        pytest.param({"summary_writer": {"log_dri": "runs/tb"}}, ("summary_writer", "log_dri", "Did you mean 'log_dir'"), id="summary-writer-unknown-key"),
        pytest.param({"summary_writer": {}, "log_period": 0}, ("log_period", "Pass an int of at least 1"), id="log-period-zero"),
    ],
)
def test_bad_config_is_reported_by_the_constructor(config: dict[str, object], mentions: tuple[str, ...]) -> None:
    with pytest.raises(HookConfigError) as info:
        build_hook({"name": "tensorboard_plot", **config})
    assert_reported(info.value, HookConfigError, ("TensorboardPlotHook", *mentions))


def test_logdir_under_a_file_is_reported_at_on_start(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    task = make_task([build_hook({"name": "tensorboard_plot", "summary_writer": {"logdir": str(tmp_path / "afile/tb")}})])
    with pytest.raises(HookConfigError) as info:
        task.run()
    mentions = ("TensorboardPlotHook", "summary_writer", "afile/tb", "Pass a folder you can write to")
    assert_reported(info.value, HookConfigError, mentions)
    assert task.num_updates == 0


def test_no_writer_is_a_warning_and_training_continues(caplog: pytest.LogCaptureFixture) -> None:
    warnings = run_to_the_end_and_warnings(make_task([TensorboardPlotHook(tb_writer=None)], num_epochs=1), caplog)
    assert_warned(warnings, ("TensorboardPlotHook", "no tb_writer on the primary rank", "Pass a tensorboardX.SummaryWriter"))
