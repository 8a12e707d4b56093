"""OutputCSVHook: every test phase's predictions, one row per test sample, and `predictions.csv` the latest phase."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from classy_hooks.core import (
    ClassyHook,
    HookConfigError,
    TaskContractError,
    barrier,
    get_rank,
    get_world_size,
    is_distributed,
    is_primary,
    register_hook,
)
from classy_hooks.core.files import (
    atomic_write,
    ensure_writable_folder,
    file_exists,
    list_folder,
    read_bytes,
    remove_file,
    sync_folder,
)
from classy_hooks.core.shared_folder import check_shared_folder
from classy_hooks.core.task import Task
from classy_hooks.core.url_files import join
from classy_hooks.core.validation import check_bool, check_str, config_error

logger = logging.getLogger(__name__)

HEADER = ("sample_id", "prediction", "target")
FILE_NAME = "predictions.csv"
_FORBIDDEN_DELIMITERS = ("\r", "\n", '"')
_PART_RE = re.compile(rf"^\.{re.escape(FILE_NAME)}\.phase\d+\.rank\d+\.part$")
_PHASE_FILE_RE = re.compile(r"^predictions\.phase(\d+)\.csv$")


def phase_file_name(phase_idx: int) -> str:
    """The file that keeps test phase `phase_idx`'s predictions (zero-padded: names sort in phase order)."""
    return f"predictions.phase{phase_idx:05d}.csv"


