"""fsspec URLs as folders: is_url, the file:// shortcut, memory:// writes, and the errors for missing filesystems."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from classy_hooks.core import HookConfigError
from classy_hooks.core.errors import MissingExtraError
from classy_hooks.core.files import atomic_write, ensure_writable_folder
from classy_hooks.core.url_files import (
    PROBE_PREFIX,
    is_url,
    join,
    list_url_folder,
    local_path,
    open_url,
    remove_url,
    upload_file,
    url_exists,
)
from dev_dependencies import missing_dev_dependency

needs_fsspec = pytest.mark.skipif(
    missing_dev_dependency("fsspec"),
    reason="fsspec is not installed (core-only floor runs); its absence is tested by the missing-fsspec test",
)


@pytest.fixture
def memory_folder() -> Iterator[str]:
    """A fresh memory:// folder, emptied afterwards (the memory filesystem is process-wide)."""
    import fsspec

    url = f"memory://run-{os.urandom(4).hex()}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def test_is_url_tells_urls_from_local_paths() -> None:
    for url in ("s3://bucket/run", "memory://x", "gs://b", "simplecache::s3://b/k", "abfs://c/p"):
        assert is_url(url), url
    for path in ("/tmp/run", "run", "C:\\run", "./s3:/x", "s3:", "file:///tmp/run", "local://run", ""):
        assert not is_url(path), path


def test_file_urls_are_plain_local_paths(tmp_path: Path) -> None:
    assert local_path(f"file://{tmp_path}") == str(tmp_path)
    assert local_path("local://rel/dir") == "rel/dir"
    assert local_path("/already/local") == "/already/local"
    folder = ensure_writable_folder("H", "folder", f"file://{tmp_path}/out")
    assert folder == str(tmp_path / "out")
    with atomic_write(f"file://{tmp_path}/out/x.bin") as handle:
        handle.write(b"local")
    assert (tmp_path / "out" / "x.bin").read_bytes() == b"local"
    assert os.listdir(tmp_path / "out") == ["x.bin"]  # the local temp-then-rename path: no temp left


def test_join_uses_slashes_for_urls_only(tmp_path: Path) -> None:
    assert join("s3://b/run/", "checkpoint.torch") == "s3://b/run/checkpoint.torch"
    assert join(str(tmp_path), "a") == os.path.join(str(tmp_path), "a")


@needs_fsspec
def test_memory_folder_is_checked_written_whole_and_read_back(memory_folder: str) -> None:
    folder = ensure_writable_folder("H", "folder", memory_folder + "/")
    assert folder == memory_folder
    assert not [n for n in list_url_folder(folder) if n.startswith(PROBE_PREFIX)]  # the probe was removed
    target = join(folder, "predictions.csv")
    with atomic_write(target, "w") as handle:
        handle.write("a,b\n")
        assert not url_exists(target)  # nothing visible until the whole file is done
    with open_url(target, "r") as reader:
        assert reader.read() == "a,b\n"
    assert list_url_folder(folder) == ["predictions.csv"]  # no temporary name left behind
    remove_url(target)
    remove_url(target)  # already gone: no error
    assert list_url_folder(folder) == []


@needs_fsspec
def test_memory_write_failure_keeps_the_old_file(memory_folder: str) -> None:
    target = join(ensure_writable_folder("H", "folder", memory_folder), "model.pt")
    with atomic_write(target) as handle:
        handle.write(b"precious")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half")
        raise RuntimeError("crash mid-write")
    with open_url(target) as reader:
        assert reader.read() == b"precious"
    assert list_url_folder(memory_folder) == ["model.pt"]


@needs_fsspec
def test_upload_file_publishes_a_local_file(memory_folder: str, tmp_path: Path) -> None:
    local = tmp_path / "events"
    local.write_bytes(b"0123")
    upload_file(str(local), join(memory_folder, "events"))
    local.write_bytes(b"01234567")  # uploaded again after it grew: replaced whole
    upload_file(str(local), join(memory_folder, "events"))
    with open_url(join(memory_folder, "events")) as reader:
        assert reader.read() == b"01234567"
    assert list_url_folder(memory_folder) == ["events"]


