"""Folders given as s3:// URLs on a real S3-compatible server (moto_server on 127.0.0.1, through s3fs).

Checkpoints written there resume bit-identically; CSV predictions and exported models land there whole; a
failed write uploads nothing; a missing bucket is reported before training.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from classy_hooks.core import ClassyHook, HookConfigError
from classy_hooks.core.files import atomic_write, ensure_writable_folder
from classy_hooks.core.url_files import join, list_url_folder, open_url, url_exists
from helpers import make_task, run_training, tiny_config


def test_s3_folder_on_a_real_server_is_checked_written_whole_and_read_back(s3_bucket: str, tmp_path: Path) -> None:
    folder = ensure_writable_folder("CheckpointHook", "checkpoint_folder", f"{s3_bucket}/run/")
    assert folder == f"{s3_bucket}/run"
    target = join(folder, "checkpoint.torch")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half")
        raise RuntimeError("crash mid-write")
    assert not url_exists(target)  # nothing uploaded by a failed write
    big = os.urandom(6 << 20)  # above s3fs's 5 MiB block: the multipart path
    with atomic_write(target) as handle:
        handle.write(big)
    with open_url(target) as reader:
        assert reader.read() == big
    assert list_url_folder(folder) == ["checkpoint.torch"]  # no temp object and no probe left


def test_s3_bucket_that_does_not_exist_is_reported_in_on_start_terms(s3_bucket: str) -> None:
    with pytest.raises(HookConfigError, match=r"OutputCSVHook: argument 'folder' = 's3://no-such-bucket-x/p' is not "
                       r"writable .*Check the URL, that the bucket exists"):
        ensure_writable_folder("OutputCSVHook", "folder", "s3://no-such-bucket-x/p")


@pytest.mark.slow
def test_exported_models_land_in_s3_whole_and_load(s3_bucket: str, tmp_path: Path) -> None:
    import torch

    from classy_hooks.export import TorchExportHook, TorchscriptHook

    folder = f"{s3_bucket}/export"
    task = make_task([TorchscriptHook(folder), TorchExportHook(folder)], num_epochs=1)
    task.run()
    assert list_url_folder(folder) == ["exported_program.pt2", "torchscript.pt"]
    sample = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = task.base_model.eval()(sample)
    local = tmp_path / "torchscript.pt"
    with open_url(join(folder, "torchscript.pt")) as remote:
        local.write_bytes(remote.read())
    torch.testing.assert_close(torch.jit.load(str(local))(sample), expected)
    with open_url(join(folder, "exported_program.pt2")) as remote:
        (tmp_path / "exported_program.pt2").write_bytes(remote.read())
    program = torch.export.load(str(tmp_path / "exported_program.pt2"))
    torch.testing.assert_close(program.module()(sample), expected)


def test_predictions_csv_lands_in_s3_whole(s3_bucket: str) -> None:
    from classy_hooks.export import OutputCSVHook

    folder = f"{s3_bucket}/predictions"
    make_task([OutputCSVHook(folder)], num_epochs=1).run()
    assert list_url_folder(folder) == ["predictions.csv", "predictions.phase00001.csv"]  # the latest, every phase
    with open_url(join(folder, "predictions.csv"), "r") as remote:
        lines = remote.read().splitlines()
    assert lines[0] == "sample_id\tprediction\ttarget"
    assert len(lines) == 1 + 64 and len({line.split("\t")[0] for line in lines[1:]}) == 64  # every test sample once


def test_tensorboard_events_land_in_s3_and_read_back(s3_bucket: str, tmp_path: Path) -> None:
    from classy_hooks.core import build_hook
    from helpers import read_scalars

    logdir = f"{s3_bucket}/tensorboard"
    make_task([build_hook({"name": "tensorboard_plot", "summary_writer": {"logdir": logdir}})]).run()
    (name,) = list_url_folder(logdir)
    with open_url(join(logdir, name)) as remote:
        (tmp_path / name).write_bytes(remote.read())
    scalars = read_scalars(tmp_path)
    assert [step for step, _ in scalars["Losses/train"]] == [8, 16] and len(scalars["Losses/test"]) == 2


class _BucketOutage(ClassyHook):
    """Deletes the bucket when phase `down` starts (after every on_start check passed), recreates it at `up`."""

    on_start = on_step = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, bucket: str, down: int, up: int | None = None) -> None:
        super().__init__()
        self.bucket, self.down, self.up = bucket, down, up

    def on_phase_start(self, task: Any) -> None:
        import fsspec

        fs = fsspec.filesystem("s3")
        if task.phase_idx == self.down:
            fs.rm(self.bucket, recursive=True)
        elif task.phase_idx == self.up:
            fs.mkdir(self.bucket)


def test_tensorboard_upload_failure_is_retried_then_costs_one_warning_and_keeps_the_events(
    s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    from classy_hooks.core import build_hook

    plot = build_hook({"name": "tensorboard_plot", "summary_writer": {"logdir": f"{s3_bucket}/tb"}})
    task = make_task([plot, _BucketOutage(s3_bucket.removeprefix("s3://"), down=0)], num_epochs=1)
    with caplog.at_level(logging.INFO):
        task.run()  # training completes
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("Each later flush retries" in m for m in messages) == 1, messages  # one warning for the outage
    (final,) = [m for m in messages if "writing to TensorBoard failed" in m]
    staging = re.search(r"the events are kept in (\S+?)\)", final)
    assert staging and any(n.startswith("events.out.tfevents.") for n in os.listdir(staging.group(1)))
    shutil.rmtree(staging.group(1))


def test_tensorboard_events_missed_during_an_outage_are_uploaded_at_the_next_flush(
    s3_bucket: str, tmp_path: Path
) -> None:
    from classy_hooks.core import build_hook
    from helpers import read_scalars

    logdir = f"{s3_bucket}/tb"
    plot = build_hook({"name": "tensorboard_plot", "summary_writer": {"logdir": logdir}})
    make_task([plot, _BucketOutage(s3_bucket.removeprefix("s3://"), down=0, up=2)]).run()
    (name,) = list_url_folder(logdir)
    with open_url(join(logdir, name)) as remote:
        (tmp_path / name).write_bytes(remote.read())
    assert [step for step, _ in read_scalars(tmp_path)["Losses/train"]] == [8, 16]  # phase 0's point too


def _hooks_writing_to(bucket: str, run: str) -> list[dict[str, Any]]:
    return [
        {"name": "checkpoint", "checkpoint_folder": f"{bucket}/{run}/checkpoints", "phase_types": ["train", "test"]},
        {"name": "output_csv", "folder": f"{bucket}/{run}/predictions"},
        {"name": "tensorboard_plot", "summary_writer": {"logdir": f"{bucket}/{run}/tensorboard"}},
    ]


def _load(url: str) -> dict[str, Any]:
    from classy_hooks.model import load_checkpoint

    return load_checkpoint(url)["classy_state_dict"]


@pytest.mark.slow
def test_train_py_writes_everything_to_s3_and_a_fresh_process_resumes_from_it_bit_identically(
    s3_bucket: str, tmp_path: Path
) -> None:
    import torch

    run_training(tmp_path, tiny_config(hooks=_hooks_writing_to(s3_bucket, "first")))
    first = f"{s3_bucket}/first"
    assert list_url_folder(f"{first}/checkpoints") == [
        "checkpoint.torch", *(f"model_phase-{i}_end.torch" for i in range(4))
    ]
    assert list_url_folder(f"{first}/predictions") == [
        "predictions.csv", "predictions.phase00001.csv", "predictions.phase00003.csv"
    ]
    assert len(list_url_folder(f"{first}/tensorboard")) == 1
    # a fresh process resumes from the phase-1 checkpoint on S3 and redoes phases 2 and 3
    run_training(
        tmp_path,
        tiny_config(hooks=_hooks_writing_to(s3_bucket, "resumed")),
        extra=["--resume", f"{first}/checkpoints/model_phase-1_end.torch"],
        run_dir=tmp_path / "resumed",
    )
    straight, resumed = _load(f"{first}/checkpoints"), _load(f"{s3_bucket}/resumed/checkpoints")
    assert straight["phase_idx"] == resumed["phase_idx"] == 3 and straight["num_updates"] == resumed["num_updates"]
    for key, value in straight["base_model"].items():
        assert torch.equal(value, resumed["base_model"][key]), key
    for index, slots in straight["optimizer"]["state"].items():
        for name, value in slots.items():
            assert torch.equal(value, resumed["optimizer"]["state"][index][name]), (index, name)
    assert list_url_folder(f"{s3_bucket}/resumed/checkpoints") == ["checkpoint.torch", *(
        f"model_phase-{i}_end.torch" for i in (2, 3)
    )]
    assert not any(p.name.startswith("s3:") for p in Path.cwd().iterdir())  # never a local folder named 's3:'


@pytest.mark.slow
def test_two_gloo_ranks_write_predictions_and_checkpoints_to_s3(s3_bucket: str, tmp_path: Path) -> None:
    run_training(tmp_path, tiny_config(hooks=_hooks_writing_to(s3_bucket, "ddp")), nproc=2)
    assert list_url_folder(f"{s3_bucket}/ddp/predictions") == [  # the rank parts merged, removed
        "predictions.csv", "predictions.phase00001.csv", "predictions.phase00003.csv"
    ]
    with open_url(f"{s3_bucket}/ddp/predictions/predictions.csv", "r") as remote:
        lines = remote.read().splitlines()
    assert len(lines) == 1 + 64 and len({line.split("\t")[0] for line in lines[1:]}) == 64
    assert _load(f"{s3_bucket}/ddp/checkpoints")["phase_idx"] == 3


@pytest.mark.slow
def test_s3_url_without_s3fs_fails_in_on_start_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run (tools/train.py) where importing s3fs fails, as on a machine without it."""
    blocker = tmp_path / "no_s3fs"
    blocker.mkdir()
    (blocker / "s3fs.py").write_text("raise ImportError('No module named s3fs (blocked by the test)')\n")
    monkeypatch.setenv("PYTHONPATH", f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    hooks = [{"name": "checkpoint", "checkpoint_folder": "s3://bucket/run"}]
    proc = run_training(tmp_path, tiny_config(hooks=hooks), run_dir=tmp_path / "run", check=False)
    assert proc.returncode != 0
    assert (
        "MissingExtraError: CheckpointHook: argument 'checkpoint_folder' = 's3://bucket/run' needs the fsspec "
        "filesystem for 's3://'" in proc.stderr
    ), proc.stderr[-3000:]
    assert "Install it with: pip install s3fs" in proc.stderr
    assert not [p for p in tmp_path.rglob("s3:*")]  # never a local folder named 's3:'
    assert not [p for p in (tmp_path / "run").rglob("*") if p.suffix == ".torch"]


@pytest.mark.slow
def test_a_memory_url_under_torchrun_is_refused_in_on_start_as_not_shared(tmp_path: Path) -> None:
    """memory:// is one process's memory: the ranks' part files could never meet, so on_start says so."""
    proc = run_training(tmp_path, tiny_config(hooks=[{"name": "output_csv", "folder": "memory://run"}]), nproc=2,
                        check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "OutputCSVHook: argument 'folder' = 'memory://run' is not one folder shared by all ranks" in output, (
        output[-3000:]
    )


def test_a_file_another_process_wrote_is_seen_despite_the_listing_cache(s3_bucket: str) -> None:
    """s3fs answers existence from its cached folder listing: a rank's part file, or a checkpoint written by an
    earlier run, must still be found after this process listed the folder."""
    import subprocess
    import sys

    from classy_hooks.core.files import file_exists, read_bytes

    folder = ensure_writable_folder("OutputCSVHook", "folder", f"{s3_bucket}/shared")
    with atomic_write(join(folder, "predictions.csv")) as handle:  # e.g. the previous test phase's file
        handle.write(b"rows")
    assert list_url_folder(folder) == ["predictions.csv"]  # listed, and cached by s3fs, without the part
    code = f"import fsspec; fsspec.filesystem('s3').pipe_file({folder.removeprefix('s3://') + '/part'!r}, b'rank 1')"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert file_exists(join(folder, "part")) and read_bytes(join(folder, "part")) == b"rank 1"


@pytest.mark.parametrize(
    ("config", "hook", "arg"),
    [
        ({"name": "checkpoint", "checkpoint_folder": "gs://bucket/run"}, "CheckpointHook", "checkpoint_folder"),
        ({"name": "output_csv", "folder": "gs://bucket/run"}, "OutputCSVHook", "folder"),
        ({"name": "torchscript", "torchscript_folder": "gs://bucket/run"}, "TorchscriptHook", "torchscript_folder"),
        ({"name": "torch_export", "export_folder": "gs://bucket/run"}, "TorchExportHook", "export_folder"),
        ({"name": "tensorboard_plot", "summary_writer": {"logdir": "gs://bucket/run"}}, "TensorboardPlotHook",
         "summary_writer"),
        ({"name": "model_tensorboard", "summary_writer": {"logdir": "gs://bucket/run"}}, "ModelTensorboardHook",
         "summary_writer"),
    ],
    ids=lambda value: value if isinstance(value, str) and value[0].isupper() else None,
)
def test_every_writing_hook_names_itself_its_argument_and_the_package_of_a_missing_filesystem(
    config: dict[str, Any], hook: str, arg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gs:// without gcsfs (its import made to fail, as where it is not installed): the error comes in on_start."""
    from classy_hooks.core import build_hook
    from classy_hooks.core.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "gcsfs", None)
    monkeypatch.chdir(tmp_path)
    task = make_task([build_hook(config)], num_epochs=1)
    with pytest.raises(MissingExtraError, match=rf"^{hook}: argument '{arg}' = 'gs://bucket/run' needs the fsspec "
                       r"filesystem for 'gs://'.*Install it with: pip install gcsfs$"):
        task.run()
    assert task.num_updates == 0 and os.listdir(tmp_path) == []  # nothing trained, no local folder 'gs:'
