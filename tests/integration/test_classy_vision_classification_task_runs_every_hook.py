"""Story: a Classy Vision user keeps their config. An unmodified `classy_vision.tasks.ClassificationTask`, built by
Classy's own `build_task` from a config whose `"hooks"` list names all thirteen hooks, is trained by Classy's own
`LocalTrainer` on the CPU with classy-hooks' hooks (`use_in_classy_vision`), and every hook does its job: the
checkpoint loads (with Classy's own loader too), TensorBoard's own reader sees the scalars and the graph, Visdom's
server has the curves, the CSV holds the predictions, the TorchScript and torch.export files load and match the
model, the complexity, profiler, precise-BN, progress and loss/LR hooks report what they measured."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from classy_vision_runs import (
    BATCH,
    TEST_SAMPLES,
    TRAIN_SAMPLES,
    build_classification_task,
    classification_config,
    classy_hooks_in_classy_vision,
    train,
)

from classy_hooks.core import ordered_hooks
from classy_hooks.core.deprecations import quiet_jit_deprecations
from helpers import read_scalars
from visdom_server import VisdomServer

NUM_EPOCHS = 2
PHASES = 2 * NUM_EPOCHS  # train and test alternate
ENV = "classy_vision_task"


def every_hook(run_dir: Path, port: int) -> list[dict[str, Any]]:
    """The thirteen hooks, by the names a Classy Vision config uses, writing under `run_dir`."""
    return [
        # listed first, as a Classy Vision config may (Classy moved its own CheckpointHook last); see the fixture
        {"name": "checkpoint", "checkpoint_folder": str(run_dir / "checkpoints"), "input_args": {"run": "classy"}},
        {"name": "loss_lr_meter_logging", "log_freq": 2},
        {"name": "progress_bar"},
        {"name": "model_complexity"},
        {"name": "profiler"},
        {"name": "tensorboard_plot", "summary_writer": {"logdir": str(run_dir / "tensorboard")}, "log_period": 2},
        {"name": "model_tensorboard", "summary_writer": {"logdir": str(run_dir / "tensorboard")}},
        {"name": "visdom", "server": "http://127.0.0.1", "port": port, "env": ENV},
        {"name": "precise_bn", "num_samples": 16},
        {"name": "ema_model_weights", "decay": 0.9, "device": "cpu"},
        {"name": "output_csv", "folder": str(run_dir / "predictions")},
        {"name": "torchscript", "torchscript_folder": str(run_dir / "export")},
        {"name": "torch_export", "export_folder": str(run_dir / "export")},
    ]


class Records(logging.Handler):
    """Every log record of the run (a module-scoped run cannot use the function-scoped caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, logger_prefix: str) -> list[str]:
        return [r.getMessage() for r in self.records if r.name.startswith(logger_prefix)]


@dataclass
class Run:
    task: Any
    hooks: dict[str, Any]
    folder: Path
    log: Records
    visdom: VisdomServer


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, shared_visdom_server: VisdomServer) -> Iterator[Run]:
    """One Classy Vision run with every hook, shared by the checks below (each checks one hook's output)."""
    folder = tmp_path_factory.mktemp("classy_run")
    config = classification_config(every_hook(folder, shared_visdom_server.port), num_epochs=NUM_EPOCHS)
    log = Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(log)
    root.setLevel(logging.INFO)
    try:
        with classy_hooks_in_classy_vision():
            task = build_classification_task(config)
            task.set_hooks(ordered_hooks(task.hooks))  # the declared order (CheckpointHook last): Classy iterates
            hooks = {hook.name(): hook for hook in task.hooks}
            train(task)
    finally:
        root.removeHandler(log)
        root.setLevel(level)
    yield Run(task, hooks, folder, log, shared_visdom_server)


pytestmark = pytest.mark.slow


def test_the_config_hooks_list_built_classy_hooks_hooks_and_the_run_finished(run: Run) -> None:
    assert len(run.hooks) == 13
    assert all(type(h).__module__.startswith("classy_hooks.") for h in run.task.hooks)
    assert run.task.phase_idx == PHASES - 1 and run.task.num_updates == NUM_EPOCHS * TRAIN_SAMPLES
    assert run.task.hooks[-1] is run.hooks["CheckpointHook"]  # saves after every other hook acted


def test_checkpoint_loads_with_weights_only_and_with_classy_vision_s_own_loader(run: Run) -> None:
    from classy_vision.generic.util import load_checkpoint as classy_load_checkpoint

    checkpoints = run.folder / "checkpoints"
    saved = torch.load(checkpoints / "checkpoint.torch", weights_only=True)
    assert classy_load_checkpoint(str(checkpoints))["classy_state_dict"]["phase_idx"] == PHASES - 2
    assert sorted(p.name for p in checkpoints.glob("model_phase-*_end.torch")) == [
        f"model_phase-{i}_end.torch" for i in range(0, PHASES, 2)
    ]
    assert saved["input_args"] == {"run": "classy"}
    state = saved["classy_state_dict"]
    assert set(state["hooks"]) == set(run.hooks)
    assert state["train_phase_idx"] == NUM_EPOCHS - 1 and state["num_updates"] == run.task.num_updates


