"""Bad input is reported clearly: one table of cases across `build_hook` and every first-party hook.

Each case says WHERE it must be reported and what the report must contain:

- `build_hook` / `constructor`: a `HookConfigError` (or `UnknownHookError`) before any task exists;
- `on_start`: the error comes from `task.run()` (or `hook.on_start(task)`) before any step ran
  (`task.num_updates == 0`), i.e. before training starts;
- `load`: `load_checkpoint` / `resume_task` refuse a bad file before anything is restored;
- `on_end`: the export hooks convert the model when training is over, so an untraceable model
  is reported there, after every step ran (the weights are trained and checkpointable);
- `warn`: no error; a warning naming the hook, and training runs to its last phase.

Every error must be of the expected type (never a bare AssertionError, and never an
AttributeError / KeyError / TypeError escaping from inside a hook), and its message must name the
hook (or `build_hook` / `load_checkpoint`), the argument (or task attribute, or file) and say what
to do. Unwritable folders are real: those cases run in one child process that has dropped root's
DAC capabilities (root would otherwise write anywhere).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from classy_hooks.core import TaskContractError, build_hook
from classy_hooks.core.errors import HookConfigError, UnknownHookError
from classy_hooks.export._model_export import ExportError
from classy_hooks.logging import ModelTensorboardHook, TensorboardPlotHook
from classy_hooks.model import CheckpointError, ExponentialMovingAverageModelHook, load_checkpoint, resume_task
from helpers import ROOT, free_port, make_task, subprocess_env

#: Words a message uses to say what to do. Every error message must contain one of them.
FIX_HINT = re.compile(
    r"\b(Pass|Install|Add|Create|Fix|Start|Use|Set|Remove|Resume with|Upgrade|Give|Make|Try|Build)\b|Did you mean",
    re.IGNORECASE,
)
#: Exception types that mean "a hook crashed on bad input" rather than "a hook reported it".
BARE = (AssertionError, AttributeError, KeyError, TypeError, ValueError, RuntimeError, OSError)

pytestmark = pytest.mark.slow  # ~15 s in all: one child process, a few one-epoch runs

NO_TEST_PHASES = {"test_phase_period": 0}  # train phases only (models whose eval output is not logits)


# ---- models that train but cannot be traced / exported ------------------------------------------


class DetectorLike(nn.Module):
    """Like torchvision's detection models: logits while training, a list of per-image dicts in eval mode.

    `torch.jit.trace` (strict, as TensorBoard's add_graph and the TorchScript hook use it by
    default) rejects list/dict outputs.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.input_shape = net.input_shape

    def forward(self, x: torch.Tensor) -> Any:
        logits = self.net(x)
        if self.training:
            return logits
        scores, labels = logits.softmax(1).max(1)
        return [{"scores": s, "labels": c} for s, c in zip(scores, labels)]


class DataDependent(nn.Module):
    """Rescales its input only when it is large: Python control flow on tensor data, which torch.export rejects."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.input_shape = net.input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().max() > 100:
            x = x / x.abs().max()
        return self.net(x)


def task_with_model(wrapper: type[nn.Module], hooks: list[Any], **overrides: Any) -> Any:
    """A reference task whose model is wrapped (the optimizer keeps the same parameters)."""
    task = make_task(hooks, **overrides)
    task.base_model = task.model = wrapper(task.base_model)
    return task


def with_input_shape(task: Any, shape: Any) -> Any:
    task.base_model.input_shape = shape
    return task


def without(task: Any, attribute: str) -> Any:
    delattr(task, attribute)
    return task


def write_good_checkpoint(tmp: Path) -> Path:
    """A real checkpoint written by CheckpointHook during a one-epoch run."""
    folder = tmp / "ckpt"
    make_task([build_hook({"name": "checkpoint", "checkpoint_folder": str(folder)})], num_epochs=1).run()
    return folder / "checkpoint.torch"


def truncated_checkpoint(tmp: Path) -> Path:
    path = write_good_checkpoint(tmp)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def garbage_checkpoint(tmp: Path) -> Path:
    path = tmp / "checkpoint.torch"
    path.write_bytes(b"this is not a checkpoint\n" * 10)
    return path


def foreign_checkpoint(tmp: Path) -> Path:
    path = tmp / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    return path


def a_file(tmp: Path, name: str = "afile") -> Path:
    path = tmp / name
    path.write_text("not a folder")
    return path


# ---- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What an on_start / on_end / warn case does once its hooks were built without error."""

    call: Callable[[], Any]
    task: Any = None  # the reference task, to check how far training got


