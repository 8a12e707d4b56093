"""Helpers shared by the logging hooks: readable numbers, TensorBoard tags, learning rates, writer kwargs."""

from __future__ import annotations

import difflib
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import torch

from classy_hooks.core.task import Task
from classy_hooks.core.validation import check_plain_data, config_error

DISTRIBUTION = "classy-hooks-logging"

_TAG_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.\-/]")


def clean_tag(text: str) -> str:
    """A tag TensorBoard accepts as is (letters, digits, `_ . - /`), so it never logs 'illegal name'."""
    cleaned = _TAG_BAD_CHARS.sub("_", str(text)).strip("/")
    return cleaned or "_"


def format_number(value: float) -> str:
    """Four significant digits; small values stay visible (1e-05, not 0.0000)."""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _param_groups(task: Task) -> Any:
    """`task.optimizer.param_groups`; of an optimizer wrapper without them (Classy Vision's
    ClassyOptimizer), those of the torch optimizer it holds as `.optimizer`."""
    optimizer = getattr(task, "optimizer", None)
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        groups = getattr(getattr(optimizer, "optimizer", None), "param_groups", None)
    return groups or []


def learning_rates(task: Task) -> list[float]:
    """The learning rate of every param group of `task.optimizer` (empty without an optimizer)."""
    return [float(group["lr"]) for group in _param_groups(task) if "lr" in group]


class PhaseLearningRates:
    """The learning rates a train phase used: those of its latest train step.

    A hook that reports rates at `on_phase_end` cannot read them there: Classy Vision's
    ClassificationTask steps its epoch schedule before calling `on_phase_end`, so the optimizer
    already holds the next phase's rates. Call `start` from `on_phase_start` (the rates a phase
    without steps would have used) and `step` from `on_step`, right after the optimizer used them.
    Tensor rates are copied on their device (no host sync per step); `rates` converts once.
    """

    def __init__(self) -> None:
        self._rates: list[Any] | None = None

    def start(self, task: Task) -> None:
        self._rates = self._snapshot(task)

    def step(self, task: Task) -> None:
        if task.train:
            self._rates = self._snapshot(task)

    def rates(self, task: Task) -> list[float]:
        """The phase's rates; the optimizer's current ones if neither `start` nor `step` ran."""
        if self._rates is None:
            return learning_rates(task)
        return [float(rate) for rate in self._rates]

    @staticmethod
    def _snapshot(task: Task) -> list[Any]:
        rates = [group["lr"] for group in _param_groups(task) if "lr" in group]
        return [rate.detach().clone() if isinstance(rate, torch.Tensor) else rate for rate in rates]


def as_float(value: Any) -> float | None:
    """A plain float for numbers and one-element tensors; None for anything else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    return None


class RunningLoss:
    """Sum and count of step losses between two reads, kept without a host sync per step.

    Tensor losses are added in place to a tensor of our own on their device: the same dtype (no
    conversion kernel per step) unless that is a 16-bit float, which would lose precision over a
    phase (then float32). Float losses go to a float64 CPU tensor. Only `mean()` syncs.
    """

    def __init__(self) -> None:
        self._sum: torch.Tensor | None = None
        self.count = 0

    def reset(self) -> None:
        self._sum = None
        self.count = 0

    def add(self, loss: Any) -> None:
        """Add one step's loss (a 0-dim tensor or a number); anything else, e.g. None, is not counted."""
        if isinstance(loss, torch.Tensor):
            if self._sum is None:
                dtype = torch.float32 if loss.dtype in (torch.float16, torch.bfloat16) else loss.dtype
                self._sum = loss.detach().reshape(()).to(dtype, copy=True)
            else:
                self._sum.add_(loss.detach().reshape(()))
        elif isinstance(loss, (int, float)):
            if self._sum is None:
                self._sum = torch.zeros((), dtype=torch.float64)
            self._sum.add_(float(loss))
        else:
            return
        self.count += 1

    def mean(self) -> float | None:
        """Mean of the losses added since the last reset; None if there were none."""
        if self._sum is None or not self.count:
            return None
        return float(self._sum.item()) / self.count


def mean_loss(losses: Sequence[Any]) -> float | None:
    """Mean of a phase's synced losses (floats or 0-dim tensors); None when the list is empty."""
    if not losses:
        return None
    first = losses[0]
    if isinstance(first, torch.Tensor):
        return float(torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in losses]).mean().item())
    return math.fsum(float(x) for x in losses) / len(losses)


def meter_values(meter: Any) -> dict[str, float]:
    """The numeric entries of `meter.value` (a dict, or a single number stored under 'value')."""
    value = meter.value
    items = value.items() if isinstance(value, Mapping) else [("value", value)]
    out: dict[str, float] = {}
    for key, item in items:
        number = as_float(item)
        if number is not None:
            out[str(key)] = number
    return out


#: Keyword arguments tensorboardX's SummaryWriter accepts (checked before anything is created).
SUMMARY_WRITER_KEYS = (
    "logdir",
    "log_dir",
    "comment",
    "purge_step",
    "max_queue",
    "flush_secs",
    "filename_suffix",
    "write_to_disk",
)


