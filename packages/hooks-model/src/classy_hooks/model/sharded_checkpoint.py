"""Sharded checkpoints with `torch.distributed.checkpoint` (DCP): every rank writes its own shard.

Layout, inside a checkpoint folder:

- `model_phase-<N>_end.dcp/`: one DCP checkpoint, `__<rank>_0.distcp` per rank plus `.metadata`;
- `checkpoint.latest`: a one-line text file naming the newest complete `.dcp` folder;
- `.checksums-<rank>.json` in each `.dcp` folder: the size and content checksum (checksum v1 of
  `classy_hooks.model.checkpoint_file`) of the files that rank wrote (rank 0: also `.metadata`).

Each rank checksums its own files once DCP has written them (from the page cache, at memory speed);
the folder is committed only after every rank has written its list. On load every file is verified
before DCP reads it, each rank verifying its share (file i on rank i mod world size), so a changed
byte in any shard is a `CheckpointError` naming the file, on every rank alike.

A save goes to `.model_phase-<N>_end.dcp.tmp/`; once DCP has written every rank's file and the
metadata (the metadata is written last, after all ranks reported their writes), the primary rank
renames the folder to its final name and then replaces `checkpoint.latest` atomically. A crash at
any instant leaves `checkpoint.latest` naming a complete checkpoint (or absent).

The checkpoint holds the same dict as a single-file one (`make_checkpoint`), except that
`classy_state_dict["base_model"]` and `["optimizer"]` come from DCP's `get_state_dict` (the
optimizer state is keyed by parameter name, not index) and DTensors stay sharded.

Loading is restricted: `.metadata` is unpickled with an allowlist of DCP's own metadata classes
(`SafeFileSystemReader`) and non-tensor values with `torch.load(weights_only=True)`
(`SafeLoadPlanner`), instead of DCP's default plain `pickle.load` / `weights_only=False`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import ReadItem
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import AsyncSaveResponse, async_save, save

from classy_hooks.core import all_gather_objects, barrier, get_rank, get_world_size, is_primary, plain_state_dict
from classy_hooks.core.files import atomic_write, fsync_dir
from classy_hooks.core.task import DATA_POSITION_KEY, Task
from classy_hooks.model.checkpoint_file import file_checksum
from classy_hooks.model.checkpoint_io import CheckpointError, checkpoint_order, make_checkpoint, step_checkpoint_name

logger = logging.getLogger(__name__)

#: Pointer file naming the newest complete sharded checkpoint folder of a checkpoint folder.
LATEST_SHARDED = "checkpoint.latest"
SHARDED_CHECKPOINT = "model_phase-{phase_idx}_end.dcp"
METADATA_FILE = ".metadata"
#: Key of the list of paths to empty dicts, which DCP does not store (it stores leaves only).
EMPTY_DICTS_KEY = "sharded_empty_dicts"
#: Key of a mid-phase checkpoint's data position, stored whole as `torch.save` bytes: DCP loads only the
#: keys its template has, and the position's layout (an entry per rank) is not known before it is read.
PACKED_DATA_POSITION_KEY = "sharded_data_position"
_SHARDED_RE = re.compile(r"^model_phase-\d+_(end|batch-\d+(_preempted)?)\.dcp$")
_SHARDED_TMP_RE = re.compile(
    r"^\.model_phase-\d+_(end|batch-\d+(_preempted)?)\.dcp(\.old)?\.tmp$|^\.checkpoint\.latest\..+\.tmp$"
)


CHECKSUMS_FILE = ".checksums-{rank}.json"
_CHECKSUMS_RE = re.compile(r"^\.checksums-(\d+)\.json$")


class UnsafeCheckpointError(CheckpointError):
    """A sharded checkpoint's metadata asks to unpickle something other than DCP's metadata types."""


# --- safe reading --------------------------------------------------------------------------------

_ALLOWED_METADATA_GLOBALS = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a layout by name, e.g. torch.strided
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata only: its dataclasses, torch.Size, dtypes, layouts and paths."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) not in _ALLOWED_METADATA_GLOBALS:
            raise UnsafeCheckpointError(
                f"sharded checkpoint metadata wants to load {module}.{name}, which is not a "
                "torch.distributed.checkpoint metadata type; refusing to unpickle it. Only load checkpoints "
                "written by CheckpointHook."
            )
        return super().find_class(module, name)


class SafeFileSystemReader(FileSystemReader):
    """DCP's file reader, with `.metadata` unpickled through an allowlist instead of a plain `pickle.load`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        with open(os.path.join(os.fspath(self.path), METADATA_FILE), "rb") as handle:
            metadata = _MetadataUnpickler(handle).load()
        if not isinstance(metadata, Metadata):
            raise UnsafeCheckpointError(f"{self.path}/{METADATA_FILE} holds a {type(metadata).__name__}, not Metadata")
        storage_meta = getattr(metadata, "storage_meta", None)
        if storage_meta is not None:
            storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's load planner, with non-tensor values read by `torch.load(weights_only=True)`."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        loaded = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            _set_path(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def _set_path(root: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    """Set `root[p0][p1]...= value`, creating dicts (str keys) and lists (int keys) on the way, as DCP does."""
    node: Any = root
    for key, next_key in zip(path[:-1], path[1:]):
        if isinstance(node, list):
            while len(node) <= key:
                node.append(None)
        child = node[key] if (isinstance(node, list) or key in node) else None
        if child is None:
            child = [] if isinstance(next_key, int) else {}
            node[key] = child
        node = child
    if isinstance(node, list):
        while len(node) <= path[-1]:
            node.append(None)
    node[path[-1]] = value