@dataclass(frozen=True)
class Case:
    where: str  # build_hook | constructor | on_start | load | on_end | warn
    act: Callable[[Path], Any]  # raises (build_hook/constructor/load) or returns a Run
    error: type[BaseException] | None  # None for warn
    mentions: tuple[str, ...]  # hook (or function), argument / attribute / file
    warning: str = ""  # warn cases: a regex the warning must match


def bh(**config: Any) -> Callable[[Path], Any]:
    return lambda tmp: build_hook(config)


def run_task(make: Callable[[Path], Any]) -> Callable[[Path], Run]:
    def act(tmp: Path) -> Run:
        task = make(tmp)
        return Run(task.run, task)

    return act


def call_on_start(make_hook: Callable[[Path], Any], task: Any) -> Callable[[Path], Run]:
    def act(tmp: Path) -> Run:
        hook = make_hook(tmp)
        return Run(lambda: hook.on_start(task))

    return act


CKPT = "CheckpointHook"
EMA = "ExponentialMovingAverageModelHook"
PBN = "PreciseBatchNormHook"
LOG = "LossLrMeterLoggingHook"
TBP = "TensorboardPlotHook"
MTB = "ModelTensorboardHook"
VIS = "VisdomHook"
CPX = "ModelComplexityHook"
PRF = "ProfilerHook"
TS = "TorchscriptHook"
TE = "TorchExportHook"
CSV = "OutputCSVHook"