def check_summary_writer_kwargs(hook: str, kwargs: Any) -> dict[str, Any]:
    """Validate the `summary_writer` config entry: a dict of tensorboardX SummaryWriter arguments."""
    if not isinstance(kwargs, Mapping):
        raise config_error(
            hook,
            "summary_writer",
            f"must be a dict of SummaryWriter arguments, got {kwargs!r}",
            'Pass e.g. {"logdir": "runs/exp1/tensorboard"}.',
        )
    check_plain_data(hook, "summary_writer", dict(kwargs))
    for key in kwargs:
        if key not in SUMMARY_WRITER_KEYS:
            close = difflib.get_close_matches(str(key), SUMMARY_WRITER_KEYS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise config_error(
                hook,
                "summary_writer",
                f"has unknown key '{key}'",
                f"tensorboardX SummaryWriter accepts {list(SUMMARY_WRITER_KEYS)}.{hint}",
            )
    return dict(kwargs)


class _WriterFromKwargs(Protocol):
    """A TensorBoard hook that creates its writer in `on_start` from kept `summary_writer` kwargs."""

    _writer_kwargs: dict[str, Any] | None


WriterHook = TypeVar("WriterHook", bound=_WriterFromKwargs)


def hook_from_summary_writer_config(
    hook: str, build: Callable[..., WriterHook], config: Mapping[str, Any], optional: Mapping[str, Any]
) -> WriterHook:
    """The TensorBoard hooks' `from_config`: `build(tb_writer=None, ...)` keeping the checked `summary_writer` kwargs.

    `config` is `{"summary_writer": {SummaryWriter kwargs}}` plus the keys of `optional` (key -> default, passed
    to `build`). The writer itself is created in `on_start`, on the primary rank only.
    """
    from classy_hooks.core.config import check_config_keys

    check_config_keys(hook, config, {"summary_writer"}, set(optional))
    writer_kwargs = check_summary_writer_kwargs(hook, config["summary_writer"])
    built = build(tb_writer=None, **{key: config.get(key, default) for key, default in optional.items()})
    built._writer_kwargs = writer_kwargs
    return built


def flush_and_close(tb_writer: Any, owned: bool) -> None:
    """Flush a writer's events to disk, and close it when the hook created it; OSError/ValueError reach the caller."""
    tb_writer.flush()
    if owned:
        tb_writer.close()


def unique_suffix(hook: str) -> str:
    """An event-file name suffix that keeps files apart and in creation order.

    tensorboardX names files `events.out.tfevents.<seconds>.<host><suffix>` and opens them with
    "wb": two writers opened on one folder in the same second (two hooks, or a quick restart)
    would truncate each other. The nanoseconds within the second keep the names distinct and
    sorted, which matters because readers replay the files of a folder in name order.
    """
    return f".{time.time_ns() % 1_000_000_000:09d}.{hook}"


def writer_logdir(kwargs: Mapping[str, Any]) -> str | None:
    value = kwargs.get("logdir", kwargs.get("log_dir"))
    return None if value is None else str(value)


def check_tb_writer(hook: str, tb_writer: Any, method: str) -> Any:
    """Return `tb_writer` if it is None (non-primary ranks) or has the SummaryWriter `method` the hook calls."""
    if tb_writer is not None and not callable(getattr(tb_writer, method, None)):
        raise config_error(
            hook,
            "tb_writer",
            f"must be a SummaryWriter (or None on non-primary ranks), got {type(tb_writer).__name__}",
            "Pass tensorboardX.SummaryWriter(logdir), or build the hook from a config with 'summary_writer'.",
        )
    return tb_writer


def create_summary_writer(hook: str, writer_kwargs: Mapping[str, Any] | None, **defaults: Any) -> Any:
    """A tensorboardX SummaryWriter from a hook's `summary_writer` kwargs, its log dir checked first.

    Each hook's event file gets its own suffix; `defaults` fill in kwargs the config did not set. A log dir that
    is an fsspec URL gets an `UploadingSummaryWriter` (events staged locally, uploaded at every flush).
    """
    from classy_hooks.core.files import ensure_writable_folder
    from classy_hooks.core.optional import import_extra
    from classy_hooks.core.url_files import is_url, local_path

    tensorboardx = import_extra("tensorboardX", hook, DISTRIBUTION, "tensorboard")
    kwargs = dict(writer_kwargs or {})
    logdir = writer_logdir(kwargs)
    if logdir is not None:
        ensure_writable_folder(hook, "summary_writer", logdir)
    kwargs.setdefault("filename_suffix", unique_suffix(hook))
    for key, value in defaults.items():
        if kwargs.get(key) is None:
            kwargs[key] = value
    if logdir is not None and (is_url(logdir) or logdir != local_path(logdir)):
        kwargs.pop("logdir", None)
        kwargs.pop("log_dir", None)
        if not is_url(logdir):  # file://: the plain local folder
            return tensorboardx.SummaryWriter(logdir=local_path(logdir), **kwargs)
        from classy_hooks.logging.uploading_summary_writer import UploadingSummaryWriter

        return UploadingSummaryWriter(tensorboardx, logdir, hook, **kwargs)
    return tensorboardx.SummaryWriter(**kwargs)
