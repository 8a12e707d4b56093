"""`CheckpointHook`: crash-safe checkpoints of the whole task at the end of phases."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from typing import Any, Optional

from classy_hooks.core import ClassyHook, ClassyHookState, is_primary, register_hook
from classy_hooks.core.files import ensure_writable_folder
from classy_hooks.core.validation import check_bool, check_int, check_plain_data, check_str, check_subset, config_error
from classy_hooks.model.checkpoint_io import (
    check_weights_only,
    make_checkpoint,
    phase_checkpoint_name,
    remove_stale_temp_files,
    snapshot_to_cpu,
    write_checkpoint,
)

logger = logging.getLogger(__name__)


class CheckpointState(ClassyHookState):
    """Checkpointed state of the checkpoint hook."""

    phase_counter: int  # eligible phases seen (the `checkpoint_period` count)


@register_hook("checkpoint")
class CheckpointHook(ClassyHook):
    """Save the task's full state at the end of phases, so that a run can always be resumed.

    When it acts: `on_start` checks (primary rank) that `checkpoint_folder` exists or can be
    created and is writable, and removes temporary files a killed save left behind. `on_phase_end`
    (primary rank, phases whose type is in `phase_types`, every `checkpoint_period`-th such phase)
    writes `{"input_args", "classy_state_dict", "checkpoint_format_version"}` to
    `<folder>/checkpoint.torch` (the latest) and `<folder>/model_phase-<phase_idx>_end.torch`,
    each replaced atomically (temp file, fsync, `os.replace`, folder fsync). Nothing is written
    in test-only runs. `on_end` waits for a non-blocking save still in flight.

    What it reads: `task.phase_type`, `task.phase_idx`, `task.get_classy_state()`, and the
    optional `task.test_only` and `task.hooks`.

    Order: the state must be captured after every other hook has finished its `on_phase_end`
    (precise BatchNorm changes the model there). So in `on_start` the hook moves itself to the
    end of `task.hooks` (rebinding the attribute to a reordered list; the loop's current pass is
    unaffected), wherever it was listed. Loops that keep their own list of hooks must put it last.

    `non_blocking=True` (default False): the state is copied to CPU memory on the training
    thread (into the previous snapshot's memory when it fits) and written by a background
    thread; at most one save is in flight (a new save first
    waits for the previous one), `on_end` waits for it, and a failed background save is raised
    at the next save or at `on_end`. The thread is not a daemon, so a save in flight when training
    fails still completes before the process exits. Call `wait()` to block until it is written.

    The phase counter behind `checkpoint_period` is hook state, so it survives a resume.
    """

    task_attributes = ("phase_type", "phase_idx", "get_classy_state")

    def __init__(
        self,
        checkpoint_folder: str,
        input_args: Any = None,
        phase_types: Optional[Collection[str]] = None,
        checkpoint_period: int = 1,
        non_blocking: bool = False,
    ) -> None:
        super().__init__()
        name = self.name()
        self.checkpoint_folder = check_str(name, "checkpoint_folder", checkpoint_folder)
        if input_args is not None and not isinstance(input_args, dict):
            raise config_error(
                name,
                "input_args",
                f"must be a dict or None, got {type(input_args).__name__}",
                "Pass the run's arguments as a dict of plain values (it is stored in every checkpoint).",
            )
        self.input_args = check_plain_data(name, "input_args", input_args)
        self.phase_types = check_subset(
            name, "phase_types", ["train"] if phase_types is None else phase_types, {"train", "test"}
        )
        self.checkpoint_period = check_int(name, "checkpoint_period", checkpoint_period, minimum=1)
        self.non_blocking = check_bool(name, "non_blocking", non_blocking)
        self.state: CheckpointState = CheckpointState()
        self.state.phase_counter = 0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._snapshot_buffers: list[Any] = []  # CPU tensors of the last snapshot, reused by the next
        self.last_stall_seconds = 0.0

    on_phase_start = ClassyHook._noop
    on_step = ClassyHook._noop

    def on_start(self, task: Any) -> None:
        self.check_task(task)
        hooks = getattr(task, "hooks", None)
        if isinstance(hooks, (list, tuple)) and any(h is self for h in hooks) and hooks[-1] is not self:
            if isinstance(hooks, list):
                task.hooks = [h for h in hooks if h is not self] + [self]
                logger.info("%s moved to the end of task.hooks so that it saves after every other hook.", self.name())
            else:
                logger.warning(
                    "%s is not the last of task.hooks, which is a tuple it cannot reorder: hooks after it act "
                    "after the save. List it last.",
                    self.name(),
                )
        if not is_primary() or getattr(task, "test_only", False):
            return
        folder = ensure_writable_folder(self.name(), "checkpoint_folder", self.checkpoint_folder)
        removed = remove_stale_temp_files(folder)
        if removed:
            logger.warning(
                "%s: removed %d temporary file(s) left by an interrupted save in %s.", self.name(), len(removed), folder
            )

    def on_phase_end(self, task: Any) -> None:
        if not is_primary() or task.phase_type not in self.phase_types:
            return
        self.state.phase_counter += 1
        if self.state.phase_counter % self.checkpoint_period != 0:
            return
        if getattr(task, "test_only", False):
            return
        self.save(task, phase_checkpoint_name(task.phase_idx))

    def on_end(self, task: Any) -> None:
        self.wait()

    def save(self, task: Any, phase_file: str | None = None) -> None:
        """Write a checkpoint of `task` now (or start writing it, with `non_blocking`)."""
        start = time.perf_counter()
        self.wait()
        checkpoint = make_checkpoint(task.get_classy_state(), self.input_args)
        if not self.non_blocking:
            path = write_checkpoint(self.checkpoint_folder, checkpoint, phase_file)
            self.last_stall_seconds = time.perf_counter() - start
            logger.info("Saved checkpoint %s (phase %s)", path, getattr(task, "phase_idx", "?"))
            return
        check_weights_only(checkpoint)  # here, so that the error names the key on the training thread
        snapshot = snapshot_to_cpu(checkpoint, self._snapshot_buffers)
        self._thread = threading.Thread(
            target=self._write_in_background, args=(snapshot, phase_file), name="classy-hooks-checkpoint", daemon=False
        )
        self._thread.start()
        self.last_stall_seconds = time.perf_counter() - start

    def _write_in_background(self, checkpoint: dict[str, Any], phase_file: str | None) -> None:
        try:
            path = write_checkpoint(self.checkpoint_folder, checkpoint, phase_file)
            logger.info("Saved checkpoint %s (background)", path)
        except BaseException as exc:
            self._error = exc

    def wait(self) -> None:
        """Block until a background save in flight is written; re-raise its error if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(
                f"{self.name()}: a background checkpoint save to {self.checkpoint_folder} failed: {error}"
            ) from error