def test_ema_weights_are_in_the_model_after_the_last_test_phase(run: Run) -> None:
    saved = torch.load(run.folder / "checkpoints" / "checkpoint.torch", weights_only=True)
    ema_state = saved["classy_state_dict"]["hooks"]["ExponentialMovingAverageModelHook"]
    assert ema_state["swapped"] is False  # saved at the last train phase's end, before the test phase swapped
    assert run.hooks["ExponentialMovingAverageModelHook"].state.swapped is True
    model_weights = run.task.base_model.state_dict()
    training_weights = run.hooks["ExponentialMovingAverageModelHook"].state.ema_state  # set aside while swapped
    floating = [n for n, t in ema_state["ema_state"].items() if t.is_floating_point()]
    assert floating
    for name in floating:  # what the model holds now is the EMA saved at the last train phase's end
        torch.testing.assert_close(model_weights[name], ema_state["ema_state"][name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(training_weights[n], model_weights[n]) for n in floating), "the EMA never moved"


def test_precise_bn_recomputed_statistics(run: Run) -> None:
    assert run.hooks["PreciseBatchNormHook"].last_num_samples == 16


def test_tensorboard_scalars_and_graph_read_by_tensorboard_s_own_reader(run: Run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = read_scalars(run.folder / "tensorboard")
    assert len(scalars["Losses/train"]) == NUM_EPOCHS and len(scalars["Losses/test"]) == NUM_EPOCHS
    assert len(scalars["Meters/test/accuracy/top_1"]) == NUM_EPOCHS
    assert len(scalars["Losses/train_step"]) == NUM_EPOCHS * TRAIN_SAMPLES // BATCH // 2
    lr_tags = sorted(tag for tag in scalars if tag.startswith("LearningRate/train") and "step" not in tag)
    assert lr_tags, sorted(scalars)
    for tag in lr_tags:  # the learning rate used during each train phase (Classy's step schedule: 0.1, then 0.05)
        assert [round(v, 6) for _, v in scalars[tag]] == [0.1, 0.05], (tag, scalars[tag])
    accumulators = [EventAccumulator(str(p.parent)) for p in (run.folder / "tensorboard").rglob("events.out.tfevents.*")]
    for accumulator in accumulators:
        accumulator.Reload()
    assert any(acc.Tags()["graph"] for acc in accumulators), "ModelTensorboardHook wrote no graph"


def test_visdom_server_holds_the_curves(run: Run) -> None:
    losses = run.visdom.lines(f"{ENV}:loss", ENV)  # window ids are <env>:<metric>
    assert sorted(losses) == ["test", "train"], losses
    assert [x for x, _ in losses["train"]] == [x for x, _ in losses["test"]] == list(range(NUM_EPOCHS))
    rates = run.visdom.lines(f"{ENV}:learning_rate", ENV)
    assert rates and all([round(y, 6) for _, y in line] == [0.1, 0.05] for line in rates.values()), rates


def test_model_complexity_profiler_progress_and_loss_lr_logging(run: Run) -> None:
    complexity = run.hooks["ModelComplexityHook"]
    assert complexity.num_parameters == sum(p.numel() for p in run.task.base_model.parameters())
    assert complexity.num_flops > 0
    assert run.log.messages("classy_hooks.logging.profiler_hook"), "ProfilerHook logged no profile"
    loss_lines = [m for m in run.log.messages("classy_hooks.logging.loss_lr_meter_logging_hook") if "loss" in m.lower()]
    assert len(loss_lines) >= PHASES, loss_lines
    progress = run.log.messages("classy_hooks.logging.progress_bar_hook")
    train_batches, test_batches = TRAIN_SAMPLES // BATCH, TEST_SAMPLES // BATCH
    assert sum(f"{train_batches}/{train_batches}" in m for m in progress) == NUM_EPOCHS, progress
    assert sum(f"{test_batches}/{test_batches}" in m for m in progress) == NUM_EPOCHS, progress


def _final_model_output(run: Run, x: torch.Tensor) -> torch.Tensor:
    model = run.task.base_model
    model.eval()
    with torch.no_grad():
        return model(x)


def test_torchscript_file_loads_and_matches_the_final_model(run: Run) -> None:
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with quiet_jit_deprecations():
        scripted = torch.jit.load(str(run.folder / "export" / "torchscript.pt"))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), _final_model_output(run, x), rtol=1e-4, atol=1e-5)


def test_torch_export_program_takes_classy_s_real_batch_shape(run: Run) -> None:
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    exported = torch.export.load(str(run.folder / "export" / "exported_program.pt2")).module()
    with torch.no_grad():
        torch.testing.assert_close(exported(x), _final_model_output(run, x), rtol=1e-4, atol=1e-5)


def test_every_test_phase_s_predictions_are_kept(run: Run) -> None:
    rows = []
    for path in sorted((run.folder / "predictions").rglob("*.csv")):
        with path.open() as f:
            rows += list(csv.DictReader(f, delimiter="\t"))
    # whatever the layout (one file, a file per phase, a latest copy beside them): no test phase's rows are lost
    per_sample = Counter(int(r["sample_id"]) for r in rows)
    assert set(per_sample) == set(range(TEST_SAMPLES))
    assert min(per_sample.values()) >= NUM_EPOCHS, [p.name for p in (run.folder / "predictions").rglob("*")]
