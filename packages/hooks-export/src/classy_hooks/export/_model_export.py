"""What TorchscriptHook and TorchExportHook share: eval mode, example inputs, device moves, parity checks.

Private module: the public API is the two hooks.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import IO, Any, ClassVar

import torch
from torch import nn

from classy_hooks.core import ClassyHook, TaskContractError, is_primary
from classy_hooks.core.files import atomic_write, ensure_writable_folder
from classy_hooks.core.module_modes import eval_mode
from classy_hooks.core.task import Task
from classy_hooks.core.torch_support.devices import model_device
from classy_hooks.core.torch_support.example_inputs import example_from_batch, example_from_shape
from classy_hooks.core.url_files import join
from classy_hooks.core.validation import check_str, config_error
from classy_hooks.core.wrapped_models import unwrap_model
from classy_hooks.export.torch_private import pytree

logger = logging.getLogger(__name__)

#: Most samples of the last batch used as the example input (export cost stays small for big batches).
MAX_EXAMPLE_SAMPLES = 16


class ExportError(RuntimeError):
    """The model could not be exported, or the exported file does not reproduce the eager model."""


def check_device(hook: str, device: Any) -> str:
    """Constructor check of a `device` argument: a string torch understands, e.g. "cpu" or "cuda:0"."""
    check_str(hook, "device", device)
    try:
        torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise config_error(
            hook, "device", f"is not a device torch knows ({exc})", 'Pass e.g. "cpu" or "cuda:0".'
        ) from exc
    return str(device)


def check_device_available(hook: str, device: str) -> None:
    """`on_start` check: the export device must exist on this machine."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise config_error(
            hook,
            "device",
            f"is {device!r}, but CUDA is not available here",
            'Pass device="cpu" or run on a GPU machine.',
        )


def same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        return (a.index or torch.cuda.current_device()) == (b.index or torch.cuda.current_device())
    return True


