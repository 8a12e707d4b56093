"""TensorboardPlotHook: losses, learning rates, meters and speed as TensorBoard scalars (tensorboardX)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from classy_hooks.core import ClassyHook, ClassyHookState, is_primary, register_hook
from classy_hooks.core.optional import import_extra
from classy_hooks.core.task import Task
from classy_hooks.core.validation import check_int
from classy_hooks.logging._common import (
    DISTRIBUTION,
    PhaseLearningRates,
    RunningLoss,
    as_float,
    check_tb_writer,
    clean_tag,
    create_summary_writer,
    flush_and_close,
    hook_from_summary_writer_config,
    learning_rates,
    mean_loss,
    meter_values,
)

logger = logging.getLogger(__name__)

#: Seconds a phase end waits for tensorboardX's writer thread to take the queued events.
FLUSH_WAIT = 5.0

#: The tensorboardX releases `TensorboardXThread` was tested with: the `[tensorboard]` extra's range.
TESTED_TENSORBOARDX = "2.6.2.2 to 2.6.5 (extra range >=2.6.2.2,<2.7)"

#: The tensorboardX `EventFileWriter` internals `TensorboardXThread` reads (no public API does their job).
TENSORBOARDX_INTERNALS = ("_event_queue", "_worker", "_closed")

_warned_versions: set[str] = set()


class TensorboardXThread:
    """tensorboardX's writer thread seen from outside: the one place that uses tensorboardX internals.

    tensorboardX queues events for a thread; its public `flush()` does not wait for that thread,
    and a thread that died on a failed write leaves `add_scalar` blocking for ever once the queue
    is full. No public API tells either, so this reads `EventFileWriter._event_queue` and `._worker`,
    and sets `._closed` on a failed writer (else tensorboardX's exit handler retries the broken file).
    On a writer without them it falls back to the public `flush()` alone: a tensorboardX outside
    the tested range costs one warning naming its version; other writers (e.g.
    `torch.utils.tensorboard`, whose `flush()` waits) none.
    """

    def __init__(self, hook: str, writer: Any) -> None:
        self.hook = hook
        self.writer = writer

    def _event_writer(self) -> Any:
        """tensorboardX's EventFileWriter with the internals above, or None (other writer, or fallback)."""
        event_writer = getattr(getattr(self.writer, "file_writer", None), "event_writer", None)
        if event_writer is None or type(event_writer).__module__.split(".")[0] != "tensorboardX":
            return None
        if all(hasattr(event_writer, name) for name in TENSORBOARDX_INTERNALS):
            return event_writer
        import tensorboardX  # type: ignore[import-untyped]

        version = str(getattr(tensorboardX, "__version__", "unknown"))
        if version not in _warned_versions:
            _warned_versions.add(version)
            logger.warning(
                "%s: tensorboardX %s has no EventFileWriter.%s (tested with tensorboardX %s), so phase ends "
                "cannot wait for its writer thread (a checkpoint may record a step whose scalars are not on disk "
                "yet) and a failed event-file write is not detected. Install 'tensorboardX>=2.6.2.2,<2.7'.",
                self.hook,
                version,
                "/".join(TENSORBOARDX_INTERNALS),
                TESTED_TENSORBOARDX,
            )
        return None

    def alive(self) -> bool:
        """False once tensorboardX's writer thread died (a write to the event file failed)."""
        event_writer = self._event_writer()
        worker = getattr(event_writer, "_worker", None)
        return worker is None or bool(worker.is_alive())

    def flush(self) -> None:
        """Every event added so far on disk: wait (at most `FLUSH_WAIT` s) until the thread took them, then flush.

        A marker event (no summary: readers skip it) goes into the queue last; once the queue is
        empty the thread has written everything before the marker.
        """
        event_writer = self._event_writer()
        events = getattr(event_writer, "_event_queue", None)
        if event_writer is not None and events is not None and self.alive():  # a dead thread never takes it
            from tensorboardX.proto.event_pb2 import Event  # type: ignore[import-untyped]

            event_writer.add_event(Event(wall_time=time.time()))
            deadline = time.monotonic() + FLUSH_WAIT
            while _pending(events) and time.monotonic() < deadline and self.alive():
                time.sleep(0.0005)
        self.writer.flush()

    def mark_closed(self) -> None:
        """Turn a failed writer's `add_event`/`flush`/`close` into no-ops, its exit handler's included."""
        event_writer = self._event_writer()
        if event_writer is not None:
            event_writer._closed = True


def _pending(events: Any) -> bool:
    """Whether a multiprocessing queue still holds events (qsize counts those not yet fed to its pipe)."""
    try:
        return int(events.qsize()) > 0
    except (NotImplementedError, AttributeError):  # macOS has no qsize
        return not events.empty()


def _lr_tags(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}/group_{i}" for i in range(count)]


class TensorboardPlotState(ClassyHookState):
    """Checkpointed state of the TensorBoard plot hook."""

    step: int  # iterations counted so far (the x axis)
    tail_step: int  # the newest step written (-1: none yet)
    tail: dict[str, float]  # tag -> value written at `tail_step`, rewritten after a resume at that step


@register_hook("tensorboard_plot")
class TensorboardPlotHook(ClassyHook):
    """Plot training curves to TensorBoard with a tensorboardX `SummaryWriter` (primary rank only).

    **Step unit.** Every scalar uses the same x axis: the number of training iterations (train
    batches on each replica, gradient-accumulation micro-steps included) completed so far. The
    counter lives in the hook's state, so a resumed run continues the same axis. Test-phase
    values are plotted at the iteration count the test ran after.

    When it acts:

    - `on_start` (primary): creates the writer from the `summary_writer` kwargs (when built by
      `from_config`; the log folder is created and checked, a second hook writing into the same
      folder gets its own file; `max_queue` defaults to 1000 instead of 10, which makes writes ~5x
      cheaper). When resuming (restored counter > 0), everything the previous
      run wrote at or after the restored step is hidden from readers (a TensorBoard
      `SessionLog.START` at that step, like `purge_step`) and the scalars the checkpoint saw at
      that step are written again, so the series has no duplicate or overlapping points.
    - `on_step` (train phases): counts the iteration and adds the batch loss to a running sum on
      the loss's device (no host sync); every `log_period` iterations the primary writes
      `Losses/train_step` (mean over those iterations) and `LearningRate/train_step`.
    - `on_phase_end` (primary): `Losses/<phase>` (mean of the synced losses),
      `LearningRate/train` (train phases; `/group_<i>` suffixes for several param groups: the
      rates of the phase's last train step, so a loop that steps its schedule before
      `on_phase_end`, as Classy Vision's ClassificationTask does, still gets this phase's),
      `Meters/<phase>/<meter>/<key>` for every numeric meter value, `Speed/<phase>/im_per_sec`
      from the optional `task.perf_log`, `Speed/<phase>/sample_fetch_seconds` (primary's total
      data-loading time in the phase); then flushes, after waiting for tensorboardX's writer
      thread to take every queued event, so a checkpoint written after this phase never
      records a step whose values are not on disk yet.
    - `on_end` (primary): flushes, and closes a writer the hook created.

    A writer that fails mid-run (the disk under the log folder fills up, a network file system
    goes away: an `OSError` from a flush, or tensorboardX's writer thread dying on one) costs
    one warning: the hook stops plotting and training goes on.

    Tags only use characters TensorBoard accepts, so it never rewrites them. Other ranks do
    nothing: no writer, no collectives.

    What it reads: `task.train`, `task.phase_type`, `task.losses`, `task.meters`,
    `task.optimizer`, `task.last_batch` (`loss`, `step_data["sample_fetch_time"]`), and the
    optional `task.perf_log`.
    """

    task_attributes = ("train", "phase_type", "losses", "meters", "optimizer", "last_batch")

    def __init__(self, tb_writer: Any, log_period: int = 10) -> None:
        super().__init__()
        import_extra("tensorboardX", self.name(), DISTRIBUTION, "tensorboard")
        self.tb_writer = check_tb_writer(self.name(), tb_writer, "add_scalar")
        self.log_period = check_int(self.name(), "log_period", log_period, minimum=1)
        self._writer_kwargs: dict[str, Any] | None = None
        self._owns_writer = False
        self.state: TensorboardPlotState = TensorboardPlotState()
        self.state.step = 0
        self.state.tail_step = -1
        self.state.tail = {}
        self._window_loss = RunningLoss()
        self._fetch_seconds = 0.0
        self._phase_rates = PhaseLearningRates()
        self._failed = False

    def set_classy_state(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the state; Classy Vision's own hook state (`step_count`, `cum_sample_fetch_time`) is converted.

        Classy's `step_count["train"]` counts the same train iterations as `step`, so a run resumed from a
        Classy Vision checkpoint continues its x axis; its other fields have no counterpart and are dropped.
        """
        state = dict(state_dict)
        classy_steps = state.pop("step_count", None)
        state.pop("cum_sample_fetch_time", None)
        if isinstance(classy_steps, Mapping) and "step" not in state:
            state["step"] = int(classy_steps.get("train", 0))
        super().set_classy_state(state)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TensorboardPlotHook:
        """Build from `{"summary_writer": {SummaryWriter kwargs}, "log_period": 10}`.

        The writer itself is created in `on_start`, on the primary rank only.
        """
        return hook_from_summary_writer_config(cls.name(), cls, config, {"log_period": 10})

    # ---- events ------------------------------------------------------------------------------

    def on_start(self, task: Task) -> None:
        self.check_task(task)
        if not is_primary():
            return
        step = int(self.state.step)
        if self.tb_writer is None and self._writer_kwargs is None:
            logger.warning(
                "%s: no tb_writer on the primary rank, so nothing will be plotted. Pass a "
                "tensorboardX.SummaryWriter as tb_writer, or build the hook with 'summary_writer' kwargs.",
                self.name(),
            )
        if self.tb_writer is None and self._writer_kwargs is not None:
            self.tb_writer = self._create_writer(purge_step=step if step > 0 else None)
            self._owns_writer = True
        elif self.tb_writer is not None and step > 0:
            self._hide_points_from(step)
        if self.tb_writer is not None and step > 0 and int(self.state.tail_step) == step:
            tail = dict(self.state.tail)
            for tag, value in tail.items():
                self.tb_writer.add_scalar(tag, value, step)
            logger.info("%s: resumed at step %d; rewrote %d scalars of that step.", self.name(), step, len(tail))

    def on_phase_start(self, task: Task) -> None:
        self._window_loss.reset()
        self._fetch_seconds = 0.0
        self._phase_rates.start(task)

    def on_step(self, task: Task) -> None:
        writes = self.tb_writer is not None and is_primary()
        last_batch = task.last_batch
        if writes and last_batch is not None and last_batch.step_data:
            fetch = last_batch.step_data.get("sample_fetch_time")
            if isinstance(fetch, (int, float)):
                self._fetch_seconds += float(fetch)
        if not task.train:
            return
        self.state.step = step = int(self.state.step) + 1
        if not writes:
            return
        self._phase_rates.step(task)
        if last_batch is not None:
            self._window_loss.add(last_batch.loss)
        if step % self.log_period == 0 and self._writer_alive():
            window_mean = self._window_loss.mean()
            if window_mean is not None:
                self._write("Losses/train_step", window_mean, step)
            rates = learning_rates(task)
            for tag, rate in zip(_lr_tags("LearningRate/train_step", len(rates)), rates):
                self._write(tag, rate, step)
            self._window_loss.reset()

    def on_phase_end(self, task: Task) -> None:
        if self.tb_writer is None or not is_primary() or not self._writer_alive():
            return
        step = int(self.state.step)
        phase = clean_tag(task.phase_type)
        loss = mean_loss(task.losses)
        if loss is not None:
            self._write(f"Losses/{phase}", loss, step)
        if task.train:
            rates = self._phase_rates.rates(task)
            for tag, rate in zip(_lr_tags("LearningRate/train", len(rates)), rates):
                self._write(tag, rate, step)
        for meter in task.meters:
            values = meter_values(meter)
            if not values:
                logger.warning(
                    "%s: meter %r has no numeric value to plot (value=%r); skipped.",
                    self.name(),
                    meter.name,
                    meter.value,
                )
            for key, value in values.items():
                self._write(f"Meters/{phase}/{clean_tag(meter.name)}/{clean_tag(key)}", value, step)
        for entry in getattr(task, "perf_log", None) or []:
            speed = as_float(entry.get("im_per_sec")) if isinstance(entry, Mapping) else None
            if speed is not None:
                self._write(f"Speed/{clean_tag(entry.get('tag', phase))}/im_per_sec", speed, step)
        if task.train or self._fetch_seconds:
            self._write(f"Speed/{phase}/sample_fetch_seconds", self._fetch_seconds, step)
        try:
            self._flush()
        except (OSError, ValueError) as exc:  # ValueError: the file was closed under the writer
            self._writer_failed(f"{type(exc).__name__}: {exc}")

    def on_end(self, task: Task) -> None:
        if self.tb_writer is None or not is_primary():
            return
        if self._failed:
            self._release_writer()
            return
        try:
            flush_and_close(self.tb_writer, self._owns_writer)
        except (OSError, ValueError) as exc:
            self._writer_failed(f"{type(exc).__name__}: {exc}")
        self._release_writer()

    # ---- helpers -----------------------------------------------------------------------------

    def _writer_alive(self) -> bool:
        """Whether writes still reach the event file; warns once when they stopped.

        tensorboardX writes from a thread that dies on the first failing write; queued events
        would then pile up until `add_scalar` blocks forever, so the hook stops writing.
        """
        if self._failed:
            return False
        if not TensorboardXThread(self.name(), self.tb_writer).alive():
            self._writer_failed("tensorboardX's writer thread stopped after a failed write to the event file")
            return False
        return True

    def _writer_failed(self, why: str) -> None:
        self._failed = True
        logger.warning(
            "%s: writing to TensorBoard failed (%s); training continues without TensorBoard plots.",
            self.name(),
            why,
        )

    def _release_writer(self) -> None:
        """Let go of a writer the hook created; after a failure, without touching its file again.

        A failed tensorboardX writer is marked closed (its `add_event`/`flush`/`close` become
        no-ops), else its exit handler retries the broken file and prints a second traceback.
        """
        if not self._owns_writer:
            return
        if self._failed:
            TensorboardXThread(self.name(), self.tb_writer).mark_closed()
        self.tb_writer = None
        self._owns_writer = False

    def _write(self, tag: str, value: float, step: int) -> None:
        """Write one scalar and remember it if it belongs to the newest step (replayed on resume)."""
        assert self.tb_writer is not None
        self.tb_writer.add_scalar(tag, value, step)
        if step != self.state.tail_step:
            self.state.tail_step = step
            self.state.tail = {}
        self.state.tail[tag] = float(value)

    def _flush(self) -> None:
        """Put everything written so far on disk before a checkpoint can record this phase."""
        assert self.tb_writer is not None
        TensorboardXThread(self.name(), self.tb_writer).flush()

    def _create_writer(self, purge_step: int | None) -> Any:
        # tensorboardX's default queue of 10 events makes add_scalar wait on its writer thread
        # (~170 us per scalar here, ~30 us with room); the hook flushes at every phase end anyway
        return create_summary_writer(self.name(), self._writer_kwargs, max_queue=1000, purge_step=purge_step)

    def _hide_points_from(self, step: int) -> None:
        """Mark a restart at `step` in a writer we did not create (what `purge_step` does)."""
        tensorboardx = import_extra("tensorboardX", self.name(), DISTRIBUTION, "tensorboard")
        file_writer = getattr(self.tb_writer, "file_writer", None)
        if isinstance(self.tb_writer, tensorboardx.SummaryWriter) and file_writer is not None:
            from tensorboardX.proto.event_pb2 import Event, SessionLog

            file_writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
        else:
            logger.warning(
                "%s: resuming at step %d with a %s; points the previous run wrote after its checkpoint "
                "cannot be hidden. Build the hook with 'summary_writer' kwargs to have them purged.",
                self.name(),
                step,
                type(self.tb_writer).__name__,
            )