# --- layout ---------------------------------------------------------------------------------------


def sharded_checkpoint_name(phase_idx: int, batches: int | None = None, *, preempted: bool = False) -> str:
    """Folder name of the sharded checkpoint written at the end of phase `phase_idx`, or inside it after
    `batches` batches (a step or, with `preempted`, a preemption checkpoint)."""
    if batches is None:
        return SHARDED_CHECKPOINT.format(phase_idx=phase_idx)
    return step_checkpoint_name(phase_idx, batches, preempted=preempted)[: -len(".torch")] + ".dcp"


def is_sharded_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True for a complete DCP checkpoint folder (it holds `.metadata`)."""
    return os.path.isfile(os.path.join(os.fspath(path), METADATA_FILE))


def latest_sharded_checkpoint(folder: str | os.PathLike[str]) -> str | None:
    """The sharded checkpoint `checkpoint.latest` of `folder` names, or None if there is no pointer."""
    pointer = os.path.join(os.fspath(folder), LATEST_SHARDED)
    try:
        with open(pointer, encoding="utf-8") as handle:
            name = handle.read().strip()
    except FileNotFoundError:
        return None
    if not _SHARDED_RE.match(name):
        raise CheckpointError(
            f"load_checkpoint: {pointer} names {name!r}, which is not a model_phase-N_end.dcp (or _batch-B) "
            "folder. Fix the pointer file to name a sharded checkpoint folder beside it, or delete it."
        )
    return os.path.join(os.fspath(folder), name)


def list_sharded_checkpoints(folder: str | os.PathLike[str]) -> list[str]:
    """Complete sharded checkpoint folders in `folder` (phase-end, step, preemption), latest in training order first."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            order = checkpoint_order(entry.name) if _SHARDED_RE.match(entry.name) else None
            if order is not None and is_sharded_checkpoint(entry.path):
                found.append((order, entry.path))
    return [path for _, path in sorted(found, reverse=True)]


