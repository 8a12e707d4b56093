"""`LoopTask`: a ready task object for your own loop, so it needs no hand-kept counters.

It holds what hooks read (see `classy_hooks.core.Task`), calls the hook events in Classy Vision's
order as the loop walks through its phases, and saves and restores its state for checkpoints, at
phase ends and inside a phase (`get_data_position`). Pure Python like the rest of core: it calls
the model's and optimizer's own methods and reaches torch only through `sys.modules` once the loop
has imported it.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from classy_hooks.core.distributed import all_gather_objects, get_rank, get_world_size
from classy_hooks.core.errors import HookConfigError, TaskContractError
from classy_hooks.core.hook_list import call_hooks, check_hooks, get_hooks_state, set_hooks_state
from classy_hooks.core.task import DATA_POSITION_KEY, LastBatch

PHASE_TYPES = ("train", "test")


class LoopTask:
    """The task of a plain loop: `for phase_type, data in task.run_phases(plan)`, then `task.step(...)` per batch.

    `run_phases` calls `on_start` before the first phase and `on_end` after the last; around each
    phase it advances the counters, resets losses and meters, sets the model's train/eval mode and
    calls `on_phase_start`, then gathers losses across ranks, syncs meters and calls `on_phase_end`.
    Phases a restored state has already finished are skipped, so a resumed run continues where the
    checkpoint was taken; a mid-phase checkpoint (`get_data_position`) continues its phase after the
    batches already done. `meters` follow Classy Vision's meter API (`update`, `reset`, `sync_state`,
    `value`, `get_classy_state`, `set_classy_state`).
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any = None,
        hooks: Sequence[Any] = (),
        *,
        meters: Sequence[Any] = (),
        batch_size: int | None = None,
        distributed_model: Any = None,
        use_gpu: bool = False,
        test_only: bool = False,
    ) -> None:
        valid_size = isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0
        if batch_size is not None and not valid_size:
            raise HookConfigError(f"LoopTask: batch_size must be a positive int or None, got {batch_size!r}.")
        self.base_model = model
        self.model = model if distributed_model is None else distributed_model
        self.optimizer = optimizer
        self.hooks = check_hooks(hooks)
        self.meters = list(meters)
        self.use_gpu = use_gpu
        self.test_only = test_only
        self.train = not test_only
        self.phase_idx = -1
        self.train_phase_idx = -1
        self.num_updates = 0
        self.where = 0.0
        self.losses: list[Any] = []
        self.last_batch: LastBatch | None = None
        self.dataloader: Any = None
        self.num_batches_per_phase = 0
        self.is_optimizer_step = True
        self._batch_size = batch_size
        self._num_train_phases = 0
        self._batches_done = 0
        self._rng_at_phase_start: Any = None  # the generators as the loop starts iterating the phase's data
        self._continue_at: dict[str, Any] | None = None  # this rank's part of a mid-phase checkpoint, if resuming

    @property
    def phase_type(self) -> str:
        """"train" or "test"."""
        return "train" if self.train else "test"

    @property
    def batches_done(self) -> int:
        """Batches of the current phase done so far: the index of the batch being processed before `step`.

        Count with it rather than `enumerate(data)` (e.g. for gradient accumulation): after a resume
        inside a phase, the first batch the loop sees is not the phase's first.
        """
        return self._batches_done

    def get_batchsize_per_replica(self) -> int:
        """The size of the current phase's first batch; before any batch, the one given to the constructor."""
        if self._batch_size is None:
            raise TaskContractError(
                "LoopTask: the batch size is not known before the first step; pass batch_size= to LoopTask(...)."
            )
        return self._batch_size

    def get_global_batchsize(self) -> int:
        """Batch size summed over replicas."""
        return self.get_batchsize_per_replica() * get_world_size()

    def run_phases(self, plan: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        """Yield `(phase_type, dataloader)` for each phase of `plan` not yet done, with the hook events around it.

        After a mid-phase checkpoint was restored, its phase comes first again, its dataloader wrapped so that
        iterating it yields only the batches not yet done.
        """
        phases = [_checked_phase(i, phase) for i, phase in enumerate(plan)]
        self._num_train_phases = sum(phase_type == "train" for phase_type, _ in phases)
        call_hooks(self.hooks, "on_start", self)
        for index, (phase_type, data) in enumerate(phases):
            if index <= self.phase_idx:
                continue
            self._advance(phase_type, data)
            position, self._continue_at = self._continue_at, None
            if position is not None:
                self._restore_partial_phase(position)
            call_hooks(self.hooks, "on_phase_start", self)
            if position is None:
                self._rng_at_phase_start = _rng_state(self.use_gpu)
                yield phase_type, data
            else:
                self._rng_at_phase_start = position["rng_at_phase_start"]
                _set_rng_state(self._rng_at_phase_start)  # the data order is drawn as in the interrupted run
                loader_state = position.get("loader_state")
                yield phase_type, _ContinuedPhase(data, int(position["batches"]), position["rng_state"], loader_state)
            self._finish_phase()
            call_hooks(self.hooks, "on_phase_end", self)
        call_hooks(self.hooks, "on_end", self)

    def step(self, batch: Mapping[str, Any], output: Any, loss: Any, *, optimizer_step: bool = True) -> None:
        """Record the batch that just ran and call `on_step`.

        `optimizer_step=False` marks a gradient-accumulation micro-step whose batch did not update
        the parameters (the EMA then waits for the real step). `batch` holds `"input"` and `"target"`.
        """
        if "input" not in batch or "target" not in batch:
            raise TaskContractError(
                f"LoopTask.step: batch must be a dict with 'input' and 'target' keys, got keys {sorted(batch)}."
            )
        if self._batch_size is None or self.last_batch is None:
            self._batch_size = len(batch["input"])
        detached = loss.detach() if hasattr(loss, "detach") else loss
        output = output.detach() if hasattr(output, "detach") else output
        self.is_optimizer_step = bool(optimizer_step) and self.train
        if self.train:
            self.num_updates += self.get_global_batchsize()
        for meter in self.meters:
            meter.update(output, batch["target"])
        self.losses.append(detached)
        self._batches_done += 1
        self.last_batch = LastBatch(detached, output, batch["target"], batch, {})
        if self.train and self._num_train_phases and self.num_batches_per_phase:
            done = self.train_phase_idx + min(self._batches_done / self.num_batches_per_phase, 1.0)
            self.where = min(done / self._num_train_phases, 1.0)
        call_hooks(self.hooks, "on_step", self)

    def get_classy_state(self, deep_copy: bool = False) -> dict[str, Any]:
        """Everything needed to continue after this phase: model, optimizer, meters, counters, hooks, RNG."""
        state: dict[str, Any] = {
            "train": self.train,
            "base_model": self.base_model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "meters": [meter.get_classy_state() for meter in self.meters],
            "phase_idx": self.phase_idx,
            "train_phase_idx": self.train_phase_idx,
            "num_updates": self.num_updates,
            "losses": [float(x) for x in self.losses],
            "hooks": get_hooks_state(self.hooks),
        }
        torch = sys.modules.get("torch")
        if torch is not None:
            state["rng_state"] = torch.get_rng_state()
            if self.use_gpu and torch.cuda.is_initialized():
                state["cuda_rng_state"] = torch.cuda.get_rng_state_all()
        return copy.deepcopy(state) if deep_copy else state

    def get_data_position(self) -> dict[str, Any]:
        """Where the current phase is, for a mid-phase checkpoint (`classy_hooks.core.task.DATA_POSITION_KEY`).

        A collective under torch.distributed (CheckpointHook calls it on every rank at the same optimizer
        step): each rank's batch count, partial losses and meters, and its random generators (now, and
        as the phase's data was first iterated, which fixes a shuffling loader's order) are gathered,
        with the loader's own `state_dict()` when it keeps one (`is_stateful_loader`).
        """
        local = {
            "batches": self.batches_done,
            "losses": [float(x) for x in self.losses],
            "meters": [meter.get_classy_state() for meter in self.meters],
            "rng_at_phase_start": self._rng_at_phase_start,
            "rng_state": _rng_state(self.use_gpu),
        }
        if is_stateful_loader(self.dataloader):
            local["loader_state"] = self.dataloader.state_dict()
        return {"batches": self.batches_done, "phase_idx": self.phase_idx, "ranks": all_gather_objects(local)}

    def set_classy_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state from `get_classy_state` (before `run_phases`): finished phases are then skipped.

        A mid-phase checkpoint (with `DATA_POSITION_KEY`) makes `run_phases` continue that phase: a
        stateful loader gets its saved `state_dict` back and continues after the batches already done
        without loading them; any other data is iterated as it was (same generators at its start) and
        the batches already done are drawn and dropped. This rank's losses, meters and generators are
        those of the checkpoint.
        """
        position = state.get(DATA_POSITION_KEY)
        if position is not None and len(position["ranks"]) != get_world_size():  # before anything is restored
            raise HookConfigError(
                f"LoopTask: the checkpoint was taken inside phase {position['phase_idx']} on {len(position['ranks'])} "
                f"rank(s); resume it on as many ranks (now {get_world_size()}), or resume from a phase-end "
                "checkpoint (model_phase-N_end.torch), which any number of ranks can."
            )
        self.train = state["train"]
        self.base_model.load_state_dict(state["base_model"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        for meter, meter_state in zip(self.meters, state.get("meters", [])):
            meter.set_classy_state(meter_state)
        self.phase_idx = state["phase_idx"]
        self.train_phase_idx = state["train_phase_idx"]
        self.num_updates = state["num_updates"]
        self.losses = list(state["losses"])
        set_hooks_state(self.hooks, state.get("hooks", {}))
        torch = sys.modules.get("torch")
        if torch is not None and "rng_state" in state:
            torch.set_rng_state(state["rng_state"])
            if "cuda_rng_state" in state:
                torch.cuda.set_rng_state_all(state["cuda_rng_state"])
        self._continue_at = None
        if position is not None:
            self._continue_at = position["ranks"][get_rank()]
            self.phase_idx -= 1  # run_phases enters that phase again
            if self.train:
                self.train_phase_idx -= 1

    def _restore_partial_phase(self, position: Mapping[str, Any]) -> None:
        """This rank's losses and meters as the mid-phase checkpoint had them (after `_advance` reset them)."""
        self.losses = list(position["losses"])
        self._batches_done = int(position["batches"])
        for meter, meter_state in zip(self.meters, position["meters"]):
            meter.set_classy_state(meter_state)

    def _advance(self, phase_type: str, data: Any) -> None:
        self.phase_idx += 1
        self.train = phase_type == "train"
        if self.train:
            self.train_phase_idx += 1
        self.dataloader = data
        self.num_batches_per_phase = len(data) if hasattr(data, "__len__") else 0
        self.losses = []
        self._batches_done = 0
        self.last_batch = None
        for meter in self.meters:
            meter.reset()
        self.base_model.train(self.train)

    def _finish_phase(self) -> None:
        """Gather every rank's batch losses (as plain floats) and sync meters, as Classy Vision did."""
        local = [float(x) for x in self.losses]
        self.losses = [x for part in all_gather_objects(local) for x in part]
        for meter in self.meters:
            meter.sync_state()
        if self.train and self._num_train_phases:
            self.where = min((self.train_phase_idx + 1) / self._num_train_phases, 1.0)


_END = object()


def is_stateful_loader(data: Any) -> bool:
    """Whether `data` saves and restores its own position (`state_dict()`/`load_state_dict()`, as torchdata's
    `StatefulDataLoader` does), so that a resume inside a phase need not load the batches already done."""
    return callable(getattr(data, "state_dict", None)) and callable(getattr(data, "load_state_dict", None))


class _ContinuedPhase:
    """A phase's data without the batches a mid-phase checkpoint had done.

    Iterating it iterates the data afresh (the generators are as they were when the interrupted run
    began the phase, so a shuffling loader draws the same order). A stateful loader is given its saved
    state first and continues on its own; other data has its first `skip` batches drawn and dropped.
    Then the generators are set to the checkpoint's before the next batch reaches the loop.
    """

    def __init__(self, data: Any, skip: int, rng_state: Any, loader_state: Any = None) -> None:
        self.data = data
        self.skip = skip
        self.rng_state = rng_state
        self.loader_state = loader_state

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[Any]:
        restored = self.loader_state is not None and is_stateful_loader(self.data)
        if restored:
            self.data.load_state_dict(self.loader_state)
        iterator = iter(self.data)
        for done in range(0 if restored else self.skip):
            if next(iterator, _END) is _END:
                raise TaskContractError(
                    f"LoopTask: the checkpoint was taken after {self.skip} batches of this phase, but its data "
                    f"now has only {done}. Resume with the same data as the interrupted run."
                )
        _set_rng_state(self.rng_state)
        yield from iterator


def _rng_state(use_gpu: bool) -> Any:
    """The CPU generator's state, and the current CUDA device's when the loop uses one (None without torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    cuda = torch.cuda.get_rng_state() if use_gpu and torch.cuda.is_initialized() else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: Any) -> None:
    """Give the generators a state made by `_rng_state` (nothing for None)."""
    torch = sys.modules.get("torch")
    if torch is None or state is None:
        return
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"])


def _checked_phase(index: int, phase: Any) -> tuple[str, Any]:
    """One `(phase_type, dataloader)` entry of a plan, or a clear error naming it."""
    if not isinstance(phase, tuple) or len(phase) != 2 or phase[0] not in PHASE_TYPES:
        raise HookConfigError(
            f"LoopTask.run_phases: plan[{index}] must be a ('train' or 'test', dataloader) pair, got {phase!r}."
        )
    return phase
