"""TensorBoard hooks with a log dir given as an fsspec URL: events staged locally and uploaded at every flush."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from logging_hook_utils import read_scalars

from classy_hooks.core import build_hook
from classy_hooks.logging.uploading_summary_writer import UploadingSummaryWriter
from helpers import make_task


@pytest.fixture
def memory_logdir() -> Iterator[str]:
    url = f"memory://tb-{os.urandom(4).hex()}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def download(url: str, local: Path) -> Path:
    """Copy the URL folder's files into `local` (where TensorBoard's own reader can read them)."""
    fs, path = fsspec.core.url_to_fs(url)
    local.mkdir(parents=True, exist_ok=True)
    for remote in fs.find(path):
        (local / remote.rsplit("/", 1)[-1]).write_bytes(fs.cat_file(remote))
    return local


def test_plot_and_model_hooks_upload_their_events_to_a_memory_url(
    memory_logdir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    plot = build_hook({"name": "tensorboard_plot", "summary_writer": {"logdir": memory_logdir}, "log_period": 1})
    graph = build_hook({"name": "model_tensorboard", "summary_writer": {"logdir": memory_logdir}})
    task = make_task([plot, graph])
    task.run()
    assert os.listdir(tmp_path) == []  # never a local folder named 'memory:'
    names = sorted(name.rsplit("/", 1)[-1] for name in fsspec.filesystem("memory").ls(memory_logdir, detail=False))
    assert len(names) == 2 and all(name.startswith("events.out.tfevents.") for name in names)
    scalars = read_scalars(download(memory_logdir, tmp_path / "downloaded"))
    assert [step for step, _ in scalars["Losses/train"]] == [8, 16]  # both train phases, by iteration
    assert "Losses/test" in scalars


def _uploaded_scalars(writer: UploadingSummaryWriter, url: str, local: Path) -> dict[str, list[tuple[int, float]]]:
    """Flush until tensorboardX's writer thread has written the queued event (its flush does not wait), then read."""
    deadline = time.monotonic() + 10
    while True:
        writer.flush()
        scalars = read_scalars(download(url, local))
        if scalars or time.monotonic() > deadline:
            return scalars
        time.sleep(0.05)


def test_each_flush_uploads_what_was_written(memory_logdir: str, tmp_path: Path) -> None:
    import tensorboardX

    writer = UploadingSummaryWriter(tensorboardX, memory_logdir, "TensorboardPlotHook")
    assert writer.logdir == memory_logdir and os.path.isdir(writer.staging_folder)
    writer.add_scalar("a", 1.0, 0)
    assert _uploaded_scalars(writer, memory_logdir, tmp_path / "first")["a"] == [(0, 1.0)]
    writer.add_scalar("a", 2.0, 1)
    writer.close()
    assert read_scalars(download(memory_logdir, tmp_path / "second"))["a"] == [(0, 1.0), (1, 2.0)]
    assert not os.path.exists(writer.staging_folder)  # removed once everything was uploaded


def test_file_url_logdir_is_the_local_folder(tmp_path: Path) -> None:
    plot = build_hook({"name": "tensorboard_plot", "summary_writer": {"logdir": f"file://{tmp_path}/tb"}})
    make_task([plot], num_epochs=1).run()
    assert read_scalars(tmp_path / "tb")["Losses/train"]
