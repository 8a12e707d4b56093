"""TorchExportHook: arguments, dynamic batch, fixed batch, and clear failures."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from export_models import DataDependent, FixedBatch

from classy_hooks.core import HookConfigError, build_hook
from classy_hooks.export import ExportError, TorchExportHook
from helpers import make_task


def run_export(hook: TorchExportHook, model: torch.nn.Module) -> torch.export.ExportedProgram:
    task = make_task()
    task.base_model = model
    hook.on_start(task)
    hook.on_end(task)
    return torch.export.load(hook.output_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"export_folder": None}, r"TorchExportHook: argument 'export_folder' must be a str"),
        ({"export_folder": ""}, r"argument 'export_folder' must not be empty"),
        ({"export_folder": "x", "dynamic_batch": "true"}, r"argument 'dynamic_batch' must be a bool"),
        ({"export_folder": "x", "strict": None}, r"argument 'strict' must be a bool"),
        ({"export_folder": "x", "device": ["cpu"]}, r"argument 'device' must be a str"),
        ({"export_folder": "x", "device": "tpu-ish"}, r"argument 'device' is not a device torch knows"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str):
    with pytest.raises(HookConfigError, match=match):
        TorchExportHook(**kwargs)


def test_build_from_config(tmp_path: Path):
    hook = build_hook({"name": "torch_export", "export_folder": str(tmp_path)})
    assert isinstance(hook, TorchExportHook) and hook.dynamic_batch and not hook.strict and hook.device == "cpu"
    assert hook.output_path == str(tmp_path / "exported_program.pt2")


def test_dynamic_batch_runs_any_batch_size(tmp_path: Path):
    from reference_trainer.models import SmallCNN

    model = SmallCNN(num_classes=3, image_size=8, width=4).eval()
    program = run_export(TorchExportHook(str(tmp_path)), model)
    module = program.module()
    with torch.no_grad():
        for size in (1, 3, 17):
            x = torch.randn(size, 3, 8, 8)
            torch.testing.assert_close(module(x), model(x))


def test_static_batch_when_asked(tmp_path: Path):
    from reference_trainer.models import SmallCNN

    program = run_export(TorchExportHook(str(tmp_path), dynamic_batch=False), SmallCNN(3, image_size=8, width=4))
    shape = next(n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder" and n.name == "x")
    assert shape[0] == 4  # the seeded example batch from input_shape


def test_model_that_fixes_the_batch_exports_static_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="classy_hooks.export")
    model = FixedBatch().eval()
    program = run_export(TorchExportHook(str(tmp_path)), model)
    assert any("fixes its batch size" in r.getMessage() for r in caplog.records)
    x = torch.randn(4, 4)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x))


@pytest.mark.parametrize("strict", [False, True])
def test_data_dependent_control_flow_is_a_clear_error(tmp_path: Path, strict: bool):
    with pytest.raises(ExportError, match=r"torch.export.export failed on DataDependent: \w+.*torch.cond"):
        run_export(TorchExportHook(str(tmp_path), strict=strict), DataDependent())
    assert not (tmp_path / "exported_program.pt2").exists()
