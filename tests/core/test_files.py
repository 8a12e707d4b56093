"""atomic_write and ensure_writable_folder: the file machinery every writing hook uses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from classy_hooks.core import HookConfigError
from classy_hooks.core.files import atomic_write, ensure_writable_folder


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_write(str(target)) as handle:
        handle.write(b"new")
        assert target.read_bytes() == b"old"  # not visible until the commit
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_write_gives_new_files_the_umask_mode_and_keeps_an_existing_mode(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.bin"
    old_umask = os.umask(0o022)
    try:
        with atomic_write(str(fresh)) as handle:
            handle.write(b"x")
    finally:
        os.umask(old_umask)
    assert fresh.stat().st_mode & 0o777 == 0o644  # readable by a serving container, not 0600
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    with atomic_write(str(kept)) as handle:
        handle.write(b"new")
    assert kept.stat().st_mode & 0o777 == 0o640


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("precious")
    with pytest.raises(RuntimeError), atomic_write(str(target), "w") as handle:
        handle.write("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "precious"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_ensure_writable_folder_creates_missing_folders(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    assert ensure_writable_folder("H", "folder", str(folder)) == str(folder)
    assert folder.is_dir()


def test_ensure_writable_folder_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(HookConfigError, match=r"H: argument 'folder' = .* is a file, not a folder"):
        ensure_writable_folder("H", "folder", str(a_file))
    with pytest.raises(HookConfigError, match="does not exist"):
        ensure_writable_folder("H", "folder", str(tmp_path / "missing"), create=False)


def test_ensure_writable_folder_rejects_read_only() -> None:
    """Run as an unprivileged user (root may write anywhere), in a real child process."""
    base = Path(tempfile.mkdtemp(prefix="ro-test-", dir="/tmp"))
    base.chmod(0o755)
    folder = base / "ro"
    folder.mkdir(mode=0o555)
    code = (
        "import os\n"
        "from classy_hooks.core.files import ensure_writable_folder\n"
        "if os.geteuid() == 0:\n"
        "    os.setuid(65534)  # drop to 'nobody' once imports are done\n"
        "try:\n"
        f"    ensure_writable_folder('H', 'folder', {str(folder)!r})\n"
        "except ValueError as exc:\n"
        "    raise SystemExit(str(exc))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    shutil.rmtree(base)
    assert proc.returncode == 1
    assert "H: argument 'folder'" in proc.stderr and "is not writable (Permission denied)" in proc.stderr
