"""Bad input stops a run before anything is written, and nothing an earlier run wrote is lost.

Each hook's own bad-input cases (which error class, naming hook, argument and fix) live in its unit
tests. What only a whole run shows is the promise across hooks: a run whose folders hold an earlier
run's outputs (checkpoints, TensorBoard events, predictions, exported models) and that is given one
bad input stops in `on_start`, before its first step, and every file of the earlier run is still
there, byte for byte. Unwritable folders are real: those cases run in one child process that has
dropped root's DAC capabilities (root would otherwise write anywhere).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from bad_input import assert_reported
from classy_hooks.core import ClassyHook, HookConfigError, ServerUnreachableError, build_hook
from classy_hooks.model import ExponentialMovingAverageModelHook
from helpers import ROOT, free_port, make_task, subprocess_env

pytestmark = pytest.mark.slow  # ~15 s in all: one child process, one full run, a few runs stopped at on_start


def output_hooks(root: Path) -> list[ClassyHook]:
    """Every hook that writes files, each into its own folder under `root`."""
    configs: list[dict[str, Any]] = [
        {"name": "checkpoint", "checkpoint_folder": str(root / "ckpt")},
        {"name": "tensorboard_plot", "summary_writer": {"logdir": str(root / "tb")}},
        {"name": "model_tensorboard", "summary_writer": {"logdir": str(root / "graph")}},
        {"name": "output_csv", "folder": str(root / "csv")},
        {"name": "torchscript", "torchscript_folder": str(root / "ts")},
        {"name": "torch_export", "export_folder": str(root / "export")},
    ]
    return [build_hook(config) for config in configs]


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folders of a finished one-epoch run with every writing hook."""
    root = tmp_path_factory.mktemp("earlier")
    make_task(output_hooks(root), num_epochs=1).run()
    (root / "afile").write_text("not a folder")
    return root


def _foreign_ema(root: Path) -> ClassyHook:
    hook = ExponentialMovingAverageModelHook(decay=0.9)
    hook.set_classy_state({"ema_state": {"fc.weight": torch.zeros(4, 4)}, "num_updates": 3, "swapped": False})
    return hook


#: One bad hook per case, added after the writing hooks: (make the bad hook, error class, what the message names).
BAD: dict[str, tuple[Callable[[Path], ClassyHook], type[Exception], tuple[str, ...]]] = {
    "checkpoint-folder-is-a-file": (
        lambda root: build_hook({"name": "checkpoint", "checkpoint_folder": str(root / "afile")}),
        HookConfigError,
        ("CheckpointHook", "checkpoint_folder", "Pass a folder path"),
    ),
    "tensorboard_plot-logdir-under-a-file": (
        lambda root: build_hook({"name": "tensorboard_plot", "summary_writer": {"logdir": str(root / "afile/tb")}}),
        HookConfigError,
        ("TensorboardPlotHook", "summary_writer", "Pass a folder you can write to"),
    ),
    "output_csv-folder-is-a-file": (
        lambda root: build_hook({"name": "output_csv", "folder": str(root / "afile")}),
        HookConfigError,
        ("OutputCSVHook", "folder", "Pass a folder path"),
    ),
    "visdom-server-unreachable": (
        lambda root: build_hook({"name": "visdom", "server": "http://127.0.0.1", "port": free_port()}),
        ServerUnreachableError,
        ("VisdomHook", "server", "Start one"),
    ),
    "ema-state-of-another-model": (
        _foreign_ema,
        HookConfigError,
        ("ExponentialMovingAverageModelHook", "EMA state", "Resume with the same model"),
    ),
}
if not torch.cuda.is_available():  # on a GPU machine cuda:0 is a good device
    BAD["torch_export-device-cuda-unavailable"] = (
        lambda root: build_hook({"name": "torch_export", "export_folder": str(root / "export"), "device": "cuda:0"}),
        HookConfigError,
        ("TorchExportHook", "device", 'Pass device="cpu"'),
    )