def remove_stale_sharded_temp(folder: str) -> list[str]:
    """Delete temporary folders and pointer files a killed sharded save left in `folder`; return their names."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if _SHARDED_TMP_RE.match(entry.name):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                removed.append(entry.name)
    return removed


# --- state ----------------------------------------------------------------------------------------


def _model_and_optimizer(task: Task) -> tuple[torch.nn.Module | None, torch.optim.Optimizer | None]:
    model = getattr(task, "base_model", None)
    optimizer = getattr(task, "optimizer", None)
    return (
        model if isinstance(model, torch.nn.Module) else None,
        optimizer if isinstance(optimizer, torch.optim.Optimizer) else None,
    )


def sharded_task_state(task: Task) -> dict[str, Any]:
    """`task.get_classy_state()` with the model and optimizer state from DCP's `get_state_dict`.

    The model state has the plain module's keys; the optimizer state is keyed by parameter name
    (so it reshards); both keep DTensors sharded. Tasks without `base_model` / `optimizer` keep
    their own entries.
    """
    state = dict(task.get_classy_state())
    model, optimizer = _model_and_optimizer(task)
    if model is not None and "base_model" in state:
        if optimizer is not None and state.get("optimizer") is not None:
            state["base_model"], state["optimizer"] = get_state_dict(model, optimizer)
        else:
            state["base_model"] = get_state_dict(model, [])[0]
    if isinstance(state.get("base_model"), Mapping):
        state["base_model"] = plain_state_dict(state["base_model"])
    return state


def empty_dict_paths(value: Any, path: tuple[Any, ...] = ()) -> list[list[Any]]:
    """Paths (keys as DCP writes them: str for dict keys, int for list indices) of the empty dicts in `value`."""
    if isinstance(value, Mapping):
        if not value:
            return [list(path)]
        return [p for key, item in value.items() for p in empty_dict_paths(item, (*path, str(key)))]
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in empty_dict_paths(item, (*path, i))]
    return []


def pack_data_position(checkpoint: dict[str, Any], position: Any) -> dict[str, Any]:
    """`checkpoint` with `task.get_data_position()`'s result added as one opaque value (see `unpack_data_position`)."""
    buffer = io.BytesIO()
    torch.save(position, buffer)
    return {**checkpoint, PACKED_DATA_POSITION_KEY: buffer.getvalue()}


def unpack_data_position(checkpoint: dict[str, Any]) -> None:
    """Move a packed data position into `classy_state_dict[DATA_POSITION_KEY]`, as a single-file checkpoint has it."""
    packed = checkpoint.pop(PACKED_DATA_POSITION_KEY, None)
    if isinstance(packed, bytes):
        checkpoint["classy_state_dict"][DATA_POSITION_KEY] = torch.load(io.BytesIO(packed), weights_only=True)


# --- saving ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns on every save/load without a process group; one process is a supported, deliberate use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _temp_path(folder: str, name: str) -> str:
    return os.path.join(folder, f".{name}.tmp")


def start_sharded_save(
    folder: str,
    checkpoint: dict[str, Any],
    name: str,
    *,
    asynchronous: bool = False,
    process_group: Any = None,
    stager: Any = None,
) -> Callable[[], str]:
    """Write `checkpoint` with DCP on every rank into `<folder>/.<name>.tmp`; return the function that finishes it.

    Synchronous: the shards and the metadata are written before this returns. `asynchronous`:
    `dcp.async_save` copies the state to CPU memory here and writes it in a background thread
    (using `process_group`, which should be a group of its own so that its collectives never
    interleave with the training loop's). `stager` (from `make_stager`, kept between saves) reuses
    the CPU copies of the previous save instead of allocating and page-faulting fresh memory each
    time; the previous save must be finished. The returned function waits for the write, then on
    the primary rank commits the folder (`commit_sharded_checkpoint`); it returns the final path.
    """
    tmp = _temp_path(folder, name)
    writer = FileSystemWriter(tmp, sync_files=True)
    empty = empty_dict_paths(checkpoint)  # e.g. a hook's empty state: recreated by read_sharded_checkpoint
    checkpoint = {**checkpoint, EMPTY_DICTS_KEY: empty} if empty else checkpoint
    if asynchronous:
        with _quiet_single_process():
            response = async_save(checkpoint, storage_writer=writer, process_group=process_group, async_stager=stager)
        future = response.upload_completion if isinstance(response, AsyncSaveResponse) else response
        wait: Callable[[], Any] = future.result
    else:
        with _quiet_single_process():
            save(checkpoint, storage_writer=writer, process_group=process_group)

        def wait() -> None:
            return None

    def finish() -> str:
        wait()  # on the coordinator, metadata is written only after every rank reported its shard
        _write_checksums_on_every_rank(tmp, process_group)
        final = os.path.join(folder, name)
        if is_primary():
            commit_sharded_checkpoint(folder, name)
        return final

    return finish


