"""One checkpoint file: written at the disk's speed with a content checksum inside, verified before it is loaded.

The file is exactly what `torch.save` writes (a zip archive that `torch.load(weights_only=True)` reads, with
`mmap=True` too, and that Classy Vision loads), plus a zip archive comment: the last bytes of the file, which
zip readers and `torch.load` skip. It holds `classy-hooks checksum v1 ` and 32 hex digits, the checksum of
every byte before the comment (the zip entries and their headers, the pickle, the central directory).

Checksum v1: BLAKE2b-128 of the covered length, of the sums (mod 2**64) of each 64 KiB block read as
little-endian int64 words, and of the bytes after the last whole block. The block sums run at memory speed
(~18 GB/s on one core, vs ~2 GB/s for zlib.crc32), so verifying costs a few percent of a load. Every change
of one 8-byte word (any flipped bit or byte) changes its block's sum, so it is always detected; random damage
to several words escapes with probability 2**-64. It is no defence against deliberate tampering (swapping two
words inside one block keeps the sum); `weights_only=True` is what keeps a hostile file from running code.

`torch.save` also computes a CRC32 per zip entry, which `torch.load` never checks; `write_torch_file` turns
that off (it is 20 % of a save) for its own writer only, see `_Crc32Skipped`.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import struct
import sys
import threading
from typing import IO, Any, cast

import torch

logger = logging.getLogger(__name__)

CHECKSUM_MAGIC = b"classy-hooks checksum v1 "
_DIGEST_HEX = 32
_COMMENT_BYTES = len(CHECKSUM_MAGIC) + _DIGEST_HEX
_EOCD = struct.Struct("<4s16sH")  # zip end-of-central-directory record: signature, fields, comment length
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP_SIGNATURE = b"PK\x03\x04"
_BLOCK_BYTES = 1 << 16
_SMALL_WRITE = 1 << 16  # torch.save's writes below this size are gathered into one system call
_CRC32_LOCK = threading.Lock()
#: Checksums read the data as little-endian words: on the rare big-endian host files are written and loaded without.
CHECKSUMS = sys.byteorder == "little"


class ChecksumMismatch(ValueError):
    """A file's bytes differ from those its writer checksummed; the message says what failed."""


def content_checksum(buffer: Any) -> str:
    """Checksum v1 (see the module docstring) of a bytes-like `buffer`, as 32 hex digits."""
    view = memoryview(buffer).cast("B")
    if view.readonly:  # torch.frombuffer wants a writable buffer (it never writes); files are mapped copy-on-write
        view = memoryview(bytearray(view))
    size = len(view)
    digest = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=_DIGEST_HEX // 2)
    blocks = size // _BLOCK_BYTES
    if blocks:
        words = torch.frombuffer(view, dtype=torch.uint8, count=blocks * _BLOCK_BYTES).view(torch.int64)
        sums = bytearray(blocks * 8)
        torch.sum(words.view(blocks, -1), dim=1, out=torch.frombuffer(sums, dtype=torch.int64))
        digest.update(sums)
    digest.update(view[blocks * _BLOCK_BYTES :])
    return digest.hexdigest()


class _Crc32Skipped:
    """Turns off torch.save's zip CRC32s for one save; what other threads see is said in `write_torch_file`.

    The setting (`torch.serialization.set_crc32_options`) is process-wide and read once, when torch.save
    creates its archive writer. It is switched off under a lock (so concurrent saves of ours never restore
    each other's value) and restored at this writer's first write, i.e. as soon as torch.save has read it.
    """

    def __init__(self) -> None:
        self._held = False
        self._previous = True

    def __enter__(self) -> _Crc32Skipped:
        _CRC32_LOCK.acquire()
        self._held = True
        self._previous = torch.serialization.get_crc32_options()
        torch.serialization.set_crc32_options(False)
        return self

    def restore(self) -> None:
        if self._held:
            self._held = False
            torch.serialization.set_crc32_options(self._previous)
            _CRC32_LOCK.release()

    def __exit__(self, *exc: object) -> None:
        self.restore()


class _FdWriter:
    """The file object torch.save writes to: small writes (zip headers, padding) are gathered into one system call,
    bytes are counted, and an OSError is kept (torch replaces it by a vaguer RuntimeError)."""

    def __init__(self, fd: int, crc32: _Crc32Skipped) -> None:
        self.fd = fd
        self.size = 0
        self.error: OSError | None = None
        self._crc32 = crc32
        self._pending = bytearray()

    def write(self, data: Any) -> int:
        self._crc32.restore()
        view = memoryview(data).cast("B")
        length = len(view)
        if length < _SMALL_WRITE:
            self._pending += view
            if len(self._pending) >= _SMALL_WRITE:
                self.flush()
        else:
            self.flush()
            self._write_all(view)
        self.size += length
        return length

    def flush(self) -> None:
        """Write the gathered small writes."""
        if self._pending:
            pending, self._pending = self._pending, bytearray()
            self._write_all(memoryview(pending))

    def _write_all(self, view: memoryview) -> None:
        try:
            written = 0
            while written < len(view):
                written += os.write(self.fd, view[written:])
        except OSError as exc:
            self.error = exc
            raise


