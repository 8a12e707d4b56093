"""checkpoint_file: torch.save files with a content checksum; every changed byte is caught before loading."""

from __future__ import annotations

import errno
import os
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from classy_hooks.model.checkpoint_file import (
    CHECKSUM_MAGIC,
    ChecksumMismatch,
    content_checksum,
    verify_torch_file,
    write_torch_file,
)


def _state() -> dict:
    """Two 64 KiB blocks and a tail of tensor data, plus numbers a flipped pickle byte would silently change."""
    generator = torch.Generator().manual_seed(0)
    return {
        "classy_state_dict": {
            "base_model": {"weight": torch.randn(40_000, generator=generator), "bias": torch.arange(7.0)},
            "lr": 0.1,
            "steps": 12,
        },
        "checkpoint_format_version": 1,
    }


def _write(path: Path, value: object) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return write_torch_file(fd, value)
    finally:
        os.close(fd)


def test_the_file_is_a_torch_save_archive_with_the_checksum_as_its_zip_comment(tmp_path: Path) -> None:
    path = tmp_path / "c.torch"
    size = _write(path, _state())
    assert size == path.stat().st_size
    for mmap in (False, True):
        loaded = torch.load(path, weights_only=True, mmap=mmap)
        assert torch.equal(loaded["classy_state_dict"]["base_model"]["weight"], _state()["classy_state_dict"]["base_model"]["weight"])
        assert loaded["classy_state_dict"]["lr"] == 0.1
    archive = zipfile.ZipFile(path)
    assert archive.comment.startswith(CHECKSUM_MAGIC) and len(archive.comment) == len(CHECKSUM_MAGIC) + 32
    assert any(name.endswith("data.pkl") for name in archive.namelist())
    assert verify_torch_file(str(path)) is True


def test_every_changed_byte_is_detected_where_torch_load_would_not_notice(tmp_path: Path) -> None:
    path = tmp_path / "c.torch"
    _write(path, _state())
    data = path.read_bytes()
    assert len(data) > 2 * 65536  # the block sums and the tail are both exercised
    # Every byte outside the weights' record, each flipped two ways in place: the first 1 KiB (zip headers, the
    # pickle, small records) and the last 1.1 KiB (the bias record, the central directory, the end record, the
    # checksum itself); and every 251st byte of the weights in between, one bit flipped.
    edges = set(range(1024)) | set(range(len(data) - 1100, len(data)))
    offsets = sorted(edges | set(range(0, len(data), 251)))
    fd = os.open(path, os.O_RDWR)
    try:
        for offset in offsets:
            for mask in (0x01, 0xFF) if offset in edges else (0x01,):
                os.pwrite(fd, bytes([data[offset] ^ mask]), offset)
                with pytest.raises(ChecksumMismatch):
                    verify_torch_file(str(path))
                os.pwrite(fd, data[offset : offset + 1], offset)
    finally:
        os.close(fd)
    assert verify_torch_file(str(path)) is True
    # Why it matters: one flipped bit in the middle of the weights loads without a word from torch.
    copy = bytearray(data)
    copy[len(data) // 2] ^= 0x10
    path.write_bytes(copy)
    assert torch.load(path, weights_only=True)["classy_state_dict"]["lr"] == 0.1
    with pytest.raises(ChecksumMismatch, match="content checksum does not match"):
        verify_torch_file(str(path))


def test_truncated_file_is_named_truncated(tmp_path: Path) -> None:
    path = tmp_path / "c.torch"
    _write(path, _state())
    data = path.read_bytes()
    for keep in (len(data) - 1, len(data) - 40, len(data) // 2, 100):
        path.write_bytes(data[:keep])
        with pytest.raises(ChecksumMismatch, match="truncated"):
            verify_torch_file(str(path))


def test_files_without_a_checksum_are_reported_unverifiable(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / "plain.torch")
    torch.save(_state(), tmp_path / "legacy.torch", _use_new_zipfile_serialization=False)
    assert verify_torch_file(str(tmp_path / "plain.torch")) is False
    assert verify_torch_file(str(tmp_path / "legacy.torch")) is False


def test_checksum_covers_length_blocks_and_tail() -> None:
    base = bytes(torch.randint(0, 256, (150_000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).tolist())
    assert content_checksum(base) == content_checksum(bytearray(base))
    assert content_checksum(base) != content_checksum(base + b"\0")  # a longer file of zeros differs
    swapped = base[65536:131072] + base[:65536] + base[131072:]
    assert content_checksum(base) != content_checksum(swapped)  # blocks in another order differ


def test_crc32_setting_is_restored_and_concurrent_saves_stay_valid(tmp_path: Path) -> None:
    """Our saves from several threads, beside user code's own torch.save, all give loadable files."""
    assert torch.serialization.get_crc32_options() is True
    errors: list[BaseException] = []

    def ours(i: int) -> None:
        try:
            for j in range(3):
                _write(tmp_path / f"ours-{i}-{j}.torch", _state())
        except BaseException as exc:
            errors.append(exc)

    def users() -> None:
        try:
            for j in range(6):
                torch.save(_state(), tmp_path / f"user-{j}.torch")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ours, args=(i,)) for i in range(3)] + [threading.Thread(target=users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert torch.serialization.get_crc32_options() is True
    for path in tmp_path.iterdir():
        assert verify_torch_file(str(path)) is path.name.startswith("ours"), path
        assert torch.load(path, weights_only=True)["classy_state_dict"]["steps"] == 12
    torch.serialization.set_crc32_options(False)  # a user's own choice is kept too
    try:
        _write(tmp_path / "after.torch", _state())
        assert torch.serialization.get_crc32_options() is False
    finally:
        torch.serialization.set_crc32_options(True)


def test_a_full_disk_is_the_os_error_not_torchs_generic_one() -> None:
    """/dev/full fails every write with ENOSPC, as a full disk does."""
    fd = os.open("/dev/full", os.O_RDWR)
    try:
        with pytest.raises(OSError) as caught:
            write_torch_file(fd, _state())
    finally:
        os.close(fd)
    assert caught.value.errno == errno.ENOSPC
    assert torch.serialization.get_crc32_options() is True