def _write_checksums_on_every_rank(tmp: str, process_group: Any) -> None:
    """Every rank lists its files' checksums in `tmp`; returns once all ranks did, raises on all if one failed.

    The agreement runs on `process_group` (a background save's own group), never on the training loop's.
    """
    error: BaseException | None = None
    try:
        write_rank_checksums(tmp, get_rank(), get_world_size())
    except Exception as exc:
        error = exc
    failures: list[Any] = [repr(error) if error else None]
    if torch.distributed.is_available() and torch.distributed.is_initialized() and get_world_size() > 1:
        failures = [None] * get_world_size()
        torch.distributed.all_gather_object(failures, repr(error) if error else None, group=process_group)
    if error is not None:
        raise error
    failed = [f"rank {rank}: {text}" for rank, text in enumerate(failures) if text]
    if failed:
        raise CheckpointError(f"sharded checkpoint {tmp}: checksumming its files failed on {'; '.join(failed)}")


def write_rank_checksums(folder: str, rank: int, world_size: int) -> None:
    """Write `.checksums-<rank>.json`: size and checksum of each file this rank wrote (rank 0: `.metadata` too)."""
    names = sorted(n for n in os.listdir(folder) if n.startswith(f"__{rank}_") and n.endswith(".distcp"))
    if rank == 0:
        names.append(METADATA_FILE)
    files = {}
    for name in names:
        size, checksum = file_checksum(os.path.join(folder, name))
        files[name] = {"size": size, "checksum": checksum}
    listing = {"format": 1, "rank": rank, "world_size": world_size, "files": files}
    with atomic_write(os.path.join(folder, CHECKSUMS_FILE.format(rank=rank)), "w") as handle:
        json.dump(listing, handle, sort_keys=True)


def make_stager() -> Any:
    """A DCP stager that copies to plain CPU memory on the calling thread and caches it for the next save.

    Close it (`.close()`) after the last save.
    """
    from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

    return DefaultStager(
        StagingOptions(
            use_pinned_memory=False, use_shared_memory=False, use_async_staging=False, use_non_blocking_copy=False
        )
    )


def commit_sharded_checkpoint(folder: str, name: str) -> str:
    """Primary rank: rename `.<name>.tmp` to `<name>` and point `checkpoint.latest` at it (atomically)."""
    tmp, final = _temp_path(folder, name), os.path.join(folder, name)
    if not is_sharded_checkpoint(tmp):
        raise CheckpointError(f"sharded checkpoint {tmp} has no {METADATA_FILE}: the save did not complete")
    fsync_dir(tmp)
    if os.path.exists(final):  # an older save of the same phase (a run resumed from an earlier checkpoint)
        old = os.path.join(folder, f".{name}.old.tmp")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(folder)
    with atomic_write(os.path.join(folder, LATEST_SHARDED), "w") as handle:
        handle.write(name + "\n")
    return final


# --- loading --------------------------------------------------------------------------------------


def read_sharded_metadata(path: str | os.PathLike[str]) -> Metadata:
    """The metadata of a sharded checkpoint folder, read safely; `CheckpointError` if it is unusable."""
    try:
        return SafeFileSystemReader(os.fspath(path)).read_metadata()
    except CheckpointError:
        raise
    except Exception as exc:  # missing, truncated or not a pickle: all mean "not a complete checkpoint"
        raise CheckpointError(
            f"load_checkpoint: sharded checkpoint {os.fspath(path)} has no readable {METADATA_FILE} "
            f"({type(exc).__name__}: {exc}). Pass a complete model_phase-N_end.dcp folder."
        ) from exc


