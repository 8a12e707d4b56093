"""ModelTensorboardHook: the graph lands in the event file (read by EventAccumulator), modes are restored."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from logging_hook_utils import has_graph
from tensorboardX import SummaryWriter

from bad_input import assert_reported, assert_warned, run_to_the_end_and_warnings
from classy_hooks.core import HookConfigError, build_hook
from classy_hooks.logging import ModelTensorboardHook
from helpers import make_task
from untraceable_models import DetectorLike, wrap_model

LOGGER = "classy_hooks.logging.model_tensorboard_hook"


def _hook(logdir: Path) -> ModelTensorboardHook:
    return build_hook({"name": "model_tensorboard", "summary_writer": {"logdir": str(logdir)}})  # type: ignore[return-value]


def test_constructors_and_bad_arguments(tmp_path: Path) -> None:
    writer = SummaryWriter(logdir=str(tmp_path / "direct"))
    assert ModelTensorboardHook(writer).tb_writer is writer
    assert isinstance(
        ModelTensorboardHook.from_config({"summary_writer": {"logdir": str(tmp_path)}}), ModelTensorboardHook
    )
    assert isinstance(_hook(tmp_path / "tb"), ModelTensorboardHook) and not (tmp_path / "tb").exists()
    with pytest.raises(HookConfigError, match="ModelTensorboardHook: argument 'tb_writer'"):
        ModelTensorboardHook(42)
    with pytest.raises(HookConfigError, match="unknown key 'log_period'"):
        build_hook({"name": "model_tensorboard", "summary_writer": {}, "log_period": 3})
    with pytest.raises(HookConfigError, match="unknown key 'flush_seconds'"):
        build_hook({"name": "model_tensorboard", "summary_writer": {"flush_seconds": 3}})
    writer.close()


def test_graph_from_input_shape_in_eval_mode_with_modes_restored(tmp_path: Path) -> None:
    task = make_task([_hook(tmp_path / "tb")], num_epochs=1)
    modes_seen: list[bool] = []
    task.base_model.register_forward_pre_hook(lambda module, args: modes_seen.append(module.training))
    task.base_model.train()
    task.base_model.head.eval()  # a module with its own mode keeps it
    task.hooks[0].on_start(task)
    assert modes_seen and set(modes_seen) == {False}  # traced (and checked) in eval mode
    assert task.base_model.training and not task.base_model.head.training
    assert has_graph(tmp_path / "tb")


def test_graph_from_the_first_batch_when_the_model_has_no_input_shape(tmp_path: Path) -> None:
    task = make_task([_hook(tmp_path / "tb")], num_epochs=1)
    del task.base_model.input_shape
    task.run()
    assert task.hooks[0].graph_written and has_graph(tmp_path / "tb")


def test_a_model_that_cannot_be_traced_costs_a_warning_not_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    class Untraceable(torch.nn.Module):
        input_shape = (3, 16, 16)

        def forward(self, x: torch.Tensor) -> dict[str, object]:
            return {"logits": x.mean(), "note": "strings cannot be traced"}

    task = make_task([_hook(tmp_path / "tb")], num_epochs=1)
    task.base_model = Untraceable()
    task.hooks[0].on_start(task)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "could not trace Untraceable" in warnings[0]
    assert not task.hooks[0].graph_written
    assert capsys.readouterr().out == ""  # tensorboardX's own print() of the error is kept off stdout


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----

def test_writer_given_as_a_path_is_reported_by_the_constructor() -> None:
    with pytest.raises(HookConfigError) as info:
        ModelTensorboardHook(tb_writer="runs/tb")  # type: ignore[arg-type]
    assert_reported(info.value, HookConfigError, ("ModelTensorboardHook", "tb_writer", "Pass tensorboardX.SummaryWriter"))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_untraceable_model_is_a_warning_and_training_continues(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hook = build_hook({"name": "model_tensorboard", "summary_writer": {"logdir": str(tmp_path / "tb")}})
    task = wrap_model(make_task([hook], num_epochs=1, test_phase_period=0), DetectorLike)
    warnings = run_to_the_end_and_warnings(task, caplog)
    assert_warned(warnings, ("ModelTensorboardHook", "could not trace DetectorLike", "training continues"))