CASES = [
    # -- build_hook ------------------------------------------------------------------------------
    pytest.param(
        Case("build_hook", bh(name="chekpoint", checkpoint_folder="x"), UnknownHookError, ("build_hook", "chekpoint")),
        id="build_hook-name-typo",
    ),
    pytest.param(
        Case("build_hook", bh(checkpoint_folder="x"), HookConfigError, ("build_hook", "'name'")),
        id="build_hook-name-missing",
    ),
    pytest.param(
        Case("build_hook", bh(name=3), HookConfigError, ("build_hook", "'name'")),
        id="build_hook-name-not-a-string",
    ),
    pytest.param(
        Case("build_hook", lambda tmp: build_hook(["checkpoint"]), HookConfigError, ("build_hook", "dict")),  # type: ignore[arg-type]
        id="build_hook-config-not-a-dict",
    ),
    pytest.param(
        Case("build_hook", bh(name="checkpoint"), HookConfigError, (CKPT, "checkpoint_folder")),
        id="checkpoint-folder-key-missing",
    ),
    pytest.param(
        Case(
            "build_hook",
            bh(name="checkpoint", checkpoint_folder="x", checkpoint_perod=2),
            HookConfigError,
            (CKPT, "checkpoint_perod", "checkpoint_period"),
        ),
        id="checkpoint-unknown-key-typo",
    ),
    pytest.param(
        Case(
            "build_hook", bh(name="progress_bar", refresh_rate=1), HookConfigError, ("ProgressBarHook", "refresh_rate")
        ),
        id="progress_bar-unknown-key",
    ),
    pytest.param(
        Case("build_hook", bh(name="ema_model_weights"), HookConfigError, (EMA, "decay")),
        id="ema-decay-key-missing",
    ),
    # -- constructor: wrong types and out-of-range values ---------------------------------------
    pytest.param(
        Case(
            "constructor",
            bh(name="checkpoint", checkpoint_folder="x", checkpoint_period=0),
            HookConfigError,
            (CKPT, "checkpoint_period"),
        ),
        id="checkpoint-period-zero",
    ),
    pytest.param(
        Case(
            "constructor",
            bh(name="checkpoint", checkpoint_folder="x", checkpoint_period="2"),
            HookConfigError,
            (CKPT, "checkpoint_period"),
        ),
        id="checkpoint-period-string",
    ),
    pytest.param(
        Case(
            "constructor",
            bh(name="checkpoint", checkpoint_folder="x", phase_types=["val"]),
            HookConfigError,
            (CKPT, "phase_types"),
        ),
        id="checkpoint-phase-types-unknown",
    ),
    pytest.param(
        Case("constructor", bh(name="checkpoint", checkpoint_folder=7), HookConfigError, (CKPT, "checkpoint_folder")),
        id="checkpoint-folder-not-a-string",
    ),
    pytest.param(
        Case("constructor", bh(name="ema_model_weights", decay=1.5), HookConfigError, (EMA, "decay")),
        id="ema-decay-above-one",
    ),
    pytest.param(
        Case("constructor", bh(name="ema_model_weights", decay=0.9, device="tpu"), HookConfigError, (EMA, "device")),
        id="ema-device-unknown",
    ),
    pytest.param(
        Case("constructor", bh(name="precise_bn", num_samples=0), HookConfigError, (PBN, "num_samples")),
        id="precise_bn-num-samples-zero",
    ),
    pytest.param(
        Case(
            "constructor",
            bh(name="precise_bn", num_samples=64, cache_samples="yes"),
            HookConfigError,
            (PBN, "cache_samples"),
        ),
        id="precise_bn-cache-samples-string",
    ),
    pytest.param(
        Case("constructor", bh(name="loss_lr_meter_logging", log_freq=-5), HookConfigError, (LOG, "log_freq")),
        id="loss_lr_meter_logging-log-freq-negative",
    ),
    pytest.param(
        Case(
            "constructor",
            bh(name="tensorboard_plot", summary_writer="runs/tb"),
            HookConfigError,
            (TBP, "summary_writer"),
        ),
        id="tensorboard_plot-summary-writer-not-a-dict",
    ),
    pytest.param(
        Case(
            "constructor",
            bh(name="tensorboard_plot", summary_writer={"log_dri": "runs/tb"}),
            HookConfigError,
            (TBP, "summary_writer", "log_dri"),
        ),
        id="tensorboard_plot-summary-writer-unknown-key",
    ),
    pytest.param(
        Case(
            "constructor",
            bh(name="tensorboard_plot", summary_writer={}, log_period=0),
            HookConfigError,
            (TBP, "log_period"),
        ),
        id="tensorboard_plot-log-period-zero",
    ),
    pytest.param(
        Case("constructor", lambda tmp: ModelTensorboardHook(tb_writer="runs/tb"), HookConfigError, (MTB, "tb_writer")),
        id="model_tensorboard-writer-is-a-path",
    ),
    pytest.param(
        Case("constructor", bh(name="visdom", server="http://127.0.0.1", port=70000), HookConfigError, (VIS, "port")),
        id="visdom-port-out-of-range",
    ),
    pytest.param(
        Case("constructor", bh(name="visdom", server="localhost", port=8097), HookConfigError, (VIS, "server")),
        id="visdom-server-without-scheme",
    ),
    pytest.param(
        Case(
            "constructor",
            bh(name="torchscript", torchscript_folder="x", use_trace="false"),
            HookConfigError,
            (TS, "use_trace"),
        ),
        id="torchscript-use-trace-string",
    ),
    pytest.param(
        Case(
            "constructor",
            bh(name="torchscript", torchscript_folder="x", device="gpu0"),
            HookConfigError,
            (TS, "device"),
        ),
        id="torchscript-device-unknown",
    ),
    pytest.param(
        Case(
            "constructor",
            bh(name="torch_export", export_folder="x", dynamic_batch=1),
            HookConfigError,
            (TE, "dynamic_batch"),
        ),
        id="torch_export-dynamic-batch-int",
    ),
    pytest.param(
        Case("constructor", bh(name="output_csv", folder="x", delimiter=", "), HookConfigError, (CSV, "delimiter")),
        id="output_csv-delimiter-two-chars",
    ),
    pytest.param(
        Case("constructor", bh(name="output_csv", folder="x", id_key=""), HookConfigError, (CSV, "id_key")),
        id="output_csv-id-key-empty",
    ),
    # -- on_start: folders, devices, servers ----------------------------------------------------
    pytest.param(
        Case(
            "on_start",
            run_task(
                lambda tmp: make_task([build_hook({"name": "checkpoint", "checkpoint_folder": str(a_file(tmp))})])
            ),
            HookConfigError,
            (CKPT, "checkpoint_folder", "afile"),
        ),
        id="checkpoint-folder-is-a-file",
    ),
    pytest.param(
        Case(
            "on_start",
            run_task(
                lambda tmp: make_task(
                    [build_hook({"name": "checkpoint", "checkpoint_folder": str(a_file(tmp) / "sub")})]
                )
            ),
            HookConfigError,
            (CKPT, "checkpoint_folder", "afile/sub"),
        ),
        id="checkpoint-folder-parent-is-a-file",
    ),
    pytest.param(
        Case(
            "on_start",
            run_task(
                lambda tmp: make_task(
                    [build_hook({"name": "tensorboard_plot", "summary_writer": {"logdir": str(a_file(tmp) / "tb")}})]
                )
            ),
            HookConfigError,
            (TBP, "summary_writer", "afile/tb"),
        ),
        id="tensorboard_plot-logdir-parent-is-a-file",
    ),
    pytest.param(
        Case(
            "on_start",
            run_task(lambda tmp: make_task([build_hook({"name": "output_csv", "folder": str(a_file(tmp))})])),
            HookConfigError,
            (CSV, "folder", "afile"),
        ),
        id="output_csv-folder-is-a-file",
    ),
    pytest.param(
        Case(
            "on_start",
            run_task(
                lambda tmp: make_task(
                    [build_hook({"name": "torch_export", "export_folder": str(tmp / "export"), "device": "cuda:0"})]
                )
            ),
            HookConfigError,
            (TE, "device", "cuda:0"),
        ),
        id="torch_export-device-cuda-unavailable",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA"),
    ),
    pytest.param(
        Case(
            "on_start",
            run_task(
                lambda tmp: make_task(
                    [build_hook({"name": "visdom", "server": "http://127.0.0.1", "port": free_port()})]
                )
            ),
            ConnectionError,
            (VIS, "server", "port"),
        ),
        id="visdom-server-unreachable",
    ),
    # -- on_start: a task missing what a hook reads ---------------------------------------------
    pytest.param(
        Case(
            "on_start",
            run_task(
                lambda tmp: without(make_task([build_hook({"name": "ema_model_weights", "decay": 0.9})]), "base_model")
            ),
            TaskContractError,
            (EMA, "base_model"),
        ),
        id="ema-task-without-base_model",
    ),
    pytest.param(
        Case(
            "on_start",
            run_task(
                lambda tmp: without(make_task([build_hook({"name": "precise_bn", "num_samples": 32})]), "dataloader")
            ),
            TaskContractError,
            (PBN, "dataloader"),
        ),
        id="precise_bn-task-without-dataloader",
    ),
    pytest.param(
        Case(
            "on_start",
            run_task(
                lambda tmp: without(make_task([build_hook({"name": "loss_lr_meter_logging", "log_freq": 2})]), "meters")
            ),
            TaskContractError,
            (LOG, "meters"),
        ),
        id="loss_lr_meter_logging-task-without-meters",
    ),
    pytest.param(
        Case(
            "on_start",
            run_task(
                lambda tmp: without(
                    make_task([build_hook({"name": "output_csv", "folder": str(tmp / "csv")})]), "last_batch"
                )
            ),
            TaskContractError,
            (CSV, "last_batch"),
        ),
        id="output_csv-task-without-last_batch",
    ),
    pytest.param(
        Case(
            "on_start",
            run_task(
                lambda tmp: without(
                    make_task([build_hook({"name": "visdom", "server": "http://127.0.0.1", "port": free_port()})]),
                    "optimizer",
                )
            ),
            TaskContractError,
            (VIS, "optimizer"),
        ),
        id="visdom-task-without-optimizer",
    ),
    pytest.param(
        Case(
            "on_start",
            call_on_start(
                lambda tmp: build_hook({"name": "checkpoint", "checkpoint_folder": str(tmp)}),
                types.SimpleNamespace(phase_type="train", phase_idx=0),
            ),
            TaskContractError,
            (CKPT, "get_classy_state"),
        ),
        id="checkpoint-task-without-get_classy_state",
    ),
    pytest.param(
        Case(
            "on_start",
            call_on_start(
                lambda tmp: build_hook({"name": "progress_bar"}), types.SimpleNamespace(phase_type="train", phase_idx=0)
            ),
            TaskContractError,
            ("ProgressBarHook", "num_batches_per_phase"),
        ),
        id="progress_bar-task-without-num_batches_per_phase",
    ),
    pytest.param(
        Case(
            "on_start",
            call_on_start(
                lambda tmp: build_hook({"name": "profiler"}),
                types.SimpleNamespace(base_model=nn.Linear(2, 2), last_batch=None),
            ),
            TaskContractError,
            (PRF, "get_batchsize_per_replica"),
        ),
        id="profiler-task-without-get_batchsize_per_replica",
    ),
    pytest.param(
        Case(
            "on_start",
            call_on_start(lambda tmp: build_hook({"name": "model_complexity"}), types.SimpleNamespace(last_batch=None)),
            TaskContractError,
            (CPX, "base_model"),
        ),
        id="model_complexity-task-without-base_model",
    ),
    pytest.param(
        Case(
            "on_start",
            call_on_start(
                lambda tmp: build_hook({"name": "torchscript", "torchscript_folder": str(tmp)}), types.SimpleNamespace()
            ),
            TaskContractError,
            (TS, "base_model"),
        ),
        id="torchscript-task-without-base_model",
    ),
    pytest.param(
        Case("on_start", run_task(lambda tmp: _ema_with_foreign_state()), HookConfigError, (EMA, "EMA state")),
        id="ema-restored-state-from-another-model",
    ),
    # -- load: corrupt, missing and foreign checkpoints -----------------------------------------
    pytest.param(
        Case(
            "load",
            lambda tmp: load_checkpoint(truncated_checkpoint(tmp)),
            CheckpointError,
            ("load_checkpoint", "checkpoint.torch"),
        ),
        id="load_checkpoint-truncated",
    ),
    pytest.param(
        Case(
            "load",
            lambda tmp: resume_task(make_task(), garbage_checkpoint(tmp)),
            CheckpointError,
            ("load_checkpoint", "checkpoint.torch"),
        ),
        id="resume-garbage-file",
    ),
    pytest.param(
        Case(
            "load",
            lambda tmp: resume_task(make_task(), tmp / "no-such-run"),
            CheckpointError,
            ("load_checkpoint", "no-such-run"),
        ),
        id="resume-missing-folder",
    ),
    pytest.param(
        Case(
            "load",
            lambda tmp: load_checkpoint(foreign_checkpoint(tmp)),
            CheckpointError,
            ("load_checkpoint", "weights.pt"),
        ),
        id="load_checkpoint-not-written-by-checkpoint-hook",
    ),
    pytest.param(
        Case(
            "load",
            lambda tmp: load_checkpoint(garbage_checkpoint(tmp), fallback=True),
            CheckpointError,
            ("load_checkpoint", "checkpoint.torch"),
        ),
        id="load_checkpoint-fallback-finds-nothing-valid",
    ),
    # -- on_end: models the export hooks cannot convert ------------------------------------------
    pytest.param(
        Case(
            "on_end",
            run_task(
                lambda tmp: task_with_model(
                    DetectorLike,
                    [build_hook({"name": "torchscript", "torchscript_folder": str(tmp / "ts")})],
                    num_epochs=1,
                    **NO_TEST_PHASES,
                )
            ),
            ExportError,
            (TS, "DetectorLike", "trace_strict"),
        ),
        id="torchscript-untraceable-model",
        marks=pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    ),
    pytest.param(
        Case(
            "on_end",
            run_task(
                lambda tmp: task_with_model(
                    DataDependent,
                    [build_hook({"name": "torch_export", "export_folder": str(tmp / "export")})],
                    num_epochs=1,
                )
            ),
            ExportError,
            (TE, "DataDependent", "torch.export"),
        ),
        id="torch_export-data-dependent-model",
    ),
    # -- warn: training goes on ----------------------------------------------------------------
    pytest.param(
        Case(
            "warn",
            run_task(
                lambda tmp: task_with_model(
                    DetectorLike,
                    [build_hook({"name": "model_tensorboard", "summary_writer": {"logdir": str(tmp / "tb")}})],
                    num_epochs=1,
                    **NO_TEST_PHASES,
                )
            ),
            None,
            (MTB, "DetectorLike"),
            warning=r"could not trace DetectorLike .*training continues",
        ),
        id="model_tensorboard-untraceable-model-warns",
        marks=pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    ),
    pytest.param(
        Case(
            "warn",
            run_task(
                lambda tmp: make_task(
                    [build_hook({"name": "output_csv", "folder": str(tmp / "csv"), "id_key": "uid"})], num_epochs=1
                )
            ),
            None,
            (CSV, "uid"),
            warning=r"a test batch has no 'uid' key .*Add a unique id",
        ),
        id="output_csv-batch-without-id-key-warns",
    ),
    pytest.param(
        Case(
            "warn",
            run_task(lambda tmp: make_task([build_hook({"name": "precise_bn", "num_samples": 10_000})], num_epochs=1)),
            None,
            (PBN, "num_samples"),
            warning=r"provided only 128 of num_samples=10000",
        ),
        id="precise_bn-more-samples-than-the-phase-warns",
    ),
    pytest.param(
        Case(
            "warn",
            run_task(lambda tmp: make_task([TensorboardPlotHook(tb_writer=None)], num_epochs=1)),
            None,
            (TBP, "tb_writer"),
            warning=r"no tb_writer on the primary rank.*Pass a tensorboardX.SummaryWriter",
        ),
        id="tensorboard_plot-no-writer-warns",
    ),
    pytest.param(
        Case(
            "warn",
            run_task(
                lambda tmp: with_input_shape(
                    make_task([build_hook({"name": "model_complexity"})], num_epochs=1), "3x16x16"
                )
            ),
            None,
            (CPX, "input_shape"),
            warning=r"input_shape must be a sequence .*FLOPs and activations not counted",
        ),
        id="model_complexity-bad-input-shape-warns",
    ),
    pytest.param(
        Case(
            "warn",
            run_task(
                lambda tmp: with_input_shape(make_task([build_hook({"name": "profiler"})], num_epochs=1), "3x16x16")
            ),
            None,
            (PRF, "input_shape"),
            warning=r"input_shape must be a sequence .*not profiling",
        ),
        id="profiler-bad-input-shape-warns",
    ),
]