def write_torch_file(fd: int, value: Any) -> int:
    """`torch.save(value)` into the empty file open read-write as `fd`, checksum added, fsynced; return its size.

    The checksum is computed from the page cache while another thread's fsync waits for the disk, so on a
    disk slower than memory it costs no time of its own; the 57-byte comment is then written in place and
    synced (fdatasync) again. An OSError (ENOSPC, EIO...) is raised as the write or sync raised it, never
    as torch's generic "unexpected pos" RuntimeError.

    Other threads: a `torch.save` that another thread starts while this one is between entering and
    writing its first byte (pickling the object, milliseconds) writes its file without zip CRC32s too;
    `torch.load` reads such files alike (it never checks them), only external unzip tools warn.
    """
    with _Crc32Skipped() as crc32:
        writer = _FdWriter(fd, crc32)
        try:
            torch.save(value, cast(IO[bytes], writer))  # it needs only write() and flush()
            writer.flush()
        except Exception:
            if writer.error is not None:
                raise writer.error from None
            raise
    if not CHECKSUMS:
        os.fsync(fd)
        return writer.size
    end = writer.size - _EOCD.size
    signature, fields, comment_length = _EOCD.unpack(os.pread(fd, _EOCD.size, end))
    if signature != _EOCD_SIGNATURE or comment_length != 0:
        raise RuntimeError(f"torch.save wrote no plain zip end record (got {signature!r}); cannot add the checksum")
    _pwrite_all(fd, _EOCD.pack(signature, fields, _COMMENT_BYTES) + CHECKSUM_MAGIC + b"0" * _DIGEST_HEX, end)
    sync_errors: list[OSError] = []
    syncer = threading.Thread(target=_fsync, args=(fd, sync_errors), name="classy-hooks-fsync", daemon=True)
    syncer.start()
    try:
        with mmap.mmap(fd, writer.size, access=mmap.ACCESS_COPY) as mapped:
            digest = content_checksum(mapped)
    finally:
        syncer.join()
    if sync_errors:
        raise sync_errors[0]
    _pwrite_all(fd, digest.encode("ascii"), writer.size + len(CHECKSUM_MAGIC))
    os.fdatasync(fd)
    return writer.size + _COMMENT_BYTES


def _fsync(fd: int, errors: list[OSError]) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        errors.append(exc)


def _is_checksum_trailer(trailer: bytes) -> bool:
    """True if `trailer` (the file's last bytes) is a zip end record whose comment is a classy-hooks checksum."""
    if len(trailer) != _EOCD.size + _COMMENT_BYTES:
        return False
    signature, _, comment_length = _EOCD.unpack(trailer[: _EOCD.size])
    return (
        signature == _EOCD_SIGNATURE
        and comment_length == _COMMENT_BYTES
        and trailer[_EOCD.size :].startswith(CHECKSUM_MAGIC)
    )


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def file_checksum(path: str) -> tuple[int, str]:
    """The size of the whole file `path` and its checksum v1 (a sharded checkpoint's shards, `.metadata`)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if not size:
            return 0, content_checksum(b"")
        with mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_COPY) as mapped:
            return size, content_checksum(mapped)


def verify_torch_file(path: str) -> bool:
    """Check the content checksum of the checkpoint file `path`: True if it matched, False if it has none.

    Files without one (written by Classy Vision, plain `torch.save`, or earlier classy-hooks-model) end
    with the zip end record alone, or are in torch's pre-zip format. Raises `ChecksumMismatch` (what failed)
    when the checksum differs or the file's end is neither of those (truncated or damaged).
    """
    if not CHECKSUMS:
        return False
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        covered = size - _COMMENT_BYTES
        trailer = b""
        if covered >= _EOCD.size + len(_ZIP_SIGNATURE):
            handle.seek(covered - _EOCD.size)
            trailer = handle.read(_EOCD.size + _COMMENT_BYTES)
        if not _is_checksum_trailer(trailer):
            handle.seek(0)
            start = handle.read(len(_ZIP_SIGNATURE))
            handle.seek(max(size - _EOCD.size, 0))
            end = handle.read(_EOCD.size)
            if start != _ZIP_SIGNATURE or (len(end) == _EOCD.size and _EOCD.unpack(end)[::2] == (_EOCD_SIGNATURE, 0)):
                return False  # torch's legacy format (or no torch file: torch.load judges), or a plain zip end
            raise ChecksumMismatch(
                "its end is neither a zip end record nor a classy-hooks checksum: the file is truncated or its "
                "last bytes are damaged"
            )
        stored = trailer[_EOCD.size + len(CHECKSUM_MAGIC) :].decode("ascii", "replace")
        with mmap.mmap(handle.fileno(), covered, access=mmap.ACCESS_COPY) as mapped:
            actual = content_checksum(mapped)
    if actual != stored:
        raise ChecksumMismatch(
            f"its content checksum does not match (stored {stored}, computed {actual} over its first {covered} "
            "bytes): some bytes changed after it was written (disk, transfer or copy damage)"
        )
    return True