@register_hook("output_csv")
class OutputCSVHook(ClassyHook):
    """Write `<folder>/predictions.csv`: one row per test sample with its id, predicted class and target class.

    Columns (header `sample_id, prediction, target`, separated by `delimiter`, tab by default):
    the sample's `id_key` entry, `argmax` of the model output, and the target class (the argmax
    too for one-hot or soft `(N, C)` targets; empty when the batch has no target).

    Several test phases: every test phase is kept, as Classy Vision kept them (it appended them to
    one file), in `<folder>/predictions.phase<phase_idx>.csv` (`task.phase_idx`, 5 digits), and
    `predictions.csv` always holds the **latest completed test phase**: the file to read for the
    latest predictions. Each holds one row per sample, sorted by id (numerically when every id is
    an integer), written atomically at the end of its test phase, so at any instant each is a
    complete phase; the log says which phase `predictions.csv` holds. `keep_phases=False` writes
    `predictions.csv` only. A resumed run (restored `task.phase_idx` >= 0 at `on_start`) first
    removes the phase files written after its checkpoint (a crashed run's later phases, which it
    runs again) and puts the checkpoint's latest test phase back into `predictions.csv`: no phase
    is duplicated and no row is appended twice. Train phases write nothing.

    When it acts and what it reads:

    - `on_start`: checks the task has `train`, `phase_idx` and `last_batch`; the primary rank
      creates `folder` if needed and checks it is writable; under `torch.distributed` every other
      rank then checks it can write there too (the folder must be shared by all ranks). Nothing is
      opened in the constructor. `folder` may be an fsspec URL (`s3://bucket/run`): the file is then
      uploaded whole at each test phase end (object stores: one object write, never a partial file).
    - `on_phase_start`: empties the buffers.
    - `on_step` (test phases): reads `task.last_batch.output` (must be `(N, C)`),
      `task.last_batch.target` (or `sample["target"]`; `(N,)` class indices or `(N, C)`) and
      `task.last_batch.sample[id_key]` (a tensor or list of `N` ids). The argmax of output and
      target is taken on the device and the small index tensors are buffered: there is **no host
      sync per step**; everything moves to the host in one transfer per phase at `on_phase_end`.
      (Rows are small, 3 integers per sample, so buffering a phase costs little memory, while a
      `.tolist()` per step would stall a GPU pipeline at every batch.) A batch without `id_key` is
      skipped; the first one logs a warning naming the keys the batch has, the phase end reports
      how many were skipped.
    - `on_phase_end` (test phases): one process writes the file directly. Under `torchrun`, each
      rank atomically writes its rows to a part file in `folder`, all ranks meet at a barrier, and
      the primary merges the parts into `predictions.csv` (one header, atomic replace) and
      removes them. A sample id seen twice (e.g. a sampler that pads the last batch with repeated
      samples) is written once, with a warning.
    - `on_end`: nothing (the file is complete after each test phase).
    """

    task_attributes = ("train", "phase_idx", "last_batch")

    def __init__(self, folder: str, id_key: str = "id", delimiter: str = "\t", keep_phases: bool = True) -> None:
        super().__init__()
        name = self.name()
        self.folder = check_str(name, "folder", folder)
        self.id_key = check_str(name, "id_key", id_key)
        self.keep_phases = check_bool(name, "keep_phases", keep_phases)
        check_str(name, "delimiter", delimiter)
        if len(delimiter) != 1 or delimiter in _FORBIDDEN_DELIMITERS:
            raise config_error(
                name,
                "delimiter",
                f"must be a single character other than a quote or a line break, got {delimiter!r}",
                'Pass e.g. "\\t" or ",".',
            )
        self.delimiter = delimiter
        self.output_path = join(folder, FILE_NAME)  # folder may be an fsspec URL (see classy_hooks.core.url_files)
        self._ids: list[Any] = []
        self._predictions: list[torch.Tensor] = []
        self._targets: list[torch.Tensor | None] = []
        self._skipped_batches = 0
        self._warned_missing_id = False

    # ---- hook functions --------------------------------------------------------------------

    def on_start(self, task: Task) -> None:
        """Check the task and the folder; every rank must be able to write its part file there."""
        self.check_task(task)
        if is_primary():
            ensure_writable_folder(self.name(), "folder", self.folder)
            for stale in list_folder(self.folder):
                if _PART_RE.match(stale):
                    remove_file(join(self.folder, stale))
            if int(task.phase_idx) >= 0:
                self._rewind_to(int(task.phase_idx))
        check_shared_folder(
            self.name(),
            "folder",
            self.folder,
            why="Under torch.distributed every rank writes its part file there",
            fix="Pass a folder on a shared file system.",
        )

    def on_phase_start(self, task: Task) -> None:
        """Empty the buffers of the previous phase."""
        self._reset()

    def on_step(self, task: Task) -> None:
        """Test phases: buffer the ids, predicted classes and target classes of the batch (no host sync)."""
        if task.train or task.last_batch is None:
            return
        batch = task.last_batch
        sample = batch.sample
        if not isinstance(sample, Mapping) or self.id_key not in sample:
            self._skipped_batches += 1
            if not self._warned_missing_id:
                self._warned_missing_id = True
                keys = sorted(map(str, sample)) if isinstance(sample, Mapping) else type(sample).__name__
                logger.warning(
                    "%s: a test batch has no %r key (its keys: %s), so its samples get no row. Add a unique "
                    "id per sample to the batch dict, or pass id_key=<the key that holds one>. Further batches "
                    "without it are counted, not reported one by one.",
                    self.name(),
                    self.id_key,
                    keys,
                )
            return
        output = batch.output
        if not isinstance(output, torch.Tensor) or output.dim() != 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise TaskContractError(
                f"{self.name()}: task.last_batch.output must be a (batch, classes) tensor of scores, got {shape}. "
                "Predictions are the argmax over dimension 1: make the model return one row of scores per sample."
            )
        size = output.shape[0]
        ids = sample[self.id_key]
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().reshape(-1)
        elif not isinstance(ids, Sequence) or isinstance(ids, (str, bytes)):
            raise TaskContractError(
                f"{self.name()}: sample[{self.id_key!r}] must be a tensor or a list of ids, got {type(ids).__name__}. "
                "Give every sample one id (a tensor or list), or pass id_key=<the key that holds them>."
            )
        if len(ids) != size:
            raise TaskContractError(
                f"{self.name()}: sample[{self.id_key!r}] holds {len(ids)} ids for a batch of {size} outputs. "
                "Give every sample exactly one id."
            )
        target = batch.target if batch.target is not None else sample.get("target")
        target_classes: torch.Tensor | None = None
        if target is not None:
            if not isinstance(target, torch.Tensor) or target.dim() not in (1, 2) or target.shape[0] != size:
                shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
                raise TaskContractError(
                    f"{self.name()}: the target must be a tensor of class indices ({size},) or one-hot/soft "
                    f"scores ({size}, classes), got {shape}. Pass targets of that shape, or none."
                )
            target_classes = target.detach().argmax(dim=1) if target.dim() == 2 else target.detach()
        self._ids.append(ids)
        self._predictions.append(output.detach().argmax(dim=1))
        self._targets.append(target_classes)

    def on_phase_end(self, task: Task) -> None:
        """Test phases: write `predictions.csv` (merging the rank part files under torch.distributed)."""
        if task.train:
            return
        rows = self._rows()
        skipped = self._skipped_batches
        self._reset()
        phase = int(task.phase_idx)
        if skipped:
            logger.warning(
                "%s: %d test batch(es) of phase %d had no %r key and are missing from %s.",
                self.name(),
                skipped,
                phase,
                self.id_key,
                self.output_path,
            )
        if not is_distributed() or get_world_size() == 1:
            self._write_final([rows], phase)
            return
        part = self._part_path(phase, get_rank())
        with atomic_write(part, "wb") as handle:
            handle.write(self._format(rows, header=False))
        barrier()
        if is_primary():
            parts = [self._part_path(phase, rank) for rank in range(get_world_size())]
            missing = [p for p in parts if not file_exists(p)]
            if missing:
                raise HookConfigError(
                    f"{self.name()}: the part files {missing} were not found after every rank wrote its part. "
                    f"Argument 'folder' = {self.folder!r} must be shared by all ranks: pass a folder on a file "
                    "system every rank sees under the same path."
                )
            chunks = [self._read_part(p) for p in parts]
            self._write_final(chunks, phase)
            for path in parts:
                remove_file(path)
            sync_folder(self.folder)

    on_end = ClassyHook._noop

    # ---- helpers -----------------------------------------------------------------------------

    def _reset(self) -> None:
        self._ids = []
        self._predictions = []
        self._targets = []
        self._skipped_batches = 0

    def _rows(self) -> list[list[Any]]:
        """Move the phase's buffers to the host in bulk and build the rows."""
        if not self._predictions:
            return []
        predictions = torch.cat(self._predictions).cpu().tolist()
        known = [t.reshape(-1) for t in self._targets if t is not None]
        values = iter(torch.cat(known).cpu().tolist() if known else [])
        targets: list[Any] = []
        for chunk, prediction_chunk in zip(self._targets, self._predictions):
            count = len(prediction_chunk)
            targets.extend([""] * count if chunk is None else [next(values) for _ in range(count)])
        if all(isinstance(chunk, torch.Tensor) for chunk in self._ids):
            ids = torch.cat(self._ids).cpu().tolist()
        else:
            ids = [i for chunk in self._ids for i in (chunk.tolist() if isinstance(chunk, torch.Tensor) else chunk)]
        return [[i, p, t] for i, p, t in zip(ids, predictions, targets)]

    def _format(self, rows: list[list[Any]], header: bool) -> bytes:
        text = io.StringIO()
        writer = csv.writer(text, delimiter=self.delimiter, lineterminator="\n")
        if header:
            writer.writerow(HEADER)
        writer.writerows(rows)
        return text.getvalue().encode("utf-8")

    def _read_part(self, path: str) -> list[list[Any]]:
        text = io.StringIO(read_bytes(path).decode("utf-8"), newline="")
        return [row for row in csv.reader(text, delimiter=self.delimiter) if row]

    def _part_path(self, phase: int, rank: int) -> str:
        return join(self.folder, f".{FILE_NAME}.phase{phase}.rank{rank:05d}.part")

    def _write_final(self, chunks: list[list[list[Any]]], phase: int) -> None:
        """Deduplicate by id, sort by id, and atomically replace `predictions.csv`."""
        seen: dict[str, list[Any]] = {}
        duplicates = 0
        disagreeing = 0
        for chunk in chunks:
            for row in chunk:
                key = str(row[0])
                if key in seen:
                    duplicates += 1
                    if [str(v) for v in seen[key]] != [str(v) for v in row]:
                        disagreeing += 1
                    continue
                seen[key] = row
        if duplicates:
            logger.warning(
                "%s: %d sample id(s) appeared more than once in test phase %d (%d with different values); "
                "each is written once (first occurrence). A distributed sampler that pads its last batch "
                "repeats samples; ids must be unique per sample.",
                self.name(),
                duplicates,
                phase,
                disagreeing,
            )
        keys = list(seen)
        try:
            keys.sort(key=int)
        except ValueError:
            keys.sort()
        content = self._format([seen[k] for k in keys], header=True)
        if self.keep_phases:
            with atomic_write(join(self.folder, phase_file_name(phase)), "wb") as handle:
                handle.write(content)
        with atomic_write(self.output_path, "wb") as handle:
            handle.write(content)
        logger.info("%s: wrote %d predictions of test phase %d to %s.", self.name(), len(keys), phase, self.output_path)

    def _rewind_to(self, phase_idx: int) -> None:
        """Resuming after phase `phase_idx`: drop later phase files, make `predictions.csv` the latest kept one."""
        kept: list[int] = []
        for name in list_folder(self.folder):
            match = _PHASE_FILE_RE.match(name)
            if match is None:
                continue
            if int(match.group(1)) > phase_idx:
                remove_file(join(self.folder, name))
                logger.info("%s: removed %s, written after the checkpoint this run resumes from.", self.name(), name)
            else:
                kept.append(int(match.group(1)))
        if kept:
            latest = join(self.folder, phase_file_name(max(kept)))
            with atomic_write(self.output_path, "wb") as handle:
                handle.write(read_bytes(latest))
            logger.info("%s: resumed after phase %d; %s holds test phase %d again.", self.name(), phase_idx,
                        self.output_path, max(kept))
