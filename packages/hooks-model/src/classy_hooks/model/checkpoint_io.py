"""Writing, checking, loading and resuming from checkpoints (the file side of `CheckpointHook`).

Layout (compatible with Classy Vision): a checkpoint is a dict
`{"input_args": ..., "classy_state_dict": task.get_classy_state(), "checkpoint_format_version": 1}`
saved with `torch.save`, with a content checksum in the zip archive comment that `load_checkpoint`
verifies (`classy_hooks.model.checkpoint_file`). `<folder>/checkpoint.torch` is the latest one;
`model_phase-<N>_end.torch` holds the one written at the end of phase N.

Everything here loads with `torch.load(path, weights_only=True)`: tensors, numbers, strings,
lists, tuples and dicts only. `check_weights_only` rejects anything else at save time and names the key.

Sharded checkpoints (FSDP2, DTensors; see `classy_hooks.model.sharded_checkpoint`) are folders
`model_phase-<N>_end.dcp/` with `checkpoint.latest` naming the newest; `load_checkpoint` and
`resume_task` accept them too.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch

from classy_hooks.core import plain_state_dict
from classy_hooks.core.files import file_exists, fsync_dir, list_folder, remove_file
from classy_hooks.core.task import Task
from classy_hooks.core.url_files import is_url, join, local_path
from classy_hooks.core.wrapped_models import has_wrapper_keys
from classy_hooks.model.checkpoint_file import ChecksumMismatch, verify_torch_file, write_torch_file

logger = logging.getLogger(__name__)

#: Version of the checkpoint layout written by this package (stored under `FORMAT_VERSION_KEY`).
CHECKPOINT_FORMAT_VERSION = 1
FORMAT_VERSION_KEY = "checkpoint_format_version"
#: File name of the latest checkpoint inside a checkpoint folder (Classy Vision's name).
LATEST_CHECKPOINT = "checkpoint.torch"
PHASE_CHECKPOINT = "model_phase-{phase_idx}_end.torch"
#: A checkpoint taken inside phase `phase_idx` after `batches` of its batches (every N steps / T seconds).
STEP_CHECKPOINT = "model_phase-{phase_idx}_batch-{batches}.torch"
#: The checkpoint written on a preemption signal (also inside a phase).
PREEMPTION_CHECKPOINT = "model_phase-{phase_idx}_batch-{batches}_preempted.torch"
#: Any named checkpoint, file (`.torch`) or sharded folder (`.dcp`): phase, batch (None at the end), preempted.
_NAMED_RE = re.compile(r"^model_phase-(\d+)_(?:end|batch-(\d+)(_preempted)?)\.(torch|dcp)$")
_TMP_RE = re.compile(r"^\.(checkpoint\.torch|model_phase-\d+_(end|batch-\d+(_preempted)?)\.torch)\..+\.tmp$")

_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, torch.Size, torch.dtype, torch.device)
_KEY_TYPES = (type(None), bool, int, float, str, bytes)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupt, or state cannot be saved safely; names the file or key."""


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed at the disk (full, quota, I/O error...); names the folder, the bytes needed, the fix.

    Nothing already written is touched: the previous checkpoint stays the latest and no partial file is left.
    """

    def __init__(self, message: str, folder: str, needed_bytes: int, free_bytes: int | None, errno: int | None):
        super().__init__(message)
        self.folder, self.needed_bytes, self.free_bytes, self.errno = folder, needed_bytes, free_bytes, errno

    @classmethod
    def from_os_error(cls, folder: str, error: OSError, checkpoint: Any) -> CheckpointWriteError:
        """The error for `error`, raised while writing `checkpoint` into `folder`."""
        needed = _estimated_file_bytes(checkpoint)
        free: int | None = None
        with contextlib.suppress(OSError):
            stats = os.statvfs(folder)
            free = stats.f_bavail * stats.f_frsize
        code = errno.errorcode.get(error.errno or 0, str(error.errno))
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "the disk is full" if error.errno == errno.ENOSPC else "the disk quota is used up"
            fix = (
                "Free space there, keep fewer checkpoints (CheckpointHook(keep_last=K)), or set "
                "checkpoint_folder to a disk with room."
            )
        elif error.errno == errno.EIO:
            what = "the disk reported an I/O error"
            fix = "Check the disk (dmesg) or set checkpoint_folder to another one."
        else:
            what, fix = "the write failed", "Fix the cause above or set checkpoint_folder to another folder."
        free_text = "unknown" if free is None else f"{free} bytes ({free / 1e6:.1f} MB)"
        message = (
            f"cannot write a checkpoint to {folder}: {what} ({code}: {error.strerror or error}). It needs about "
            f"{needed} bytes ({needed / 1e6:.1f} MB); free there: {free_text}. The previous checkpoint is intact "
            f"and no partial file was left. {fix}"
        )
        return cls(message, folder, needed, free, error.errno)


def _estimated_file_bytes(value: Any) -> int:
    """About the size of a checkpoint file of a state structure, from above: its distinct tensor storages plus,
    per storage, 1 KiB for its zip headers, alignment and pickle entry, and 4 KiB for the rest."""
    seen: dict[int, int] = {}

    def walk(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(item, Mapping):
            for child in item.values():
                walk(child)
        elif isinstance(item, (list, tuple, set, frozenset)):
            for child in item:
                walk(child)

    walk(value)
    return sum(seen.values()) + 1024 * len(seen) + 4096


def phase_checkpoint_name(phase_idx: int) -> str:
    """File name of the checkpoint written at the end of phase `phase_idx`."""
    return PHASE_CHECKPOINT.format(phase_idx=phase_idx)


def step_checkpoint_name(phase_idx: int, batches: int, *, preempted: bool = False) -> str:
    """File name of a checkpoint taken in phase `phase_idx` after `batches` batches (a preemption one if asked)."""
    return (PREEMPTION_CHECKPOINT if preempted else STEP_CHECKPOINT).format(phase_idx=phase_idx, batches=batches)


def checkpoint_order(name: str) -> tuple[int, int, int, int] | None:
    """Sort key of a named checkpoint (file or `.dcp` folder) in training order; None for other names.

    Phase N's mid-phase checkpoints come after phase N-1's end and before phase N's end, by batch
    count; a preemption checkpoint sorts after a step checkpoint of the same batch (same state).
    """
    match = _NAMED_RE.match(os.path.basename(name))
    if match is None:
        return None
    phase, batches, preempted, _ = match.groups()
    if batches is None:
        return (int(phase), 1, 0, 0)
    return (int(phase), 0, int(batches), int(preempted is not None))


def remove_checkpoint(folder: str, name: str) -> bool:
    """Delete the named checkpoint file or sharded folder in `folder`; False if it was not there.

    A sharded folder is first renamed to a temporary name (which `remove_stale_sharded_temp`
    removes at the next start), so a kill in the middle never leaves a half-deleted folder that
    still looks complete.
    """
    if is_url(folder):  # single files only: sharded checkpoints are never written to URLs
        if not file_exists(join(folder, name)):
            return False
        remove_file(join(folder, name))
        return True
    path = os.path.join(folder, name)
    if os.path.isdir(path):
        doomed = os.path.join(folder, f".{name}.old.tmp")
        shutil.rmtree(doomed, ignore_errors=True)
        try:
            os.replace(path, doomed)
        except FileNotFoundError:
            return False
        fsync_dir(folder)
        shutil.rmtree(doomed, ignore_errors=True)
        return True
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def check_weights_only(value: Any, path: str = "checkpoint", *, allow_dtensor: bool = False) -> None:
    """Raise `CheckpointError` naming the first key whose value `torch.load(weights_only=True)` cannot load.

    Allowed: tensors (and `nn.Parameter`), None, bool, int, float, complex, str, bytes, `torch.Size`,
    `torch.dtype`, `torch.device`, and dicts / lists / tuples / sets of those; with `allow_dtensor`
    (sharded checkpoints, where DCP stores each rank's shard) also DTensors.
    """
    if isinstance(value, torch.Tensor):
        if type(value).__name__ == "DTensor" and type(value).__module__.startswith("torch.distributed"):
            if allow_dtensor:
                return
            raise CheckpointError(
                f"cannot save {path}: it is a DTensor (a sharded tensor, e.g. of an FSDP2 model), which one "
                "checkpoint file cannot hold. Use CheckpointHook(..., sharded=True) (the default when the task "
                "state holds DTensors), which saves every rank's shard with torch.distributed.checkpoint."
            )
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise CheckpointError(
                f"cannot save {path}: it is a {type(value).__qualname__} (a tensor subclass), which "
                "torch.load(weights_only=True) rejects. Store a plain tensor (e.g. `t.as_subclass(torch.Tensor)`)."
            )
        return
    if isinstance(value, _LEAF_TYPES) and type(value) in _LEAF_TYPES:
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in _KEY_TYPES:
                raise CheckpointError(
                    f"cannot save {path}: key {key!r} is a {type(key).__qualname__}; "
                    "use str or int keys so that torch.load(weights_only=True) can read the checkpoint."
                )
            check_weights_only(item, f"{path}[{key!r}]", allow_dtensor=allow_dtensor)
        return
    if type(value) in (list, tuple, set, frozenset):
        for i, item in enumerate(value):
            check_weights_only(item, f"{path}[{i}]", allow_dtensor=allow_dtensor)
        return
    raise CheckpointError(
        f"cannot save {path}: it is a {type(value).__module__}.{type(value).__qualname__}, which "
        "torch.load(weights_only=True) cannot load. Keep only tensors, numbers, strings, lists and dicts "
        "in task and hook state (e.g. convert numpy arrays with torch.as_tensor, objects to dicts)."
    )


def with_plain_model_keys(classy_state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """`classy_state_dict` with the keys of `"base_model"` stripped of `torch.compile` / DDP wrapper segments.

    So a checkpoint of a compiled or DDP-wrapped model loads into the plain model and back, and old
    checkpoints with `_orig_mod.` or `module.` keys still load.
    """
    state = dict(classy_state_dict)
    model = state.get("base_model")
    if isinstance(model, Mapping) and all(isinstance(key, str) for key in model) and has_wrapper_keys(model):
        plain = plain_state_dict(model)
        state["base_model"] = OrderedDict(plain) if isinstance(model, OrderedDict) else plain
    return state


def holds_dtensors(value: Any) -> bool:
    """True if `value` (a state structure of dicts, lists and tuples) holds a DTensor anywhere.

    Cheap when torch.distributed.tensor was never imported: then no DTensor can exist.
    """
    if "torch.distributed.tensor" not in sys.modules:
        return False
    from torch.distributed.tensor import DTensor

    def walk(item: Any) -> bool:
        if isinstance(item, DTensor):
            return True
        if isinstance(item, Mapping):
            return any(walk(v) for v in item.values())
        if isinstance(item, (list, tuple)):
            return any(walk(v) for v in item)
        return False

    return walk(value)


def make_checkpoint(classy_state_dict: Mapping[str, Any], input_args: Any = None) -> dict[str, Any]:
    """The dict a checkpoint file holds: Classy Vision's two keys plus the format version.

    The model's keys are the plain module's (`with_plain_model_keys`).
    """
    return {
        "input_args": input_args,
        "classy_state_dict": with_plain_model_keys(classy_state_dict),
        FORMAT_VERSION_KEY: CHECKPOINT_FORMAT_VERSION,
    }


def write_checkpoint(folder: str, checkpoint: Mapping[str, Any], phase_file: str | None = None) -> str:
    """Write `checkpoint` crash-safely as `<folder>/checkpoint.torch` (and `phase_file`, if given).

    The bytes go to a temporary file in `folder` (`torch.save` plus a content checksum, see
    `classy_hooks.model.checkpoint_file`), which is fsynced; the per-phase name and then
    `checkpoint.torch` are pointed at it with `os.replace` (the per-phase name through a hard link,
    so the data is written once; a copy where links are unsupported); the folder is fsynced last.
    A crash at any instant leaves every name either at its previous complete file or at the new
    complete one. Returns the path of the latest checkpoint.

    A failed write (a full disk, an I/O error) raises `CheckpointWriteError` naming the folder, the
    bytes needed and the fix; the temporary file is removed and every existing checkpoint is untouched.
    """
    check_weights_only(dict(checkpoint))
    if is_url(folder):  # an fsspec URL: see classy_hooks.model.checkpoint_urls for what it guarantees
        from classy_hooks.model.checkpoint_urls import write_url_checkpoint

        return write_url_checkpoint(folder, dict(checkpoint), phase_file, LATEST_CHECKPOINT)
    tmp: str | None = None
    tmp_phase: str | None = None
    try:
        os.makedirs(folder, exist_ok=True)
        latest = os.path.join(folder, LATEST_CHECKPOINT)
        # Not mkstemp: its files are private (0600); checkpoints get the usual umask-governed mode.
        tmp = os.path.join(folder, f".{LATEST_CHECKPOINT}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            write_torch_file(fd, dict(checkpoint))
        finally:
            os.close(fd)
        if phase_file is not None:
            tmp_phase = os.path.join(folder, f".{phase_file}.{os.path.basename(tmp)[1:]}")
            try:
                os.link(tmp, tmp_phase)
            except OSError:
                _copy_synced(tmp, tmp_phase)
            os.replace(tmp_phase, os.path.join(folder, phase_file))
            tmp_phase = None
        os.replace(tmp, latest)
        tmp = None
        fsync_dir(folder)
    except BaseException as exc:
        for leftover in (tmp, tmp_phase):
            if leftover is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
        if isinstance(exc, OSError):
            raise CheckpointWriteError.from_os_error(folder, exc, checkpoint) from exc
        raise
    return latest


def _copy_synced(src: str, dst: str) -> None:
    with open(src, "rb") as reader, open(dst, "wb") as writer:
        while chunk := reader.read(1 << 22):
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())


def remove_stale_temp_files(folder: str) -> list[str]:
    """Delete temporary files left in `folder` by a save that was killed; return their names."""
    if is_url(folder):
        from classy_hooks.model.checkpoint_urls import remove_stale_url_temp_files

        return remove_stale_url_temp_files(folder, _TMP_RE.match)
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if _TMP_RE.match(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                removed.append(entry.name)
    return removed


def list_checkpoints(folder: str) -> list[str]:
    """Checkpoint files in `folder`, newest first: `checkpoint.torch`, then the phase-end, step and
    preemption files in training order (`checkpoint_order`), latest first."""
    if is_url(folder):
        orders = ((checkpoint_order(name), name) for name in list_folder(folder) if name.endswith(".torch"))
        by_order = sorted(((order, name) for order, name in orders if order is not None), reverse=True)
        url_latest = join(folder, LATEST_CHECKPOINT)
        return ([url_latest] if file_exists(url_latest) else []) + [join(folder, name) for _, name in by_order]
    named = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            order = checkpoint_order(entry.name) if entry.name.endswith(".torch") else None
            if order is not None and entry.is_file():
                named.append((order, entry.path))
    files = [path for _, path in sorted(named, reverse=True)]
    latest = os.path.join(folder, LATEST_CHECKPOINT)
    return ([latest] if os.path.isfile(latest) else []) + files


def _read(path: str, map_location: Any) -> dict[str, Any]:
    """Verify `path`'s content checksum, then load it with `torch.load(weights_only=True)`, memory-mapped.

    Memory-mapped (`mmap=True`, copy-on-write): tensors are read from the page cache when first used
    instead of being copied into fresh memory up front, which is what makes a resume cheap; the file is
    never written through the mapping. Its disk space stays in use while loaded tensors still map it.
    A URL is downloaded to a local temporary file first (`classy_hooks.model.checkpoint_urls`).
    """
    if is_url(path):
        from classy_hooks.model.checkpoint_urls import read_url_checkpoint

        return _checked(read_url_checkpoint(path, map_location), path)
    if not os.path.exists(path):
        raise CheckpointError(
            f"load_checkpoint: checkpoint {path} does not exist. "
            "Pass a checkpoint file or a folder holding checkpoint.torch."
        )
    try:
        verified = verify_torch_file(path)
    except ChecksumMismatch as exc:
        raise CheckpointError(
            f"load_checkpoint: checkpoint {path} is truncated or corrupt: {exc}.{_offer_previous(path)}"
        ) from exc
    if not verified:
        logger.warning(
            "Checkpoint %s has no content checksum (written by Classy Vision, plain torch.save or classy-hooks-model "
            "before checksums), so damage to it cannot be detected; loading it unverified.",
            path,
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=_is_zip(path))
    except Exception as exc:  # truncated zip, bad pickle, unsupported type: all mean "unusable file"
        raise CheckpointError(
            f"load_checkpoint: checkpoint {path} is truncated or corrupt and cannot be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else exc!r}).{_offer_previous(path)}"
        ) from exc
    return _checked(checkpoint, path)


def _is_zip(path: str) -> bool:
    """True for torch's zip format (every torch >= 1.6 save), which `torch.load(mmap=True)` needs."""
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def _offer_previous(path: str) -> str:
    """The sentence naming the newest other checkpoint in `path`'s folder (not a hard link of `path`), if any."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        damaged = os.stat(path)
    except OSError:
        damaged = None
    for candidate in list_checkpoints(folder):
        try:
            other = os.stat(candidate)
        except OSError:
            continue
        if damaged is None or (other.st_ino, other.st_dev) != (damaged.st_ino, damaged.st_dev):
            return (
                f" The previous checkpoint is {candidate}: load it by name, or use load_checkpoint(..., "
                "fallback=True) (resume_task too) to load the newest valid checkpoint of the folder."
            )
    return f" No other checkpoint is in {folder}: restore the file from a copy, or start the run without resuming."


def _checked(checkpoint: Any, path: str) -> dict[str, Any]:
    """`checkpoint` if it has CheckpointHook's layout and a known format version (model keys made plain)."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("classy_state_dict"), dict):
        raise CheckpointError(
            f"load_checkpoint: checkpoint {path} holds no 'classy_state_dict'; it was not written by CheckpointHook. "
            "Pass a checkpoint.torch or model_phase-N_end.torch file."
        )
    version = checkpoint.get(FORMAT_VERSION_KEY, 0)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"load_checkpoint: checkpoint {path} has format version {version!r}, newer than this classy-hooks-model "
            f"understands ({CHECKPOINT_FORMAT_VERSION}). Upgrade classy-hooks-model."
        )
    checkpoint["classy_state_dict"] = with_plain_model_keys(checkpoint["classy_state_dict"])
    return checkpoint