def model_on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The model itself when it already lives on `device`, else a copy moved there.

    Exporting a copy keeps the task's model where it is: moving a traced or scripted module can
    move the parameters it shares with the source model.
    """
    if same_device(model_device(model), device):
        return model
    return copy.deepcopy(model).to(device)


def plain_model(task: Task) -> nn.Module:
    """The module the user wrote inside `task.base_model`: `torch.compile`, DDP and DataParallel seen through.

    Exporting it, not the wrapper, is what works: TorchScript cannot trace a compiled module, and
    a DDP forward on the primary rank alone would start a collective the other ranks never join.
    """
    model: nn.Module = unwrap_model(task.base_model)
    return model


def check_not_sharded(hook: str, model: nn.Module) -> None:
    """`on_start` check on every rank: FSDP2-sharded parameters (DTensors) cannot be exported.

    An FSDP2 forward all-gathers its parameters, a collective that the other ranks would never
    join while the primary exports; and each rank holds only its shard of the weights.
    """
    if not torch.distributed.is_available():
        return
    from torch.distributed.tensor import DTensor

    sharded = next((name for name, p in model.named_parameters() if isinstance(p, DTensor)), None)
    if sharded is not None:
        raise TaskContractError(
            f"{hook}: task.base_model ({type(model).__name__}) is sharded with FSDP2 fully_shard (parameter "
            f"{sharded!r} is a DTensor), so it cannot be exported on one rank. Export an unsharded copy instead: "
            "gather the weights on every rank with torch.distributed.checkpoint.state_dict.get_model_state_dict("
            "model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)), load them into a freshly "
            "built unsharded model on rank 0 and run the hook there (or export from the saved checkpoint); "
            "remove this hook from FSDP runs."
        )


# ---- example inputs (built by classy_hooks.core.torch_support.example_inputs) ---------------------


#: The class whose `input_shape` is Classy Vision's (3, 224, 224) default, not a shape a model declared.
CLASSY_DEFAULT_INPUT_SHAPE_OWNER = "classy_vision.models.classy_model.ClassyModel"


def _declares_input_shape(model: nn.Module) -> bool:
    """Whether `input_shape` comes from the model itself, not from Classy Vision's `ClassyModel`, which
    answers (3, 224, 224) for every model that does not declare one."""
    inner = getattr(model, "classy_model", model)  # a Classy model with heads is a wrapper around it
    if "input_shape" in vars(inner):
        return True
    owner = next((cls for cls in type(inner).__mro__ if "input_shape" in vars(cls)), None)
    return owner is not None and f"{owner.__module__}.{owner.__qualname__}" != CLASSY_DEFAULT_INPUT_SHAPE_OWNER


def example_args(
    hook: str, task: Task, model: nn.Module, min_batch: int = 1, seen: tuple[Any, ...] | None = None
) -> tuple[Any, ...]:
    """Positional arguments for one forward of `model` on a real input.

    In order: the input of `task.last_batch`, else `seen` (a batch kept from an earlier step:
    Classy Vision's ClassificationTask clears `last_batch` when a phase runs out of data, so it is
    None at `on_end`), at most `MAX_EXAMPLE_SAMPLES` samples (real data with its real dtype, so
    models taking token ids or uint8 images work); else a seeded random batch of `model.input_shape`,
    which is logged (a warning when that shape is only Classy Vision's default). The batch is
    repeated up to `min_batch` samples when needed.
    """
    args = example_from_batch(task, MAX_EXAMPLE_SAMPLES) or seen
    if args is None:
        shape: Any = getattr(model, "input_shape", None)
        if shape is None:
            raise TaskContractError(
                f"{hook}: no example input: task.last_batch has no 'input' and {model.__class__.__name__}.input_shape "
                "is None. Set base_model.input_shape to the per-sample shape (no batch dimension), e.g. (3, 224, 224), "
                "or export after a phase has run."
            )
        size = max(4, min_batch)
        args = example_from_shape(hook, model, size)
        declared = _declares_input_shape(model)
        logger.log(
            logging.INFO if declared else logging.WARNING,
            "%s: no batch was seen (task.last_batch has no 'input'), so the example input is a seeded random batch "
            "of %d samples of %s.input_shape %s%s.",
            hook,
            size,
            model.__class__.__name__,  # of a Classy model with heads: the class its wrapper stands for
            tuple(shape),
            ""
            if declared
            else (
                ", Classy Vision's default for models that declare none. If the model takes another shape, set "
                "base_model.input_shape to its per-sample shape (no batch dimension), or run a phase before on_end"
            ),
        )
    repeated: tuple[Any, ...] = pytree.tree_map(
        lambda t: _repeat_to(t, min_batch) if isinstance(t, torch.Tensor) else t, args
    )
    return repeated


def _repeat_to(tensor: torch.Tensor, min_batch: int) -> torch.Tensor:
    """`tensor` with its samples repeated until it has at least `min_batch` of them."""
    if tensor.shape[0] >= min_batch:
        return tensor
    repeats = -(-min_batch // tensor.shape[0])
    return tensor.repeat(repeats, *([1] * (tensor.dim() - 1)))[:min_batch]


def batch_slice(args: tuple[Any, ...], size: int) -> tuple[Any, ...]:
    """The first `size` samples of every tensor in `args` (used for a second parity input)."""
    sliced: tuple[Any, ...] = pytree.tree_map(lambda t: t[:size] if isinstance(t, torch.Tensor) else t, args)
    return sliced


def batch_size(args: tuple[Any, ...]) -> int:
    tensors = [t for t in pytree.tree_leaves(args) if isinstance(t, torch.Tensor)]
    return int(tensors[0].shape[0]) if tensors else 0


def to_device(tree: Any, device: torch.device) -> Any:
    return pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, tree)


def check_parity(hook: str, what: str, expected: Any, actual: Any, rtol: float, atol: float) -> float:
    """Compare two model outputs (tensors or nested containers of them); return the largest absolute error.

    Raises `ExportError` when the structures differ or a value is off by more than
    `atol + rtol * |expected|`.
    """
    exp_leaves, exp_spec = pytree.tree_flatten(expected)
    act_leaves, act_spec = pytree.tree_flatten(actual)
    if exp_spec != act_spec or len(exp_leaves) != len(act_leaves):
        raise ExportError(
            f"{hook}: {what}: the exported model returns {act_spec}, the eager model {exp_spec}. "
            "The export changed the output structure; trace with trace_strict=False or export a wrapper."
        )
    worst = 0.0
    for index, (exp, act) in enumerate(zip(exp_leaves, act_leaves)):
        if not isinstance(exp, torch.Tensor):
            if exp != act:
                raise ExportError(f"{hook}: {what}: output {index} is {act!r}, the eager model gives {exp!r}.")
            continue
        exp_cpu = exp.detach().cpu()
        act_cpu = act.detach().cpu() if isinstance(act, torch.Tensor) else torch.as_tensor(act)
        if exp_cpu.shape != act_cpu.shape:
            raise ExportError(
                f"{hook}: {what}: output {index} has shape {tuple(act_cpu.shape)}, "
                f"the eager model's has {tuple(exp_cpu.shape)}."
            )
        if not exp_cpu.is_floating_point() and not exp_cpu.is_complex():
            if not torch.equal(exp_cpu, act_cpu.to(exp_cpu.dtype)):
                raise ExportError(f"{hook}: {what}: integer output {index} differs from the eager model's.")
            continue
        exp64, act64 = exp_cpu.double(), act_cpu.double()
        error = (exp64 - act64).abs()
        nan_mismatch = bool((exp64.isnan() != act64.isnan()).any())
        error = torch.nan_to_num(error, nan=0.0)
        limit = atol + rtol * exp64.abs().nan_to_num(nan=0.0)
        worst = max(worst, float(error.max()) if error.numel() else 0.0)
        if nan_mismatch or bool((error > limit).any()):
            raise ExportError(
                f"{hook}: {what}: output {index} differs from the eager model in eval mode by up to "
                f"{float(error.max()):.3g} (tolerance atol={atol:g}, rtol={rtol:g}). Likely causes: "
                "data-dependent control flow frozen by tracing (use use_trace=False or torch.export), "
                "randomness in eval mode, or a model that reads global state. The file was not replaced."
            )
    return worst


def describe_failure(exc: BaseException) -> str:
    """The first meaningful line of an exporter's error, short enough for a one-line message."""
    text = str(exc).strip() or type(exc).__name__
    first = next((line.strip() for line in text.splitlines() if line.strip()), text)
    first = re.sub(r"\s+", " ", first)
    return f"{type(exc).__name__}: {first[:500]}"


class ModelExportHookBase(ClassyHook):
    """Shared `on_start` / `on_end` flow of the two export hooks (not registered itself).

    `on_end`, on the primary rank only: take the plain module of `task.base_model` (through
    `torch.compile`, DDP, DataParallel; see `plain_model`), put it in eval mode (restored afterwards),
    compute the eager outputs on a real input, convert (`_convert`), write the file atomically,
    load it back from the temporary file and compare its outputs with the eager ones. Only a
    file that passed the comparison replaces `<folder>/<file_name>`; otherwise `ExportError`.

    Of a `torch.compile`d, DDP or DataParallel `base_model` the module inside is exported (its
    plain parameter names); an FSDP2-sharded one is refused in `on_start` on every rank.

    What it reads: `task.base_model` (optional `input_shape`, `input_key`) and
    `task.last_batch.sample["input"]`. The example input is up to 16 samples of the last batch at
    `on_end`, else of the first batch the hook saw in `on_step` (a ClassificationTask has cleared
    `last_batch` by `on_end`), else a seeded random batch of 4 of `input_shape` (logged; a warning
    when it is only Classy Vision's (3, 224, 224) default).
    """

    task_attributes = ("base_model",)
    file_name: ClassVar[str] = ""
    #: Parity tolerance: |exported - eager| <= atol + rtol * |eager| for every output value.
    parity_rtol: float = 1e-3
    parity_atol: float = 1e-4

    def __init__(self, folder: str, folder_arg: str, device: str) -> None:
        super().__init__()
        self._seen_batch: tuple[Any, ...] | None = None
        self.folder = check_str(self.name(), folder_arg, folder)
        self._folder_arg = folder_arg
        self.device = check_device(self.name(), device)
        self.output_path = join(folder, self.file_name)  # folder may be an fsspec URL (uploaded whole)

    on_phase_start = ClassyHook._noop
    on_phase_end = ClassyHook._noop

    def on_step(self, task: Task) -> None:
        """Primary rank, until one is kept: a copy of the batch's input, the example if `on_end` sees no last batch."""
        if self._seen_batch is not None or not is_primary():
            return
        args = example_from_batch(task, MAX_EXAMPLE_SAMPLES)
        if args is not None:  # copied: a slice would keep the whole batch alive
            self._seen_batch = pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, args)

    def on_start(self, task: Task) -> None:
        """Check `task.base_model` (every rank: not FSDP-sharded); primary: the folder and the device."""
        self.check_task(task)
        check_not_sharded(self.name(), plain_model(task))
        if not is_primary():
            return
        ensure_writable_folder(self.name(), self._folder_arg, self.folder)
        check_device_available(self.name(), self.device)

    # ---- what each exporter provides ---------------------------------------------------------

    def _min_batch(self) -> int:
        return 1

    def _convert(self, model: nn.Module, args: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def _save(self, exported: Any, handle: IO[bytes]) -> None:
        raise NotImplementedError

    def _load(self, handle: IO[bytes], device: torch.device) -> Any:
        """Load the file back; return a callable module."""
        raise NotImplementedError

    def _accepts_other_batch_sizes(self, exported: Any) -> bool:
        return True

    def _describe(self, exported: Any) -> str:
        return ""

    # ---- the shared flow ---------------------------------------------------------------------

    def _run_loaded(self, loaded: Any, args: tuple[Any, ...], size: int) -> Any:
        try:
            return loaded(*args)
        except Exception as exc:
            raise ExportError(
                f"{self.name()}: the reloaded {self.file_name} fails on a batch of {size}: {describe_failure(exc)}. "
                "The file was not replaced."
            ) from exc

    def on_end(self, task: Task) -> None:
        """Primary rank: export the plain module of `task.base_model`, verify the file, then move it into place."""
        if not is_primary():
            return
        model = plain_model(task)
        target = torch.device(self.device)
        hook = self.name()
        with eval_mode(model):
            args = example_args(hook, task, model, self._min_batch(), self._seen_batch)
            with torch.no_grad():
                source = model_device(model)
                expected = model(*to_device(args, source))
                size = batch_size(args)
            export_model = model_on_device(model, target)
            target_args = to_device(args, target)
            exported = self._convert(export_model, target_args)
            half, expected_half = None, None
            if size > 1 and self._accepts_other_batch_sizes(exported):
                half = batch_slice(args, max(1, size // 2))
                try:
                    with torch.no_grad():
                        expected_half = model(*to_device(half, source))
                except Exception:  # the eager model itself needs its batch size: skip the second input
                    half = None
            worst = 0.0
            with atomic_write(self.output_path, "w+b") as handle:
                self._save(exported, handle)
                handle.flush()
                handle.seek(0)
                loaded = self._load(handle, target)
                with torch.no_grad():
                    actual = self._run_loaded(loaded, target_args, size)
                    worst = check_parity(
                        hook, f"on {size} sample(s)", expected, actual, self.parity_rtol, self.parity_atol
                    )
                    if half is not None:
                        half_size = batch_size(half)
                        actual_half = self._run_loaded(loaded, to_device(half, target), half_size)
                        worst = max(
                            worst,
                            check_parity(
                                hook,
                                f"on a batch of {half_size}",
                                expected_half,
                                actual_half,
                                self.parity_rtol,
                                self.parity_atol,
                            ),
                        )
        logging.getLogger(type(self).__module__).info(
            "%s: wrote %s (%s, eval mode, device %s%s); reloaded output matches the eager model (max abs error %.2g).",
            hook,
            self.output_path,
            type(model).__name__,
            self.device,
            self._describe(exported),
            worst,
        )
