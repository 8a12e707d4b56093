"""The task contract: what a training loop hands to hooks (Classy Vision's `ClassyTask` names).

Any object with these attributes works: a `ClassyTask`, the reference task in `tools/`, or a
small object in your own loop. Types are written without importing torch; where the text says
`torch.nn.Module` or `Tensor`, that is what a hook expects at run time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable


class LastBatch(NamedTuple):
    """What the loop records about the batch that just ran; filled before `on_step`.

    - `loss`: the batch loss, detached (a 0-dim Tensor; hooks avoid `.item()` on it per step).
    - `output`: the model output for the batch.
    - `target`: the targets, class indices `(N,)` or one-hot/soft `(N, C)`.
    - `sample`: the batch dict; holds at least `"input"` and `"target"`, and optional keys
      such as `"id"` (read by OutputCSVHook).
    - `step_data`: timings and extras, e.g. `{"sample_fetch_time": seconds}`.
    """

    loss: Any
    output: Any
    target: Any
    sample: Mapping[str, Any]
    step_data: Mapping[str, Any]


@runtime_checkable
class Meter(Protocol):
    """A metric: `name` and a `value` dict of numbers (e.g. `{"top_1": 0.93}`), synced before `on_phase_end`."""

    name: str

    @property
    def value(self) -> Mapping[str, Any]: ...


@runtime_checkable
class Task(Protocol):
    """Attributes and methods first-party hooks read; each note's "Read by:" names the hooks (registered names).

    Phases: a run is a sequence of phases, each "train" or "test". Before `on_phase_start` the
    loop has advanced to the new phase (so `train`, `phase_idx`, ... describe it); before
    `on_phase_end` it has averaged `losses` and synced `meters` across ranks. The "Read by" notes
    are checked against what each hook really touches (tests/integration/test_hooks_read_only_the_task_contract.py).
    Hooks only read these, so each is a read-only property here: a plain attribute or a property satisfies it.
    """

    @property
    def base_model(self) -> Any:
        """`torch.nn.Module`, never a DDP wrapper. Hooks may change it in place (EMA swap, BN statistics).
        Optional attributes on it: `input_shape` (per-sample shape, no batch dim) and `input_key`.
        Read by: ema_model_weights, precise_bn, model_complexity, model_tensorboard, profiler, torchscript,
        torch_export."""
        ...

    @property
    def train(self) -> bool:
        """True during a train phase. Read by: checkpoint, ema_model_weights, loss_lr_meter_logging, output_csv,
        precise_bn, progress_bar, tensorboard_plot, visdom."""
        ...

    @property
    def phase_type(self) -> str:
        """"train" or "test" (derived from `train`). Read by: checkpoint, loss_lr_meter_logging, progress_bar,
        tensorboard_plot, visdom."""
        ...

    @property
    def phase_idx(self) -> int:
        """Global index of the current phase over train and test phases, -1 before the first.
        Read by: checkpoint (per-phase file names), loss_lr_meter_logging, output_csv, progress_bar."""
        ...

    @property
    def train_phase_idx(self) -> int:
        """Index of the current train phase counting train phases only, -1 before the first.
        Read by: loss_lr_meter_logging, visdom."""
        ...

    @property
    def losses(self) -> list[Any]:
        """One loss per batch of the current phase; reset at phase start, averaged across ranks
        before `on_phase_end`. Read by: loss_lr_meter_logging, tensorboard_plot, visdom."""
        ...

    @property
    def meters(self) -> Sequence[Meter]:
        """Metrics of the current phase. Read by: loss_lr_meter_logging, tensorboard_plot, visdom."""
        ...

    @property
    def optimizer(self) -> Any:
        """A `torch.optim.Optimizer`; learning rates come from its `param_groups`. None in test-only runs.
        Read by: loss_lr_meter_logging, tensorboard_plot, visdom."""
        ...

    @property
    def last_batch(self) -> LastBatch | None:
        """The batch that just ran (None before the first step). Read by: loss_lr_meter_logging, output_csv,
        precise_bn (with `cache_samples`), tensorboard_plot, torchscript, torch_export, and model_complexity,
        model_tensorboard and profiler when the model has no `input_shape`."""
        ...

    @property
    def num_batches_per_phase(self) -> int:
        """Batches in the current phase on this replica. Read by: loss_lr_meter_logging, progress_bar."""
        ...

    @property
    def dataloader(self) -> Any:
        """The current phase's iterable of batch dicts. Hooks may iterate it afresh but never replace it.
        Read by: loss_lr_meter_logging, precise_bn, progress_bar."""
        ...

    def get_batchsize_per_replica(self) -> int:
        """Batch size on this replica in the current phase. Read by: profiler."""
        ...

    def get_classy_state(self, deep_copy: bool = False) -> dict[str, Any]:
        """Full training state (model, optimizer, counters, `hooks` states). Read by: checkpoint."""
        ...

    def set_classy_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state made by `get_classy_state`. Used when resuming (`classy_hooks.model.resume_task`)."""
        ...


