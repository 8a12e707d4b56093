"""`CheckpointHook`: crash-safe checkpoints of the whole task at phase ends, every N steps or T seconds, and on
preemption signals; old ones pruned to the last K."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Optional, cast

import torch

from classy_hooks.core import (
    ClassyHook,
    ClassyHookState,
    HookConfigError,
    TaskContractError,
    all_reduce,
    is_distributed,
    is_optimizer_step,
    is_primary,
    register_hook,
)
from classy_hooks.core.files import ensure_writable_folder
from classy_hooks.core.hook_list import RUNS_LAST, warn_if_out_of_order
from classy_hooks.core.preemption import TrainingPreempted
from classy_hooks.core.task import DATA_POSITION_KEY, KeepsDataPosition, Task
from classy_hooks.core.url_files import is_url, join, local_path
from classy_hooks.core.validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_optional_int,
    check_plain_data,
    check_str,
    check_subset,
    config_error,
)
from classy_hooks.model.checkpoint_io import (
    LATEST_CHECKPOINT,
    CheckpointError,
    CheckpointWriteError,
    check_weights_only,
    holds_dtensors,
    make_checkpoint,
    phase_checkpoint_name,
    remove_checkpoint,
    remove_stale_temp_files,
    step_checkpoint_name,
    write_checkpoint,
)
from classy_hooks.model.checkpoint_writer import CheckpointWriter, StateSnapshot

logger = logging.getLogger(__name__)


class CheckpointState(ClassyHookState):
    """Checkpointed state of the checkpoint hook."""

    phase_counter: int  # eligible phases seen (the `checkpoint_period` count)
    optimizer_steps: int  # optimizer steps of train phases seen (the `checkpoint_every_n_steps` count)
    written: list[str]  # names of the checkpoints written, oldest first (the last `keep_last` of them)
    to_remove: list[str]  # names dropped from `written`, deleted once the next checkpoint is durable


def _signal_numbers(hook: str, signals: Any) -> list[int]:
    """`preemption_signals` (names like "SIGTERM", or numbers) as signal numbers this platform can catch."""
    if isinstance(signals, (str, bytes, int)) or not isinstance(signals, Collection):
        raise config_error(
            hook, "preemption_signals", f"must be a list of signal names, got {signals!r}", 'Pass e.g. ["SIGTERM"].'
        )
    numbers = []
    for item in signals:
        number = getattr(signal, item, None) if isinstance(item, str) else item
        if not isinstance(number, int) or isinstance(number, bool) or number not in set(signal.valid_signals()):
            number = None
        if number is None or number in (getattr(signal, "SIGKILL", None), getattr(signal, "SIGSTOP", None)):
            raise config_error(
                hook,
                "preemption_signals",
                f"has {item!r}, which is not a signal this process can catch",
                'Use names of catchable signals, e.g. ["SIGTERM", "SIGUSR1"] (SIGKILL and SIGSTOP cannot be caught).',
            )
        numbers.append(number)
    return numbers


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
    (precise BatchNorm changes the model there), so the hook declares `order = RUNS_LAST`:
    `call_hooks` and `build_hooks` run it after the others wherever it was listed. It never
    reorders `task.hooks`; a loop that calls the hooks of `task.hooks` itself, in an order that
    puts another hook after it, gets a warning in `on_start` (call them with `call_hooks`).

    `non_blocking=True` (default False): the state is copied to CPU memory on the training
    thread (one `_foreach_copy_` into the previous snapshot's buffers) and written by a long-lived
    background thread (`classy_hooks.model.checkpoint_writer`); at most one save is in flight (a new save first
    waits for the previous one), `on_end` waits for it, and a failed background save is raised
    at the next save or at `on_end`. The thread is not a daemon, so a save in flight when training
    fails still completes before the process exits. Call `wait()` to block until it is written.

    `on_save_error` (default `"raise"`): what a save that fails at the disk (full, quota, I/O error)
    does. Either way the previous checkpoint stays the latest, intact, and no partial file is left;
    the error names the folder, the bytes needed and the fix. `"raise"` stops training with that
    `CheckpointWriteError` (a run that cannot checkpoint would lose everything since its last save
    on the next crash); `"warn"` logs it as an error and trains on, and the next save tries again.

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

    Long runs (all off by default, as in Classy Vision):

    - `checkpoint_every_n_steps=N`: also save after every N-th optimizer step of train phases
      (counted over the run, hook state); `checkpoint_every_n_seconds=T`: also save at the first
      optimizer step T seconds (wall clock) after the previous save, train phase end or start. Such a
      mid-phase checkpoint is `model_phase-<P>_batch-<B>.torch` (phase P, after B of its batches;
      sharded: the folder `model_phase-<P>_batch-<B>.dcp`, saved by every rank) and holds
      `task.get_data_position()` under `classy_state_dict["data_position"]` (see
      `classy_hooks.core.task.DATA_POSITION_KEY`: the task contract a loop implements to resume
      inside a phase exactly). Saves happen only right after an optimizer step, so no partly
      accumulated gradient is ever pending. Under torch.distributed every rank calls
      `get_data_position` at the same step (it may be a collective).
    - `preemption_signals=["SIGTERM", "SIGUSR1"]`: `on_start` installs a handler for each (the
      handler only sets a flag; the previous handlers are restored in `on_end` or after a
      preemption save). At the next optimizer step, all ranks agree that a signal arrived on any of
      them, one checkpoint `model_phase-<P>_batch-<B>_preempted.torch` (or `.dcp`) is written (at a phase end, e.g.
      after a test phase: `model_phase-<P>_end.torch`) (a second signal
      meanwhile only sets the flag again), and `on_step` raises
      `classy_hooks.core.preemption.TrainingPreempted` on every rank; the loop exits with its
      `exit_code` (75, `PREEMPTED_EXIT_CODE`) so a scheduler can requeue. Handlers can only be
      installed from the main thread.
    - Agreement costs one all_reduce of two numbers per check, when time checkpoints or preemption
      are on and torch.distributed is initialised; `agree_every_n_steps=k` checks every k-th
      optimizer step only (a signal then waits up to k steps).
    - `keep_last=K`: after each save is complete and durable, checkpoints this run (and the runs
      it resumed from) wrote beyond the newest K are deleted (files, or `.dcp` folders through a
      temporary name); the checkpoint the run resumed from is never deleted by it. `checkpoint.torch`
      always names the newest. Default None keeps every checkpoint.
    """

    task_attributes = ("phase_type", "phase_idx", "get_classy_state")
    order = RUNS_LAST

    def __init__(
        self,
        checkpoint_folder: str,
        input_args: Any = None,
        phase_types: Optional[Collection[str]] = None,
        checkpoint_period: int = 1,
        non_blocking: bool = False,
        sharded: Optional[bool] = None,
        checkpoint_every_n_steps: Optional[int] = None,
        checkpoint_every_n_seconds: Optional[float] = None,
        keep_last: Optional[int] = None,
        preemption_signals: Collection[str] = (),
        agree_every_n_steps: int = 1,
        on_save_error: str = "raise",
    ) -> None:
        super().__init__()
        name = self.name()
        # a URL (s3://...) is written through fsspec (classy_hooks.model.checkpoint_urls); file:// is the local path
        self.checkpoint_folder = local_path(check_str(name, "checkpoint_folder", checkpoint_folder))
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
        self.checkpoint_every_n_steps = check_optional_int(
            name, "checkpoint_every_n_steps", checkpoint_every_n_steps, minimum=1
        )
        self.checkpoint_every_n_seconds = (
            None
            if checkpoint_every_n_seconds is None
            else check_float(name, "checkpoint_every_n_seconds", checkpoint_every_n_seconds, low=1e-3)
        )
        self.keep_last = check_optional_int(name, "keep_last", keep_last, minimum=1)
        self._signals = _signal_numbers(name, preemption_signals)
        self.preemption_signals = [signal.Signals(n).name for n in self._signals]
        self.agree_every_n_steps = check_int(name, "agree_every_n_steps", agree_every_n_steps, minimum=1)
        self.on_save_error = check_choice(name, "on_save_error", on_save_error, ("raise", "warn"))
        self._previous_handlers: dict[int, Any] = {}
        self._signal_received = 0  # set by the signal handler (nothing else happens there)
        self._last_save_time = time.monotonic()
        self._resumed_from: str | None = None  # the checkpoint this run's state came from: never pruned
        self._sharded_mode = bool(sharded)  # decided in on_start when `sharded` is None
        self._save_group: Any = None  # the process group of background sharded saves
        self._stager: Any = None  # CPU copies of background sharded saves, reused by the next one
        self.state: CheckpointState = CheckpointState()
        self.state.phase_counter = 0
        self.state.optimizer_steps = 0
        self.state.written = []
        self.state.to_remove = []
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._snapshot = StateSnapshot()  # CPU buffers of non-blocking saves, reused by the next
        self._writer = CheckpointWriter(lambda job: self._write_in_background(*job))
        self._record_before_save: tuple[list[str], list[str]] = ([], [])
        self.last_stall_seconds = 0.0

    on_phase_start = ClassyHook._noop

    @property
    def saves_mid_phase(self) -> bool:
        """True when checkpoints are also taken inside phases (steps, seconds or preemption)."""
        return bool(self.checkpoint_every_n_steps or self.checkpoint_every_n_seconds or self._signals)

    def set_classy_state(self, state_dict: Any) -> None:
        super().set_classy_state(state_dict)
        self.state.written = list(self.state.written)  # own lists: a saved state dict must not change later
        self.state.to_remove = list(self.state.to_remove)

    def on_start(self, task: Task) -> None:
        self.check_task(task)
        if self.saves_mid_phase and not getattr(task, "test_only", False):
            if not callable(getattr(task, "get_data_position", None)):
                raise TaskContractError(
                    f"{self.name()}: checkpoint_every_n_steps, checkpoint_every_n_seconds and preemption_signals "
                    f"save inside a phase, which needs task.get_data_position() (the task "
                    f"{type(task).__name__} has none) so that a resume continues after the batches already done. "
                    "Implement it (see classy_hooks.core.task.DATA_POSITION_KEY) or leave those arguments unset."
                )
            self._install_signal_handlers()
        self._resumed_from = self.state.written[-1] if self.state.written else None
        self._last_save_time = time.monotonic()
        warn_if_out_of_order(self, getattr(task, "hooks", None))
        if getattr(task, "test_only", False):
            return
        self._sharded_mode = self._decide_sharded(task)
        if self._sharded_mode:
            if is_url(self.checkpoint_folder):
                self._restore_signal_handlers()
                raise HookConfigError(
                    f"{self.name()}: argument 'checkpoint_folder' = {self.checkpoint_folder!r} is a URL, but sharded "
                    "(torch.distributed.checkpoint) checkpoints are written only to a shared file system: their "
                    "atomic publish renames a folder, which object stores cannot do. Pass a shared local folder, or "
                    "sharded=False for a model whose state fits in one file (single files can go to URLs)."
                )
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
        self._prune()  # removals a killed run left pending: all older than the (durable) checkpoint resumed from

    def _decide_sharded(self, task: Task) -> bool:
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
        self._prune()  # every rank: removals a killed run left pending (the primary deletes them)
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

    def on_phase_end(self, task: Task) -> None:
        saved = self._save_at_phase_end(task)
        if self._signals and not getattr(task, "test_only", False):  # a phase end is a step boundary too
            signum, _ = self._agree()
            if signum:
                name = self._checkpoint_name(task.phase_idx)
                if not saved:  # e.g. a test phase, or one checkpoint_period skips
                    self._save_any(task, name)
                self._stop_for(signum, name)

    def _save_at_phase_end(self, task: Task) -> bool:
        """The phase-end checkpoint (`phase_types`, `checkpoint_period`); True if this rank saved (or started) it."""
        if task.phase_type in self.phase_types:
            self._last_save_time = time.monotonic()  # every rank alike: the time checkpoints' clock restarts
        if task.phase_type not in self.phase_types or (not self._sharded_mode and not is_primary()):
            return False  # sharded: every rank counts and decides alike (a save is a collective)
        self.state.phase_counter += 1
        if self.state.phase_counter % self.checkpoint_period != 0:
            return False
        if getattr(task, "test_only", False):
            return False
        self._save_any(task, self._checkpoint_name(task.phase_idx))
        return True

    def _checkpoint_name(self, phase_idx: int, batches: int | None = None, *, preempted: bool = False) -> str:
        """The file (or, sharded, folder) name of a phase-end checkpoint, or of one inside the phase after `batches`."""
        if self._sharded_mode:
            from classy_hooks.model.sharded_checkpoint import sharded_checkpoint_name

            return sharded_checkpoint_name(phase_idx, batches, preempted=preempted)
        if batches is None:
            return phase_checkpoint_name(phase_idx)
        return step_checkpoint_name(phase_idx, batches, preempted=preempted)

    def _save_any(self, task: Task, name: str, data_position: Any = None) -> None:
        """Called on every rank: sharded, every rank saves its shard; otherwise the primary writes the one file."""
        if self._sharded_mode:
            self.save_sharded(task, name, data_position=data_position)
        elif is_primary():
            self.save(task, name, data_position=data_position)

    def on_step(self, task: Task) -> None:
        """After an optimizer step of a train phase: save if N steps or T seconds passed or a signal arrived."""
        if not self.saves_mid_phase or not task.train or not is_optimizer_step(task):
            return
        self.state.optimizer_steps += 1
        steps = self.state.optimizer_steps
        every = self.checkpoint_every_n_steps
        steps_due = every is not None and steps % every == 0
        signum, time_due = 0, False
        if (self._signals or self.checkpoint_every_n_seconds) and steps % self.agree_every_n_steps == 0:
            signum, time_due = self._agree()
        if not (steps_due or time_due or signum):
            return
        # Every rank, at the same step: it may be a collective. on_start checked that the task has it.
        position = cast(KeepsDataPosition, task).get_data_position()
        name = self._checkpoint_name(task.phase_idx, int(position["batches"]), preempted=bool(signum))
        self._save_any(task, name, data_position=position)
        self._last_save_time = time.monotonic()
        if signum:
            self._stop_for(signum, name)

    def _stop_for(self, signum: int, name: str) -> None:
        """Every rank, after the preemption checkpoint `name` was saved (primary): wait until it is durable, restore
        the signal handlers and raise `TrainingPreempted`."""
        self._finish_preemption_save()
        signal_name = signal.Signals(signum).name
        if is_primary() and self.state.written[-1:] != [name]:  # on_save_error="warn" and the disk failed
            logger.error(
                "%s: %s received but checkpoint %s could not be written (see above); stopping training, the "
                "previous checkpoint stays the latest.", self.name(), signal_name, name
            )
            name = LATEST_CHECKPOINT
        else:
            logger.warning("%s: %s received; checkpoint %s written, stopping.", self.name(), signal_name, name)
        raise TrainingPreempted(signal_name, join(self.checkpoint_folder, name))

    def _finish_preemption_save(self) -> None:
        """Every rank: wait until the preemption checkpoint is durable; if it failed on any rank, all raise."""
        error: BaseException | None = None
        try:
            self.wait()
        except BaseException as exc:
            error = exc
        failed = all_reduce(float(error is not None), op="max") if is_distributed() else float(error is not None)
        self._restore_signal_handlers()
        if error is not None:
            raise error
        if failed:
            raise CheckpointError(
                f"{self.name()}: the preemption checkpoint save to {self.checkpoint_folder} failed on the primary "
                "rank; see its log. The previous checkpoint is still the latest."
            )

    def _agree(self) -> tuple[int, bool]:
        """The first preemption signal any rank received (0 if none) and whether any rank's save timer is due.

        One all_reduce of two numbers under torch.distributed, so that every rank stops or saves at the same step.
        """
        elapsed = time.monotonic() - self._last_save_time
        time_due = self.checkpoint_every_n_seconds is not None and elapsed >= self.checkpoint_every_n_seconds
        if not is_distributed():
            return self._signal_received, time_due
        flags = torch.tensor([float(self._signal_received), float(time_due)], dtype=torch.float64)
        all_reduce(flags, op="max")
        return int(flags[0].item()), bool(flags[1].item())

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Signal handler: only remember the signal (no I/O, no locks); `on_step` acts at the next step."""
        if not self._signal_received:
            self._signal_received = signum

    def _install_signal_handlers(self) -> None:
        if not self._signals or self._previous_handlers:
            return
        if threading.current_thread() is not threading.main_thread():
            raise HookConfigError(
                f"{self.name()}: argument 'preemption_signals' = {self.preemption_signals} needs on_start to run "
                "on the main thread (Python installs signal handlers there only). Run the loop on the main thread "
                "or leave preemption_signals empty."
            )
        for signum in self._signals:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def on_end(self, task: Task) -> None:
        self._restore_signal_handlers()
        try:
            self.wait()
        finally:
            self._writer.close()
            if self._stager is not None:
                self._stager.close()
                self._stager = None

    def save_sharded(self, task: Task, name: str, data_position: Any = None) -> None:
        """Every rank: save `task` as the sharded checkpoint `<folder>/<name>` (or start it, with `non_blocking`).

        `data_position` (mid-phase checkpoints) is stored whole, loaded back under `DATA_POSITION_KEY`.
        """
        from classy_hooks.model.sharded_checkpoint import (
            make_stager,
            pack_data_position,
            sharded_task_state,
            start_sharded_save,
        )

        start = time.perf_counter()
        self.wait()
        self._record_written(name)
        if self.non_blocking and self._stager is None:
            self._stager = make_stager()
        checkpoint = make_checkpoint(sharded_task_state(task), self.input_args)
        if data_position is not None:
            checkpoint = pack_data_position(checkpoint, data_position)
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
            self._prune()
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
            self._prune()
            logger.info("Saved sharded checkpoint %s (background)", path)
        except BaseException as exc:
            self._error = exc

    def save(self, task: Task, phase_file: str | None = None, data_position: Any = None) -> None:
        """Write a checkpoint of `task` now (or start writing it, with `non_blocking`).

        `data_position` (mid-phase checkpoints: `task.get_data_position()`) is stored in the task state
        under `DATA_POSITION_KEY`. Once the file is durable, checkpoints beyond `keep_last` are deleted.
        """
        start = time.perf_counter()
        self.wait()
        self._record_before_save = (list(self.state.written), list(self.state.to_remove))
        self._record_written(phase_file)
        state = task.get_classy_state()
        if data_position is not None:
            state = {**state, DATA_POSITION_KEY: data_position}
        checkpoint = make_checkpoint(state, self.input_args)
        if not self.non_blocking:
            try:
                path = write_checkpoint(self.checkpoint_folder, checkpoint, phase_file)
            except CheckpointWriteError as exc:
                self._save_failed(exc, "checkpoint save")
                return
            self._prune()
            self.last_stall_seconds = time.perf_counter() - start
            logger.info("Saved checkpoint %s (phase %s)", path, getattr(task, "phase_idx", "?"))
            return
        # one walk (which also checks every value, naming a bad key here) and one copy; one long-lived writer thread
        self._writer.submit((self._snapshot.take(checkpoint), phase_file))
        self.last_stall_seconds = time.perf_counter() - start

    def _write_in_background(self, checkpoint: dict[str, Any], phase_file: str | None) -> None:
        try:
            path = write_checkpoint(self.checkpoint_folder, checkpoint, phase_file)
            self._prune()
            logger.info("Saved checkpoint %s (background)", path)
        except BaseException as exc:
            self._error = exc

    def _record_written(self, name: str | None) -> None:
        """Before capturing the state: `name` becomes the newest checkpoint; ones beyond `keep_last` are dropped.

        The dropped names go to `to_remove`, part of the state being saved, so that a run killed before
        deleting them (or resumed from this checkpoint) deletes them after its next durable save.
        """
        if name is None:
            return
        written = [n for n in self.state.written if n != name] + [name]
        dropped: list[str] = []
        if self.keep_last is not None and len(written) > self.keep_last:
            dropped, written = written[: -self.keep_last], written[-self.keep_last :]
        self.state.written = written
        self.state.to_remove = [n for n in self.state.to_remove if n not in written] + dropped

    def _prune(self) -> None:
        """After the newest checkpoint is durable: the primary deletes the dropped ones (never the resumed-from one).

        Other ranks (sharded mode) forget the same names, so that every rank's hook state stays alike.
        """
        kept = []
        for name in self.state.to_remove:
            if name == self._resumed_from or name == LATEST_CHECKPOINT:
                kept.append(name)
            elif is_primary() and remove_checkpoint(self.checkpoint_folder, name):
                logger.info("%s: removed old checkpoint %s (keep_last=%s)", self.name(), name, self.keep_last)
        self.state.to_remove = kept

    def wait(self) -> None:
        """Block until a background save in flight is written; re-raise its error if it failed.

        In sharded mode a collective (every rank calls it, as `on_phase_end` and `on_end` do): a
        failure on any rank is raised on every rank, so that no rank runs on into the next save alone.
        """
        self._writer.wait()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._sharded_mode:
            self._raise_if_any_rank_failed("background save")
        elif isinstance(self._error, CheckpointWriteError):
            disk_error, self._error = self._error, None
            self._save_failed(disk_error, "background checkpoint save")
        elif self._error is not None:
            error, self._error = self._error, None
            raise CheckpointError(
                f"{self.name()}: a background checkpoint save to {self.checkpoint_folder} failed: {error}"
            ) from error

    def _save_failed(self, error: CheckpointWriteError, what: str) -> None:
        """A save failed at the disk: raise (`on_save_error="raise"`) or log it and train on ("warn").

        Either way nothing is lost (the previous checkpoint stays the latest) and the checkpoints to keep
        are as before the failed save, so `keep_last` never counts a checkpoint that does not exist.
        """
        self.state.written, self.state.to_remove = self._record_before_save
        if self.on_save_error == "raise":
            raise CheckpointWriteError(
                f"{self.name()}: a {what} failed: {error} To train on without it, pass on_save_error='warn'.",
                error.folder,
                error.needed_bytes,
                error.free_bytes,
                error.errno,
            ) from error
        logger.error(
            "%s: a %s failed: %s Training continues (on_save_error='warn'); the next save tries again.",
            self.name(),
            what,
            error,
        )

    @property
    def save_in_flight(self) -> bool:
        """True while a non-blocking save is being written in the background."""
        return self._writer.in_flight or (self._thread is not None and self._thread.is_alive())

    def _raise_if_any_rank_failed(self, what: str) -> None:
        """Sharded mode: every rank learns whether a save failed on any rank, and all raise together."""
        error, self._error = self._error, None
        failed_ranks = all_reduce(float(error is not None), op="sum") if is_distributed() else float(error is not None)
        if error is not None:
            raise CheckpointError(
                f"{self.name()}: a sharded checkpoint {what} to {self.checkpoint_folder} failed: {error}"
            ) from error
        if failed_ranks:
            raise CheckpointError(
                f"{self.name()}: a sharded checkpoint {what} to {self.checkpoint_folder} failed on "
                f"{int(failed_ranks)} other rank(s); see their logs. The previous checkpoint is still the latest."
            )