@pytest.mark.parametrize("case_id", list(BAD))
def test_one_bad_input_stops_the_run_before_its_first_step_and_keeps_earlier_outputs(
    case_id: str, earlier_run: Path, tmp_path: Path
) -> None:
    root = tmp_path / "run"
    shutil.copytree(earlier_run, root)
    before = files_under(root)
    make_bad, error, mentions = BAD[case_id]
    task = make_task([*output_hooks(root), make_bad(root)], num_epochs=1)
    with pytest.raises(error) as info:
        task.run()
    assert_reported(info.value, error, mentions)
    assert task.num_updates == 0 and task.last_batch is None, "a training step ran before the error"
    after = files_under(root)
    lost = sorted(name for name in before if after.get(name) != before[name])
    assert not lost, f"files of the earlier run were lost or changed: {lost}"


# ---- unwritable folders: real permission errors in a child without root's DAC capabilities -------

UNWRITABLE = {
    "checkpoint-folder-read-only": ({"name": "checkpoint", "checkpoint_folder": "{ro}"}, "CheckpointHook", "checkpoint_folder"),
    "checkpoint-folder-in-read-only-parent": (
        {"name": "checkpoint", "checkpoint_folder": "{ro}/new"},
        "CheckpointHook",
        "checkpoint_folder",
    ),
    "tensorboard_plot-logdir-read-only": (
        {"name": "tensorboard_plot", "summary_writer": {"logdir": "{ro}"}},
        "TensorboardPlotHook",
        "summary_writer",
    ),
    "model_tensorboard-logdir-read-only": (
        {"name": "model_tensorboard", "summary_writer": {"logdir": "{ro}"}},
        "ModelTensorboardHook",
        "summary_writer",
    ),
    "torchscript-folder-read-only": ({"name": "torchscript", "torchscript_folder": "{ro}"}, "TorchscriptHook", "torchscript_folder"),
    "torch_export-folder-read-only": ({"name": "torch_export", "export_folder": "{ro}"}, "TorchExportHook", "export_folder"),
    "output_csv-folder-read-only": ({"name": "output_csv", "folder": "{ro}"}, "OutputCSVHook", "folder"),
}

CHILD = textwrap.dedent(
    """
    import json, sys
    from classy_hooks.core import build_hook
    from helpers import make_task
    import classy_hooks.model, classy_hooks.logging, classy_hooks.export  # imports done before dropping rights
    cases = json.loads(sys.argv[1])
    results = {}
    for case_id, config in cases.items():
        task = make_task([build_hook(config)], num_epochs=1)
        try:
            task.run()
        except BaseException as exc:
            results[case_id] = {"type": type(exc).__name__, "message": str(exc), "num_updates": task.num_updates}
        else:
            results[case_id] = {"type": None, "message": "", "num_updates": task.num_updates}
    print(json.dumps(results))
    """
)

SETPRIV = shutil.which("setpriv")


@pytest.fixture(scope="module")
def unwritable_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("unwritable")
    ro = base / "ro"
    ro.mkdir()
    (ro / "kept.txt").write_text("written by an earlier run")
    ro.chmod(0o500)
    cases = {
        case_id: json.loads(json.dumps(config).replace("{ro}", str(ro))) for case_id, (config, _, _) in UNWRITABLE.items()
    }
    # As root the folder is writable anyway: drop the capabilities that bypass file permissions (util-linux setpriv).
    prefix = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"] if os.geteuid() == 0 else []
    assert SETPRIV is not None or not prefix, "running as root needs util-linux setpriv to make a folder unwritable"
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", CHILD, json.dumps(cases)],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        ro.chmod(0o700)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (ro / "kept.txt").read_text() == "written by an earlier run"
    results: dict[str, dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


@pytest.mark.parametrize("case_id", list(UNWRITABLE))
def test_unwritable_folder_is_reported_at_on_start(case_id: str, unwritable_results: dict[str, dict[str, Any]]) -> None:
    _, hook, argument = UNWRITABLE[case_id]
    fix = "Pass a folder you can write to" if case_id.endswith("-in-read-only-parent") else "Fix its permissions"
    result = unwritable_results[case_id]
    assert result["type"] == "HookConfigError", result
    assert result["num_updates"] == 0, "a training step ran before the error"
    for word in (hook, argument, "Permission denied", fix):
        assert word in result["message"], f"the message does not mention {word!r}: {result['message']}"