#: Attributes a task may have; hooks fall back to the stated default when one is absent.
OPTIONAL_TASK_ATTRIBUTES: Mapping[str, str] = {
    "model": "module, default base_model: what the loop calls (e.g. the DDP wrapper); no first-party hook reads it.",
    "num_updates": (
        "int: training samples processed so far over all replicas (Classy Vision's meaning, not optimizer "
        "steps); no first-party hook reads it."
    ),
    "where": "float in [0, 1]: fraction of training done (Classy Vision's name); no first-party hook reads it.",
    "get_global_batchsize": "method () -> int: batch size summed over replicas; no first-party hook reads it.",
    "use_gpu": "bool, default False: samples and model live on CUDA.",
    "test_only": "bool, default False: an evaluation-only run; Checkpoint writes nothing.",
    "ema": "bool, default True: on test phases, evaluate with EMA weights (EMA hook).",
    "is_optimizer_step": (
        "bool, default True: False after a gradient-accumulation micro-step whose batch did not "
        "update the parameters. EMA updates only on optimizer steps."
    ),
    "perf_log": "list of dicts {tag, phase_idx, im_per_sec}; TensorboardPlot writes them when present.",
    "hooks": "list of ClassyHook: the task's hooks, in call order.",
    "get_data_position": (
        "method () -> dict of plain data: where the loop is inside the current train phase, so that a "
        "mid-phase checkpoint resumes exactly (see DATA_POSITION_KEY). Needed by CheckpointHook's step, "
        "time and preemption checkpoints."
    ),
}

#: Key of a mid-phase checkpoint's `classy_state_dict` that holds `task.get_data_position()`.
#:
#: The contract, for loops that want checkpoints inside a phase (CheckpointHook's
#: `checkpoint_every_n_steps`, `checkpoint_every_n_seconds`, `preemption_signals`):
#:
#: - The hook saves only right after an optimizer step of a train phase (`is_optimizer_step`), so
#:   no gradient of an unfinished accumulation window is ever pending in a checkpoint.
#: - There it calls `task.get_data_position()` on EVERY rank at the same step (so it may run
#:   collectives, e.g. gather each rank's partial meters and losses) and stores the primary rank's
#:   result, plain data (tensors, numbers, strings, lists, dicts), under this key next to
#:   `task.get_classy_state()`. Phase-end checkpoints have no such key.
#: - `task.set_classy_state(state)` with this key present must continue the same phase after the
#:   batches already done (same data order, partial meters and losses, counters), instead of
#:   starting the next phase. How the position is kept is the loop's business: a batch count and a
#:   sampler offset (the reference trainer), or `torchdata`'s `StatefulDataLoader.state_dict()`.
DATA_POSITION_KEY = "data_position"


class KeepsDataPosition(Protocol):
    """The optional part of the contract that mid-phase checkpoints need (see `DATA_POSITION_KEY`)."""

    def get_data_position(self) -> dict[str, Any]:
        """Plain data saying where the loop is inside the current train phase; called on every rank."""
        ...


def is_optimizer_step(task: Task) -> bool:
    """True if the step that just ran updated the parameters (absent flag means every step does)."""
    return bool(getattr(task, "is_optimizer_step", True))