@needs_fsspec
def test_a_url_naming_a_file_is_rejected(memory_folder: str) -> None:
    with atomic_write(join(memory_folder, "f")) as handle:
        handle.write(b"x")
    with pytest.raises(HookConfigError, match=r"H: argument 'folder' = .*is a file, not a folder"):
        ensure_writable_folder("H", "folder", join(memory_folder, "f"))


@needs_fsspec
def test_unknown_protocol_is_a_clear_error_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HookConfigError, match=r"CheckpointHook: argument 'checkpoint_folder' = 'nosuch://b/run' has a "
                       r"protocol fsspec does not know"):
        ensure_writable_folder("CheckpointHook", "checkpoint_folder", "nosuch://b/run")
    assert os.listdir(tmp_path) == []


def _run_without(module: str, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where importing `module` fails as if it were not installed."""
    blocker = f"import sys; sys.modules[{module!r}] = None\n"
    return subprocess.run([sys.executable, "-c", blocker + code], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_fsspec
def test_s3_url_without_s3fs_names_the_hook_the_argument_and_the_fix(tmp_path: Path) -> None:
    result = _run_without(
        "s3fs",
        "from classy_hooks.core.files import ensure_writable_folder\n"
        "ensure_writable_folder('CheckpointHook', 'checkpoint_folder', 's3://bucket/run')\n",
        tmp_path,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("classy_hooks.core.errors.MissingExtraError: CheckpointHook: argument 'checkpoint_folder'"
                           " = 's3://bucket/run' needs the fsspec filesystem for 's3://'"), last
    assert last.endswith("Install it with: pip install s3fs"), last
    assert os.listdir(tmp_path) == []  # never a local folder named 's3:'


def test_url_without_fsspec_names_the_extra(tmp_path: Path) -> None:
    result = _run_without(
        "fsspec",
        "from classy_hooks.core.files import ensure_writable_folder\n"
        "ensure_writable_folder('OutputCSVHook', 'folder', 'memory://run')\n",
        tmp_path,
    )
    assert result.returncode != 0
    assert "MissingExtraError: OutputCSVHook needs the 'fsspec' package" in result.stderr
    assert "pip install 'classy-hooks-core[fsspec]'" in result.stderr
    assert os.listdir(tmp_path) == []


def test_local_paths_never_import_fsspec(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from classy_hooks.core.files import atomic_write, ensure_writable_folder\n"
        f"folder = ensure_writable_folder('H', 'folder', {str(tmp_path / 'out')!r})\n"
        "with atomic_write(folder + '/x', 'w') as f: f.write('x')\n"
        "assert 'fsspec' not in sys.modules, 'fsspec imported on the local path'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "x").read_text() == "x"


def test_missing_extra_error_is_an_import_error() -> None:
    assert issubclass(MissingExtraError, ImportError)



@needs_fsspec
@pytest.mark.parametrize("kind", ["local", "memory"])
def test_file_helpers_treat_paths_and_urls_alike(kind: str, tmp_path: Path, memory_folder: str) -> None:
    from classy_hooks.core.files import file_exists, list_folder, read_bytes, remove_file, sync_folder

    folder = str(tmp_path / "out") if kind == "local" else memory_folder
    folder = ensure_writable_folder("H", "folder", folder)
    assert list_folder(folder) == []
    with atomic_write(join(folder, "b.csv"), "wb") as handle:
        handle.write(b"rows")
    sync_folder(folder)
    assert file_exists(join(folder, "b.csv")) and not file_exists(join(folder, "missing"))
    assert read_bytes(join(folder, "b.csv")) == b"rows"
    assert list_folder(folder) == ["b.csv"]
    remove_file(join(folder, "b.csv"))
    remove_file(join(folder, "b.csv"))
    assert list_folder(folder) == [] and list_folder(join(folder, "never-made")) == []