def load_checkpoint(
    path_or_folder: str | os.PathLike[str], *, fallback: bool = False, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by `CheckpointHook`, with `torch.load(weights_only=True)`.

    `path_or_folder` is a checkpoint file, or a folder, meaning `<folder>/checkpoint.torch`.
    A missing, truncated or corrupt file raises `CheckpointError` naming it. With `fallback=True`
    the newest valid checkpoint of the folder is loaded instead (`checkpoint.torch`, then
    `model_phase-N_end.torch` from the highest N down), with a warning naming the files skipped.
    Tensors are mapped to `map_location` (the CPU by default). Checkpoints of Classy Vision
    itself (no format version) load too, as long as they hold only weights-only types.

    Before anything is unpickled the file's content checksum is verified (see
    `classy_hooks.model.checkpoint_file`): a changed byte anywhere raises `CheckpointError` naming the
    file, what failed and the previous checkpoint. Files without a checksum (Classy Vision's, earlier
    versions') load with a warning that they cannot be verified. The file is memory-mapped (see `_read`).

    A sharded checkpoint (a `model_phase-N_end.dcp` folder, or a folder whose `checkpoint.latest`
    names one) is read whole in this process: DTensor shards come back as full CPU tensors and the
    optimizer state keyed by parameter name (see `convert_checkpoint` for a resumable single file).
    """
    path = local_path(os.fspath(path_or_folder))  # file:// is the local path
    sharded = find_sharded_checkpoint(path, fallback=fallback)
    if sharded is not None:
        from classy_hooks.model.sharded_checkpoint import read_sharded_checkpoint

        def read(candidate: str) -> dict[str, Any]:
            return _checked(read_sharded_checkpoint(candidate), candidate)

        return _sharded_with_fallback(read, sharded, fallback)
    if is_url(path):  # a file if one is there, else a folder
        folder, path = (path.rsplit("/", 1)[0], path) if file_exists(path) else (path, join(path, LATEST_CHECKPOINT))
    elif os.path.isdir(path):
        folder, path = path, os.path.join(path, LATEST_CHECKPOINT)
    else:
        folder = os.path.dirname(os.path.abspath(path))
    return _with_fallback(lambda candidate: _read(candidate, map_location), path, folder, list_checkpoints, fallback)


def _with_fallback(
    load: Callable[[str], dict[str, Any]],
    path: str,
    folder: str,
    candidates: Callable[[str], list[str]],
    fallback: bool,
) -> dict[str, Any]:
    """`load(path)`; with `fallback`, on a `CheckpointError` the first of `candidates(folder)` (newest first) that
    loads, with a warning naming what was skipped. Sharded verdicts are the same on every rank: all fall back alike."""
    try:
        return load(path)
    except CheckpointError as first_error:
        if not fallback:
            raise
        for candidate in candidates(folder):
            if os.path.abspath(candidate) == os.path.abspath(path):
                continue
            try:
                checkpoint = load(candidate)
            except CheckpointError as exc:
                logger.warning("Skipping unusable checkpoint: %s", exc)
                continue
            logger.warning("%s Falling back to %s.", first_error, candidate)
            return checkpoint
        raise CheckpointError(f"{first_error} No valid checkpoint to fall back to in {folder}.") from first_error


def find_sharded_checkpoint(path_or_folder: str | os.PathLike[str], *, fallback: bool = False) -> str | None:
    """The sharded checkpoint folder `path_or_folder` means, or None if it means a single file.

    A `.dcp` folder itself; or the folder `checkpoint.latest` names inside a checkpoint folder; with
    `fallback`, also the newest complete `.dcp` folder when the pointer is missing or its target incomplete.
    """
    from classy_hooks.model.sharded_checkpoint import (
        is_sharded_checkpoint,
        latest_sharded_checkpoint,
        list_sharded_checkpoints,
    )

    path = os.fspath(path_or_folder)
    if not os.path.isdir(path):
        return None
    if is_sharded_checkpoint(path):
        return path
    latest = latest_sharded_checkpoint(path)
    if latest is not None and is_sharded_checkpoint(latest):
        return latest
    if latest is not None and not fallback:
        raise CheckpointError(
            f"load_checkpoint: {path}/checkpoint.latest names {latest}, which is not a complete sharded "
            "checkpoint. Use fallback=True to load the newest complete one instead."
        )
    if (latest is not None or not os.path.isfile(os.path.join(path, LATEST_CHECKPOINT))) and fallback:
        candidates = list_sharded_checkpoints(path)
        if candidates:
            logger.warning("Falling back to sharded checkpoint %s.", candidates[0])
            return candidates[0]
    return None


def _sharded_with_fallback(load: Callable[[str], dict[str, Any]], path: str, fallback: bool) -> dict[str, Any]:
    """`_with_fallback` over the sharded checkpoints beside `path` (a damaged shard falls back to an older one)."""
    from classy_hooks.model.sharded_checkpoint import list_sharded_checkpoints

    return _with_fallback(load, path, os.path.dirname(os.path.abspath(path)), list_sharded_checkpoints, fallback)


def resume_task(task: Task, path_or_folder: str | os.PathLike[str], *, fallback: bool = False) -> dict[str, Any]:
    """Load a checkpoint (see `load_checkpoint`) into `task` and return the checkpoint dict.

    Calls `task.set_classy_state(checkpoint["classy_state_dict"])`, which restores the model,
    optimizer, counters and every hook's state (EMA weights, checkpoint period counter, ...).
    Call it after building the task and its hooks and before training (before `on_start`). Under
    torch.distributed every rank calls it with a path it can read.

    A sharded checkpoint (see `load_checkpoint`) is loaded in place into the (sharded) task on
    every rank with `torch.distributed.checkpoint`, which reshards as needed; every rank must call it.
    """
    sharded = find_sharded_checkpoint(path_or_folder, fallback=fallback)
    if sharded is not None:
        from classy_hooks.model.sharded_checkpoint import load_sharded_into_task

        return _sharded_with_fallback(lambda candidate: load_sharded_into_task(task, candidate), sharded, fallback)
    checkpoint = load_checkpoint(path_or_folder, fallback=fallback)
    task.set_classy_state(checkpoint["classy_state_dict"])
    return checkpoint