def _load(state: dict[str, Any], path: str, *, single_process: bool) -> None:
    """`dcp.load` with the safe reader and planner; DCP's errors become a `CheckpointError` naming the folder."""
    # single process: a flat template of full tensors; its values are replaced in this very dict
    planner = SafeLoadPlanner(flatten_state_dict=False, flatten_sharded_tensors=False) if single_process else (
        SafeLoadPlanner()
    )
    try:
        with _quiet_single_process():
            dcp_load(state, storage_reader=SafeFileSystemReader(path), planner=planner, no_dist=single_process)
    except (Exception, CheckpointException) as exc:  # DCP's CheckpointException is a BaseException
        cause: Any = exc
        if isinstance(exc, CheckpointException) and exc.failures:  # {rank: (exception, traceback)}
            first = next(iter(exc.failures.values()))
            cause = first[0] if isinstance(first, tuple) else first
        text = " ".join(str(cause).split())[:300] or repr(cause)
        raise CheckpointError(
            f"load_checkpoint: sharded checkpoint {path} cannot be loaded ({type(cause).__name__}: {text}). "
            "It must be a complete checkpoint of the same model, optimizer and hooks, written by CheckpointHook."
        ) from exc


def _checksum_listing(path: str) -> dict[str, dict[str, Any]]:
    """Every file of the checkpoint `path` with its size and checksum, from its ranks' lists ({} if it has none)."""
    lists = {}
    for entry in os.scandir(path):
        match = _CHECKSUMS_RE.match(entry.name)
        if match:
            try:
                with open(entry.path, encoding="utf-8") as handle:
                    lists[int(match.group(1))] = json.load(handle)
            except (OSError, ValueError) as exc:
                raise CheckpointError(
                    f"load_checkpoint: sharded checkpoint {path}: its checksum list {entry.name} is unreadable "
                    f"({type(exc).__name__}: {exc}). The checkpoint is damaged; {_use_previous(path)}"
                ) from exc
    if not lists:
        return {}  # written before classy-hooks-model checksummed shards: loaded unverified (logged)
    world_size = int(lists[min(lists)].get("world_size", 0))
    missing = sorted(set(range(world_size)) - set(lists))
    if missing:
        raise CheckpointError(
            f"load_checkpoint: sharded checkpoint {path} was written by {world_size} ranks but the checksum lists of "
            f"rank(s) {missing} are missing. The checkpoint is damaged; {_use_previous(path)}"
        )
    return {name: item for listing in lists.values() for name, item in listing["files"].items()}


def _use_previous(path: str) -> str:
    """What to do about the damaged checkpoint `path`: load the previous complete one of its folder."""
    folder = os.path.dirname(os.path.abspath(path))
    older = [p for p in list_sharded_checkpoints(folder) if os.path.abspath(p) != os.path.abspath(path)]
    if older:
        return f"resume from the previous one, {older[0]} (load_checkpoint/resume_task with fallback=True does)."
    return "there is no other complete sharded checkpoint in its folder to resume from."


def verify_sharded_checkpoint(path: str, *, share: tuple[int, int] = (0, 1)) -> bool:
    """Check the sizes and checksums of `path`'s files: this process's `share` (rank, world size) of them.

    True if verified, False for a checkpoint without checksum lists. A mismatch raises `CheckpointError`
    naming the file. Under torch.distributed call it on every rank with `share=(rank, world size)`: the
    verdicts are gathered, so every rank raises alike.
    """
    listing = _checksum_listing(path)
    problems = []
    for name in sorted(listing)[share[0] :: share[1]]:
        expected = listing[name]
        try:
            size, checksum = file_checksum(os.path.join(path, name))
        except OSError as exc:
            problems.append(f"{name} cannot be read ({type(exc).__name__}: {exc})")
            continue
        if size != expected["size"]:
            problems.append(f"{name} has {size} bytes, {expected['size']} were written (truncated or replaced)")
        elif checksum != expected["checksum"]:
            problems.append(
                f"{name}'s content checksum does not match (stored {expected['checksum']}, computed {checksum}): "
                "some bytes changed after it was written (disk, transfer or copy damage)"
            )
    if share[1] > 1:
        problems = [problem for part in all_gather_objects(problems) for problem in part]
    if problems:
        raise CheckpointError(
            f"load_checkpoint: sharded checkpoint {path} is damaged: {'; '.join(problems)}. {_use_previous(path)}"
        )
    return bool(listing)


