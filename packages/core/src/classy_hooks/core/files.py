"""Crash-safe file writing and folder checks shared by every hook that writes files.

Every path may also be an fsspec URL (`s3://bucket/run`, `memory://run`): those go to `classy_hooks.core.url_files`
(imported here, but fsspec itself only on the first URL), whose docstring says what each kind of store guarantees.
`file://` URLs are plain local paths. A plain path costs one string test over the local code.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from classy_hooks.core.errors import HookConfigError
from classy_hooks.core.url_files import (
    atomic_write_url,
    ensure_writable_url_folder,
    is_url,
    list_url_folder,
    local_path,
    open_url,
    remove_url,
    url_exists,
)


def fsync_dir(folder: str) -> None:
    """Flush a folder's entries to disk so a completed rename survives a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _target_mode(path: str) -> int:
    """Permission bits for a new version of `path`: those of the existing file, else 0666 minus umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write `path` all at once: yield a temp file in the same folder, then fsync and rename it.

    At any instant of a crash, `path` holds either its previous content or the new one, never
    a partial file. On error the temp file is removed and `path` is untouched. For a URL see `atomic_write_url`.
    """
    if is_url(path):
        with atomic_write_url(path, mode) as remote:
            yield remote
        return
    path = local_path(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        # mkstemp makes 0600 files; give the result the mode a plain open() would (or the old file's)
        os.chmod(tmp, _target_mode(path))
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def ensure_writable_folder(hook: str, arg: str, folder: str, create: bool = True) -> str:
    """Check that `folder` exists (creating it if asked) and accepts new files; return its absolute path.

    A URL is checked on its filesystem (`ensure_writable_url_folder`) and returned as given, minus a final `/`.
    """
    if is_url(folder):
        return ensure_writable_url_folder(hook, arg, folder, create)
    path = os.path.abspath(local_path(folder))
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise HookConfigError(f"{hook}: argument '{arg}' = {folder!r} is a file, not a folder. Pass a folder path.")
        if not create:
            raise HookConfigError(f"{hook}: argument '{arg}' = {folder!r} does not exist. Create it first.")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise HookConfigError(
                f"{hook}: argument '{arg}' = {folder!r} cannot be created ({exc.strerror}). "
                "Pass a folder you can write to."
            ) from exc
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise HookConfigError(
            f"{hook}: argument '{arg}' = {folder!r} is not writable ({exc.strerror}). "
            "Fix its permissions or pass another folder."
        ) from exc
    return path


def file_exists(path: str) -> bool:
    """True if the file `path` (a plain path or a URL) exists."""
    return url_exists(path, "file") if is_url(path) else os.path.isfile(local_path(path))


def read_bytes(path: str) -> bytes:
    """The whole content of the file `path` (a plain path or a URL)."""
    if is_url(path):
        with open_url(path) as remote:
            return bytes(remote.read())
    with open(local_path(path), "rb") as handle:
        return handle.read()


def remove_file(path: str) -> None:
    """Delete the file `path` (a plain path or a URL); no error if it is already gone."""
    if is_url(path):
        remove_url(path)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(local_path(path))


def list_folder(folder: str) -> list[str]:
    """Sorted names of the entries in `folder` (a plain path or a URL); empty if it does not exist."""
    if is_url(folder):
        return list_url_folder(folder)
    try:
        return sorted(os.listdir(local_path(folder)))
    except FileNotFoundError:
        return []


def sync_folder(folder: str) -> None:
    """`fsync_dir` for a local folder; nothing for a URL, whose writes are durable when their upload returns."""
    if not is_url(folder):
        fsync_dir(os.path.abspath(local_path(folder)))