def _ema_with_foreign_state() -> Any:
    """An EMA hook restored from a checkpoint of a different model (its tensor names do not match)."""
    hook = ExponentialMovingAverageModelHook(decay=0.9)
    hook.set_classy_state({"ema_state": {"fc.weight": torch.zeros(4, 4)}, "num_updates": 3, "swapped": False})
    return make_task([hook])


# ---- checks ------------------------------------------------------------------------------------


def check_message(exc: BaseException, expected: type[BaseException], mentions: tuple[str, ...]) -> str:
    message = str(exc)
    assert isinstance(exc, expected), f"expected {expected.__name__}, got {type(exc).__name__}: {message}"
    assert type(exc) not in BARE, f"a bare {type(exc).__name__} escaped: {message}"
    for word in mentions:
        assert word in message, f"the message does not mention {word!r}: {message}"
    assert FIX_HINT.search(message), f"the message does not say what to do: {message}"
    return message


def finished(task: Any) -> bool:
    return task.phase_idx == len(task.phases) - 1 and task.num_updates == task.num_train_phases * 128


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_reported_clearly(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    if case.where in ("build_hook", "constructor", "load"):
        assert case.error is not None
        with pytest.raises(BaseException) as info:
            case.act(tmp_path)
        check_message(info.value, case.error, case.mentions)
        return
    run = case.act(tmp_path)  # building the hooks must succeed: the problem is reported later
    assert isinstance(run, Run)
    if case.where == "warn":
        run.call()
        assert finished(run.task), "training did not run to its last phase"
        warnings = [
            r for r in caplog.records if r.levelno == logging.WARNING and re.search(case.warning, r.getMessage())
        ]
        assert warnings, f"no warning matching {case.warning!r}; got {[r.getMessage() for r in caplog.records]}"
        message = warnings[0].getMessage()
        for word in case.mentions:
            assert word in message, f"the warning does not mention {word!r}: {message}"
        return
    assert case.error is not None
    with pytest.raises(BaseException) as info:
        run.call()
    check_message(info.value, case.error, case.mentions)
    if run.task is not None:
        if case.where == "on_start":
            assert run.task.num_updates == 0 and getattr(run.task, "last_batch", None) is None, (
                "a training step ran before the error"
            )
        elif case.where == "on_end":
            assert finished(run.task), "the error came before training was over"


# ---- unwritable folders: real permission errors in a child without root's DAC capabilities -------

UNWRITABLE = {
    "checkpoint-folder-read-only": ({"name": "checkpoint", "checkpoint_folder": "{ro}"}, CKPT, "checkpoint_folder"),
    "checkpoint-folder-in-read-only-parent": (
        {"name": "checkpoint", "checkpoint_folder": "{ro}/new"},
        CKPT,
        "checkpoint_folder",
    ),
    "tensorboard_plot-logdir-read-only": (
        {"name": "tensorboard_plot", "summary_writer": {"logdir": "{ro}"}},
        TBP,
        "summary_writer",
    ),
    "model_tensorboard-logdir-read-only": (
        {"name": "model_tensorboard", "summary_writer": {"logdir": "{ro}"}},
        MTB,
        "summary_writer",
    ),
    "torchscript-folder-read-only": ({"name": "torchscript", "torchscript_folder": "{ro}"}, TS, "torchscript_folder"),
    "torch_export-folder-read-only": ({"name": "torch_export", "export_folder": "{ro}"}, TE, "export_folder"),
    "output_csv-folder-read-only": ({"name": "output_csv", "folder": "{ro}"}, CSV, "folder"),
}

CHILD = textwrap.dedent(
    """
    import json, sys
    from classy_hooks.core import build_hook
    from helpers import make_task
    import classy_hooks.model, classy_hooks.logging, classy_hooks.export  # imports done before dropping rights
    cases = json.loads(sys.argv[1])
    results = {}
    for case_id, config in cases.items():
        task = make_task([build_hook(config)], num_epochs=1)
        try:
            task.run()
        except BaseException as exc:
            results[case_id] = {"type": type(exc).__name__, "message": str(exc), "num_updates": task.num_updates}
        else:
            results[case_id] = {"type": None, "message": "", "num_updates": task.num_updates}
    print(json.dumps(results))
    """
)

SETPRIV = shutil.which("setpriv")


@pytest.fixture(scope="module")
def unwritable_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("unwritable")
    ro = base / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    cases = {
        case_id: json.loads(json.dumps(config).replace("{ro}", str(ro)))
        for case_id, (config, _, _) in UNWRITABLE.items()
    }
    if os.geteuid() == 0:
        if SETPRIV is None:
            pytest.skip("running as root without setpriv: cannot make a folder unwritable")
        prefix = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]
    else:
        prefix = []
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", CHILD, json.dumps(cases)],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        ro.chmod(0o700)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: dict[str, dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


@pytest.mark.parametrize("case_id", list(UNWRITABLE))
def test_unwritable_folder_is_reported_at_on_start(case_id: str, unwritable_results: dict[str, dict[str, Any]]) -> None:
    _, hook, arg = UNWRITABLE[case_id]
    result = unwritable_results[case_id]
    assert result["type"] == "HookConfigError", result
    assert result["num_updates"] == 0, "a training step ran before the error"
    message = result["message"]
    for word in (hook, arg, "Permission denied"):
        assert word in message, f"the message does not mention {word!r}: {message}"
    assert FIX_HINT.search(message), f"the message does not say what to do: {message}"
