"""Single-file checkpoints in a folder given as an fsspec URL (`s3://bucket/run`, `memory://run`, ...).

The same names and bytes as on a local disk (`checkpoint.torch`, `model_phase-N_end.torch`, ..., with the content
checksum of `classy_hooks.model.checkpoint_file`); `checkpoint_io` hands URLs to this module.

Writing: the checkpoint is saved into a local temporary file (in `TMPDIR`), then published whole: first the
per-phase (or step) file, then `checkpoint.torch` as a copy made by the store, so the pointer comes last and names a
file that is already complete. What readers can see is `classy_hooks.core.url_files`'s guarantee: on object stores
(S3, GCS, Azure) each file is one object write (S3: a single PUT or a completed multipart upload, atomic for
readers), with no rename and no fsync: a file is durable once its upload returned; a save killed between the two
writes leaves the new phase file and the previous `checkpoint.torch`, both complete. On filesystems that rename
(memory, sftp, ...), each file is uploaded under a temporary name, then moved onto its name.

Reading: the file is downloaded into a local temporary file, its checksum verified, and it is loaded with
`torch.load(weights_only=True)` memory-mapped, as a local checkpoint is; the temporary file is removed at once.

Sharded (DCP) checkpoints are not written to URLs: their atomic publish renames a folder, which object stores
cannot do. `CheckpointHook.on_start` refuses that combination.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Any

import torch

from classy_hooks.core.files import file_exists, list_folder, remove_file
from classy_hooks.core.url_files import copy_url, join, open_url, upload_file
from classy_hooks.model.checkpoint_file import ChecksumMismatch, verify_torch_file, write_torch_file

logger = logging.getLogger(__name__)

_HOOK, _ARG = "CheckpointHook", "checkpoint_folder"


def _write_error(folder: str, exc: BaseException) -> Exception:
    from classy_hooks.model.checkpoint_io import CheckpointWriteError

    return CheckpointWriteError(
        f"cannot write a checkpoint to {folder}: the upload failed ({type(exc).__name__}: {exc}). The previous "
        "checkpoint.torch is intact (it is replaced last). Check the store and its credentials, or set "
        "checkpoint_folder to another folder.",
        folder,
        0,
        None,
        getattr(exc, "errno", None),
    )


def write_url_checkpoint(folder: str, checkpoint: dict[str, Any], phase_file: str | None, latest_name: str) -> str:
    """Save `checkpoint` as `<folder>/<phase_file>` (if given), then as `<folder>/<latest_name>`; return the latter."""
    latest = join(folder, latest_name)
    fd, local = tempfile.mkstemp(prefix=".classy-hooks-checkpoint.", suffix=".tmp")
    try:
        try:
            write_torch_file(fd, checkpoint)
        finally:
            os.close(fd)
        try:
            if phase_file is None:
                upload_file(local, latest, _HOOK, _ARG)
            else:
                upload_file(local, join(folder, phase_file), _HOOK, _ARG)
                copy_url(join(folder, phase_file), latest, _HOOK, _ARG)
        except Exception as exc:  # each store raises its own types (botocore's, aiohttp's, OSError)
            raise _write_error(folder, exc) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local)
    return latest


def remove_stale_url_temp_files(folder: str, is_temp: Any) -> list[str]:
    """Delete the temporary files (names `is_temp` matches) a killed upload left in `folder`; return their names."""
    removed = [name for name in list_folder(folder) if is_temp(name)]
    for name in removed:
        remove_file(join(folder, name))
    return removed


def read_url_checkpoint(url: str, map_location: Any) -> Any:
    """Download, verify and load the checkpoint file at `url` (raw, before the layout check)."""
    from classy_hooks.model.checkpoint_io import CheckpointError

    if not file_exists(url):
        raise CheckpointError(
            f"load_checkpoint: checkpoint {url} does not exist. Pass a checkpoint file or a folder holding "
            "checkpoint.torch."
        )
    fd, local = tempfile.mkstemp(prefix=".classy-hooks-download.", suffix=".torch")
    try:
        with os.fdopen(fd, "wb") as handle, open_url(url) as remote:
            while chunk := remote.read(1 << 24):
                handle.write(chunk)
        try:
            verified = verify_torch_file(local)
        except ChecksumMismatch as exc:
            raise CheckpointError(
                f"load_checkpoint: checkpoint {url} is truncated or corrupt: {exc}. Load another checkpoint of "
                "the folder by name, or use load_checkpoint(..., fallback=True)."
            ) from exc
        if not verified:
            logger.warning("Checkpoint %s has no content checksum; loading it unverified.", url)
        with open(local, "rb") as handle:
            is_zip = handle.read(4) == b"PK\x03\x04"
        try:  # memory-mapped tensors keep their pages after the file is unlinked below
            return torch.load(local, map_location=map_location, weights_only=True, mmap=is_zip)
        except Exception as exc:
            raise CheckpointError(
                f"load_checkpoint: checkpoint {url} is truncated or corrupt and cannot be loaded "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc!r})."
            ) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local)
