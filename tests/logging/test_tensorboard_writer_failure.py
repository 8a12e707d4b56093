"""A TensorBoard event file that stops taking writes mid-run costs TensorboardPlotHook one warning, not the run.

The disk-full version of this fault, on a real full filesystem, is in
tests/integration/test_faults_with_every_hook.py; here the event file tensorboardX holds open is
closed under the writer, so its writer thread and its flush both fail, in-process and fast.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from logging_hook_utils import read_scalars

from classy_hooks.core import ClassyHook, build_hook
from classy_hooks.logging import TensorboardPlotHook
from helpers import make_task


class _BreakEventFile(ClassyHook):
    """At the start of phase 1, closes the file object the hook's tensorboardX writer writes to."""

    on_start = on_step = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, hook: TensorboardPlotHook) -> None:
        super().__init__()
        self.hook = hook

    def on_phase_start(self, task: Any) -> None:
        if task.phase_idx == 1:
            events = self.hook.tb_writer.file_writer.event_writer._ev_writer
            events._py_recordio_writer._writer.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # tensorboardX's thread dies
def test_a_failing_event_file_costs_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hook = build_hook({"name": "tensorboard_plot", "summary_writer": {"logdir": str(tmp_path / "tb")}, "log_period": 1})
    assert isinstance(hook, TensorboardPlotHook)
    task = make_task([hook, _BreakEventFile(hook)], num_epochs=3)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="classy_hooks.logging"):
        task.run()  # 6 phases: the file breaks before phase 1, training goes on to the end
    assert task.phase_idx == 5
    assert time.monotonic() - start < 15  # a stall would wait out the ~5 s flush at each of the 4 later phase ends
    failures = [r.getMessage() for r in caplog.records if "writing to TensorBoard failed" in r.getMessage()]
    assert len(failures) == 1, failures
    assert failures[0].startswith("TensorboardPlotHook:") and "training continues" in failures[0]
    assert hook.tb_writer is None  # the writer it created was let go
    assert [step for step, _ in read_scalars(tmp_path / "tb")["Losses/train"]] == [8]  # phase 0 stays readable


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # tensorboardX's thread dies
def test_a_failing_graph_write_costs_model_tensorboard_hook_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(logdir=str(tmp_path / "tb"))
    writer.file_writer.event_writer._ev_writer._py_recordio_writer._writer.close()
    hook = build_hook({"name": "model_tensorboard", "summary_writer": {"logdir": str(tmp_path / "unused")}})
    hook.tb_writer = writer  # a writer of the user's whose file has gone bad
    task = make_task([hook], num_epochs=1)
    with caplog.at_level(logging.WARNING, logger="classy_hooks.logging"):
        task.run()
    assert task.phase_idx == 1
    failures = [r.getMessage() for r in caplog.records if "writing the graph to TensorBoard failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].startswith("ModelTensorboardHook:")
    writer.file_writer.event_writer._closed = True  # spare tensorboardX's exit handler the same failure
