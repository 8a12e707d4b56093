"""Folders and files named by fsspec URLs (`s3://bucket/run`, `memory://run`, ...): checked, read and written whole.

Plain paths never reach this module's fsspec side: `is_url` is a string test, and `file://` URLs are turned into
plain paths (`local_path`), so they keep the local guarantees (fsync, atomic rename). fsspec is imported only for
a URL, through `import_extra`: it is pure Python and a requirement of torch, so every classy-hooks package that
uses torch has it; a core-only install gets it with the `fsspec` extra.

Guarantees, by filesystem:
- filesystems that rename (memory, sftp, hdfs, ...): a file is uploaded whole under a temporary name in its folder,
  then moved onto its name, so readers see the old file or the new one;
- object stores (`OBJECT_STORES`: s3, gcs, azure, ...), which cannot rename atomically and have no fsync: a file is
  uploaded once complete, as one object write (a single PUT, or a multipart upload that becomes visible only when
  completed), so readers see the old object or the whole new one, never a part. Across several objects there is no
  atomicity: callers write the data first and the pointer (e.g. `checkpoint.torch`) last.
Durability is the filesystem's: a remote write is done when its upload call returns.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

from classy_hooks.core.errors import HookConfigError, MissingExtraError
from classy_hooks.core.optional import import_extra

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")
_LOCAL_PREFIXES = ("file://", "local://")
#: fsspec protocols of object stores: no atomic rename, so files are written as one complete object instead.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2", "cos", "tos"})
#: Prefix of the probe object `ensure_writable_url_folder` writes and deletes.
PROBE_PREFIX = ".classy-hooks-probe-"


def is_url(path: str) -> bool:
    """True if `path` names a remote or in-memory fsspec location (`scheme://...`, chained `a::b://...` too)."""
    return "://" in path and bool(_URL_RE.match(path)) and not path.startswith(_LOCAL_PREFIXES)


def local_path(path: str) -> str:
    """`path` with a `file://` or `local://` prefix removed (fsspec's local filesystem is the plain disk)."""
    for prefix in _LOCAL_PREFIXES:
        if path.startswith(prefix):
            return path[len(prefix) :] or "."
    return path


def join(folder: str, name: str) -> str:
    """`folder/name` for a URL or a plain path (URLs always use `/`)."""
    return f"{folder.rstrip('/')}/{name}" if is_url(folder) else os.path.join(folder, name)


def url_filesystem(url: str, hook: str, arg: str) -> tuple[Any, str]:
    """The fsspec filesystem of `url` and the path inside it.

    Raises `MissingExtraError` naming the hook, the argument and the `pip install` line when the URL's
    filesystem package (e.g. s3fs for `s3://`) is not installed, and `HookConfigError` for an unknown protocol.
    """
    fsspec = import_extra("fsspec", hook, "classy-hooks-core", "fsspec")
    protocol = url.split("://", 1)[0].split("::")[-1]
    try:
        fs, path = fsspec.core.url_to_fs(url)
        return fs, str(path)
    except ImportError as exc:
        registry = import_extra("fsspec.registry", hook, "classy-hooks-core", "fsspec")
        known = registry.known_implementations.get(protocol, {})
        package = str(known.get("class", protocol)).split(".")[0]
        raise MissingExtraError(
            f"{hook}: argument '{arg}' = {url!r} needs the fsspec filesystem for '{protocol}://', whose package "
            f"is not installed ({exc}). Install it with: pip install {package}"
        ) from exc
    except ValueError as exc:
        raise HookConfigError(
            f"{hook}: argument '{arg}' = {url!r} has a protocol fsspec does not know ({exc}). "
            "Pass a local folder or a URL of an installed fsspec filesystem (s3://, gs://, memory://, ...)."
        ) from exc


def is_object_store(fs: Any) -> bool:
    """True for filesystems without atomic rename (object stores), where files are written as one object."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return bool(OBJECT_STORES.intersection(protocols))


def ensure_writable_url_folder(hook: str, arg: str, url: str, create: bool = True) -> str:
    """Check that the folder `url` can hold new files (creating it where folders exist); return it without a final `/`.

    On object stores the bucket must exist: it is never created, so a mistyped bucket name is an error here.

    Writes and deletes a small probe file, so missing credentials, a missing bucket or a read-only store are
    reported now, naming the hook and the argument, not at the first save.
    """
    fs, path = url_filesystem(url, hook, arg)
    folder = url.rstrip("/")
    try:
        if fs.isfile(path):
            raise HookConfigError(f"{hook}: argument '{arg}' = {url!r} is a file, not a folder. Pass a folder URL.")
        if not is_object_store(fs):  # object stores have no folders; and a typo must not create a bucket
            if not create and not fs.isdir(path):
                raise HookConfigError(f"{hook}: argument '{arg}' = {url!r} does not exist. Create it first.")
            fs.makedirs(path, exist_ok=True)
        probe = f"{path.rstrip('/')}/{PROBE_PREFIX}{secrets.token_hex(8)}"
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except HookConfigError:
        raise
    except Exception as exc:  # each store raises its own types (PermissionError, botocore's ClientError, ...)
        raise HookConfigError(
            f"{hook}: argument '{arg}' = {url!r} is not writable ({type(exc).__name__}: {exc}). "
            "Check the URL, that the bucket exists and the credentials allow writing, or pass another folder."
        ) from exc
    return folder


def upload_file(local: str, url: str, hook: str = "classy-hooks", arg: str = "path") -> None:
    """Publish the complete local file `local` at `url` (see the module docstring for what readers can see)."""
    fs, path = url_filesystem(url, hook, arg)
    _publish(fs, path, lambda name: fs.put_file(local, name))


def copy_url(source: str, target: str, hook: str = "classy-hooks", arg: str = "path") -> None:
    """Publish a copy of the file `source` at `target` (same filesystem), copied by the store itself.

    Object stores copy server-side into one new object (S3: CopyObject, atomic for readers); filesystems that
    rename copy to a temporary name first, then move it onto `target`.
    """
    fs, source_path = url_filesystem(source, hook, arg)
    _, path = url_filesystem(target, hook, arg)
    _publish(fs, path, lambda name: fs.copy(source_path, name))


def _publish(fs: Any, path: str, write: Callable[[str], None]) -> None:
    """Make `write(name)` appear at `path` complete: written in place on an object store (one new object, atomic for
    readers), else to a temporary name beside `path` that is then moved onto it (removed if the move fails)."""
    if is_object_store(fs):
        write(path)
        return
    tmp = _temp_name(path)
    write(tmp)
    try:
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm_file(tmp)
        raise


def _temp_name(path: str) -> str:
    """A temporary name beside `path`: `.<name>.<random>.tmp` in the same folder."""
    folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
    return f"{folder}/{tmp}" if folder else tmp


@contextlib.contextmanager
def atomic_write_url(url: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write the file at `url` all at once: yield a local temporary file, then upload it complete (`upload_file`).

    On error nothing is uploaded and the previous file at `url` is untouched. The local temporary file lives in
    the system temp folder (`TMPDIR`) and is always removed.
    """
    fd, local = tempfile.mkstemp(prefix=".classy-hooks-upload.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        upload_file(local, url)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local)


def _fresh(url: str) -> tuple[Any, str]:
    """`url_filesystem` with the store's cached listings of `url` dropped: another process (a rank, a resumed run)
    may have written there since this one listed the folder (s3fs answers existence from its listing cache)."""
    fs, path = url_filesystem(url, "classy-hooks", "path")
    fs.invalidate_cache(path)
    return fs, path


def open_url(url: str, mode: str = "rb") -> IO[Any]:
    """Open the file at `url` for reading (`rb` or `r`)."""
    fs, path = _fresh(url)
    return fs.open(path, mode)  # type: ignore[no-any-return]


def url_exists(url: str, kind: str = "any") -> bool:
    """True if `url` exists; `kind` narrows it to a `file` or a `dir`."""
    fs, path = _fresh(url)
    if kind == "file":
        return bool(fs.isfile(path))
    if kind == "dir":
        return bool(fs.isdir(path))
    return bool(fs.exists(path))


def list_url_folder(url: str) -> list[str]:
    """Names (not paths) of the entries directly inside the folder `url`; empty if it does not exist."""
    fs, path = url_filesystem(url, "classy-hooks", "path")
    try:
        entries = fs.ls(path, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    return sorted(str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries)


def remove_url(url: str) -> None:
    """Delete the file at `url` (no error if it is already gone)."""
    fs, path = url_filesystem(url, "classy-hooks", "path")
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)
