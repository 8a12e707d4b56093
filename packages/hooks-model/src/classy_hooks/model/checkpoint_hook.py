"""`CheckpointHook`: crash-safe checkpoints of the whole task at the end of phases."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Optional

from classy_hooks.core import (
    ClassyHook,
    ClassyHookState,
    all_reduce,
    is_distributed,
    is_primary,
    register_hook,
)
from classy_hooks.core.files import ensure_writable_folder
from classy_hooks.core.validation import check_bool, check_int, check_plain_data, check_str, check_subset, config_error
from classy_hooks.model.checkpoint_io import (
    check_weights_only,
    holds_dtensors,
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

    Sharded (`sharded=True`, or `None`, the default: when the task state holds DTensors, e.g. an
    FSDP2 model): a collective. Every rank counts phases and, at the same phase ends, saves its own
    shard with `torch.distributed.checkpoint` into `<folder>/.model_phase-<N>_end.dcp.tmp/`; the
    primary rank then renames it to `model_phase-<N>_end.dcp/` and atomically points
    `<folder>/checkpoint.latest` at it (see `classy_hooks.model.sharded_checkpoint`). The model and
    optimizer state come from DCP's `get_state_dict` (optimizer keyed by parameter name). With
    `non_blocking`, `dcp.async_save` copies the state to CPU memory on the training thread and
    writes it in the background over a process group of its own. In sharded mode `on_start` also
    checks that every rank sees the same folder (it must be on a shared file system).
    """

    task_attributes = ("phase_type", "phase_idx", "get_classy_state")

    def __init__(
        self,
        checkpoint_folder: str,
        input_args: Any = None,
        phase_types: Optional[Collection[str]] = None,
        checkpoint_period: int = 1,
        non_blocking: bool = False,
        sharded: Optional[bool] = None,
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
        self.sharded = None if sharded is None else check_bool(name, "sharded", sharded)
        self._sharded_mode = bool(sharded)  # decided in on_start when `sharded` is None
        self._save_group: Any = None  # the process group of background sharded saves
        self._stager: Any = None  # CPU copies of background sharded saves, reused by the next one
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
        if getattr(task, "test_only", False):
            return
        self._sharded_mode = self._decide_sharded(task)
        if self._sharded_mode:
            self._start_sharded()
            return
        if not is_primary():
            return
        folder = ensure_writable_folder(self.name(), "checkpoint_folder", self.checkpoint_folder)
        removed = remove_stale_temp_files(folder)
        if removed:
            logger.warning(
                "%s: removed %d temporary file(s) left by an interrupted save in %s.", self.name(), len(removed), folder
            )

    def _decide_sharded(self, task: Any) -> bool:
        """`sharded`, or (None) whether the task state holds DTensors on any rank; the same answer on all ranks."""
        if self.sharded is not None:
            return self.sharded
        local = holds_dtensors(task.get_classy_state())
        return bool(all_reduce(float(local), op="max")) if is_distributed() else local

    def _start_sharded(self) -> None:
        """Every rank: the folder exists, no stale temporary save is left, and all ranks see the same folder."""
        from classy_hooks.core.shared_folder import check_shared_folder
        from classy_hooks.model.sharded_checkpoint import remove_stale_sharded_temp

        if is_primary():
            folder = ensure_writable_folder(self.name(), "checkpoint_folder", self.checkpoint_folder)
            removed = remove_stale_temp_files(folder) + remove_stale_sharded_temp(folder)
            if removed:
                logger.warning(
                    "%s: removed %d temporary file(s) or folder(s) left by an interrupted save in %s.",
                    self.name(),
                    len(removed),
                    folder,
                )
        check_shared_folder(
            self.name(),
            "checkpoint_folder",
            self.checkpoint_folder,
            why="In sharded mode every rank writes its shard there",
            fix="Mount one shared folder at the same path on every node: node-local disks cannot hold a sharded "
            "checkpoint that a restarted job can resume from.",
        )
        if self.non_blocking and is_distributed() and self._save_group is None:
            import torch.distributed as dist

            # background saves run collectives of their own: a separate group keeps them from interleaving
            # with the training loop's collectives on the default group
            self._save_group = dist.new_group(backend="gloo")

    def on_phase_end(self, task: Any) -> None:
        if task.phase_type not in self.phase_types or (not self._sharded_mode and not is_primary()):
            return  # sharded: every rank counts and decides alike (a save is a collective)
        self.state.phase_counter += 1
        if self.state.phase_counter % self.checkpoint_period != 0:
            return
        if getattr(task, "test_only", False):
            return
        if self._sharded_mode:
            from classy_hooks.model.sharded_checkpoint import sharded_checkpoint_name

            self.save_sharded(task, sharded_checkpoint_name(task.phase_idx))
        else:
            self.save(task, phase_checkpoint_name(task.phase_idx))

    def on_end(self, task: Any) -> None:
        try:
            self.wait()
        finally:
            if self._stager is not None:
                self._stager.close()
                self._stager = None

    def save_sharded(self, task: Any, name: str) -> None:
        """Every rank: save `task` as the sharded checkpoint `<folder>/<name>` (or start it, with `non_blocking`)."""
        from classy_hooks.model.sharded_checkpoint import make_stager, sharded_task_state, start_sharded_save

        start = time.perf_counter()
        self.wait()
        if self.non_blocking and self._stager is None:
            self._stager = make_stager()
        checkpoint = make_checkpoint(sharded_task_state(task), self.input_args)
        check_weights_only(checkpoint, allow_dtensor=True)  # non-tensor values are read back with weights_only
        finish = start_sharded_save(
            self.checkpoint_folder,
            checkpoint,
            name,
            asynchronous=self.non_blocking,
            process_group=self._save_group,
            stager=self._stager,
        )
        if not self.non_blocking:
            try:
                path = finish()
            except BaseException as exc:
                self._error = exc
            self._raise_if_any_rank_failed("save")  # also the barrier: every rank returns once it is committed
            self.last_stall_seconds = time.perf_counter() - start
            logger.info("Saved sharded checkpoint %s (phase %s)", path, getattr(task, "phase_idx", "?"))
            return
        self._thread = threading.Thread(
            target=self._finish_in_background, args=(finish,), name="classy-hooks-checkpoint", daemon=False
        )
        self._thread.start()
        self.last_stall_seconds = time.perf_counter() - start

    def _finish_in_background(self, finish: Callable[[], str]) -> None:
        try:
            path = finish()
            logger.info("Saved sharded checkpoint %s (background)", path)
        except BaseException as exc:
            self._error = exc

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
        """Block until a background save in flight is written; re-raise its error if it failed.

        In sharded mode a collective (every rank calls it, as `on_phase_end` and `on_end` do): a
        failure on any rank is raised on every rank, so that no rank runs on into the next save alone.
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._sharded_mode:
            self._raise_if_any_rank_failed("background save")
        elif self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(
                f"{self.name()}: a background checkpoint save to {self.checkpoint_folder} failed: {error}"
            ) from error

    def _raise_if_any_rank_failed(self, what: str) -> None:
        """Sharded mode: every rank learns whether a save failed on any rank, and all raise together."""
        error, self._error = self._error, None
        failed_ranks = all_reduce(float(error is not None), op="sum") if is_distributed() else float(error is not None)
        if error is not None:
            raise RuntimeError(
                f"{self.name()}: a sharded checkpoint {what} to {self.checkpoint_folder} failed: {error}"
            ) from error
        if failed_ranks:
            raise RuntimeError(
                f"{self.name()}: a sharded checkpoint {what} to {self.checkpoint_folder} failed on "
                f"{int(failed_ranks)} other rank(s); see their logs. The previous checkpoint is still the latest."
            )