def read_sharded_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a whole sharded checkpoint in one process: DTensor shards are joined into full plain CPU tensors.

    No process group is needed (nor used); the result is the nested dict that was saved.
    """
    path = os.fspath(path)
    metadata = read_sharded_metadata(path)
    _verified_or_logged(path, (0, 1))
    flat: dict[str, Any] = {}
    for fqn, item in metadata.state_dict_metadata.items():
        if isinstance(item, TensorStorageMetadata):
            flat[fqn] = torch.empty(item.size, dtype=item.properties.dtype)
        elif isinstance(item, BytesStorageMetadata):
            flat[fqn] = None  # replaced by the loaded value
    _load(flat, path, single_process=True)
    mappings = metadata.planner_data or {}
    nested: dict[str, Any] = {}
    for fqn, value in flat.items():
        _set_path(nested, tuple(mappings.get(fqn, (fqn,))), value)
    for empty in nested.pop(EMPTY_DICTS_KEY, None) or []:
        if empty:
            _set_path(nested, tuple(empty), {})
    unpack_data_position(nested)
    return nested


def load_sharded_into_task(task: Task, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Restore `task` (model, optimizer, hooks, counters) from a sharded checkpoint, in place, on every rank.

    Hooks with a `prepare_to_load(task)` method (the EMA hook) are asked first to give their
    state the shape (and sharding) the load fills in. Then the template, `sharded_task_state(task)`,
    is loaded with DCP (which reshards), the model and optimizer are set with DCP's
    `set_state_dict`, and everything goes through `task.set_classy_state`. Returns the checkpoint.
    """
    path = os.fspath(path)
    metadata = read_sharded_metadata(path)  # a clear error for a missing or unsafe checkpoint before any collective
    _verified_or_logged(path, (get_rank(), get_world_size()))
    for hook in getattr(task, "hooks", ()):
        prepare = getattr(hook, "prepare_to_load", None)
        if callable(prepare):
            prepare(task)
    state = sharded_task_state(task)
    checkpoint = make_checkpoint(state, None)
    if PACKED_DATA_POSITION_KEY in metadata.state_dict_metadata:  # a mid-phase checkpoint
        checkpoint[PACKED_DATA_POSITION_KEY] = b""
    _load(checkpoint, path, single_process=False)
    unpack_data_position(checkpoint)
    state = checkpoint["classy_state_dict"]
    model, optimizer = _model_and_optimizer(task)
    if model is not None and "base_model" in state:
        if optimizer is not None and state.get("optimizer") is not None:
            set_state_dict(model, optimizer, model_state_dict=state["base_model"], optim_state_dict=state["optimizer"])
            state["optimizer"] = optimizer.state_dict()
        else:
            set_state_dict(model, [], model_state_dict=state["base_model"], optim_state_dict={})
        state["base_model"] = model.state_dict()
    task.set_classy_state(state)
    barrier()
    logger.info("Rank %d restored the task from sharded checkpoint %s", get_rank(), path)
    return checkpoint


def _verified_or_logged(path: str, share: tuple[int, int]) -> None:
    if not verify_sharded_checkpoint(path, share=share) and is_primary():
        logger.warning("Sharded checkpoint %s has no checksum lists (an older writer): it is loaded unverified.", path)


def optimizer_state_by_index(state: Mapping[str, Any]) -> dict[str, Any]:
    """Turn an optimizer state keyed by parameter name (DCP's) into `Optimizer.state_dict()`'s index keys.

    Indices follow the order of the names in `param_groups`, as `torch.optim.Optimizer` numbers them.
    """
    index: dict[Any, int] = {}
    groups = []
    for group in state["param_groups"]:
        names = list(group["params"])
        groups.append({**group, "params": [index.setdefault(n, len(index)) for n in names]})
    return {"state": {index[name]: slots for name, slots in state["state"].items()}, "param_groups": groups}

