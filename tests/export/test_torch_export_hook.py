"""TorchExportHook: arguments, dynamic batch (inputs of every structure, *args), fixed batch, clear failures."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from export_models import DataDependent, FixedBatch, HeadsVarArgs, PairInput
from torch.utils import _pytree as pytree

from bad_input import assert_reported
from classy_hooks.core import HookConfigError, LastBatch, build_hook
from classy_hooks.export import ExportError, TorchExportHook
from classy_hooks.export.torch_export_hook import dynamic_batch_shapes
from dev_dependencies import dev_dependency
from helpers import make_task, subprocess_env
from untraceable_models import DataDependent as DataDependentWrapper
from untraceable_models import wrap_model


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


def test_varargs_model_exports_with_a_dynamic_batch(tmp_path: Path):
    """`forward(*args)` (every Classy Vision model with heads): dynamic_shapes grouped under `args`."""
    model = HeadsVarArgs().eval()
    program = run_export(TorchExportHook(str(tmp_path)), model)
    with torch.no_grad():
        for size in (1, 3, 9):
            x = torch.randn(size, 3, 8, 8)
            torch.testing.assert_close(program.module()(x), model(x))


def test_tuple_input_of_the_last_batch_is_one_argument_with_every_batch_dim_dynamic(tmp_path: Path):
    model = PairInput().eval()
    task = make_task()
    task.base_model = model
    pair = (torch.randn(5, 4), torch.randn(5, 2))
    task.last_batch = LastBatch(None, None, None, {"input": pair, "target": torch.zeros(5)}, {})
    hook = TorchExportHook(str(tmp_path))
    hook.on_start(task)
    hook.on_end(task)
    module = torch.export.load(hook.output_path).module()
    with torch.no_grad():
        for size in (2, 7):
            other = (torch.randn(size, 4), torch.randn(size, 2))
            torch.testing.assert_close(module(other), model(other))


class OneTensor(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class StarArgs(torch.nn.Module):
    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return args[0] + args[1]


class FirstAndRest(torch.nn.Module):
    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return x + rest[0]


class DictArgument(torch.nn.Module):
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["image"] * 2


class PairAndScale(torch.nn.Module):
    def forward(self, pair: tuple[torch.Tensor, torch.Tensor], scale: float = 2.0) -> torch.Tensor:
        return pair[0] * scale + pair[1]


def ones() -> torch.Tensor:
    return torch.ones(3, 2)


AUTO = torch.export.Dim.AUTO


@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        (OneTensor(), (ones(),), {"x": {0: AUTO}}),
        (StarArgs(), (ones(), ones()), {"args": ({0: AUTO}, {0: AUTO})}),
        (FirstAndRest(), (ones(), ones()), {"x": {0: AUTO}, "rest": ({0: AUTO},)}),
        (DictArgument(), ({"image": ones()},), {"batch": {"image": {0: AUTO}}}),
        (PairAndScale(), ((ones(), ones()), 3.0), {"pair": ({0: AUTO}, {0: AUTO}), "scale": None}),
    ],
    ids=["tensor", "star-args", "tensor-and-star-args", "dict", "tuple-and-float"],
)
def test_dynamic_shapes_follow_the_forward_signature(module: torch.nn.Module, args: tuple[Any, ...], expected: Any):
    """The structure torch.export checks: one entry per bound parameter, *args grouped, containers mirrored."""
    shapes = dynamic_batch_shapes(module, args)
    assert shapes == expected
    program = torch.export.export(module, args, dynamic_shapes=shapes)  # torch.export accepts the structure
    bigger = pytree.tree_map(lambda v: torch.ones(5, 2) if isinstance(v, torch.Tensor) else v, args)
    torch.testing.assert_close(program.module()(*bigger), module(*bigger))


@pytest.mark.slow
def test_importing_the_package_loads_no_sympy():
    """torch.fx's symbolic shapes (and sympy behind them) load only when a program is exported (issue 15)."""
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import classy_hooks.export\n"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] == 'sympy' or 'symbolic_shapes' in m))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _classy_vision_model_with_a_head() -> Any:
    """A real Classy Vision model with a head: a `ClassyModelHeadExecutorWrapper` whose forward is `(*args, **kwargs)`."""
    models = dev_dependency(
        "classy_vision.models", reason="Classy Vision is a test-only dependency of the dev venv (no torchvision here)"
    )
    torch.manual_seed(0)
    head = {"name": "fully_connected", "unique_id": "default_head", "num_classes": 2, "fork_block": "block0-0"}
    config = {"name": "resnext", "num_blocks": [1], "init_planes": 8, "reduction": 1, "small_input": True}
    return models.build_model({**config, "basic_layer": True, "heads": [{**head, "in_plane": 8}]}).eval()


def test_a_classy_vision_model_with_heads_exports_a_dynamic_batch_from_the_batch_its_task_saw(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """As under ClassificationTask: a step sees a batch, `last_batch` is None by `on_end`; any batch size runs."""
    model = _classy_vision_model_with_a_head()
    task = make_task()
    task.base_model = model
    hook = TorchExportHook(str(tmp_path))
    caplog.set_level(logging.WARNING, logger="classy_hooks.export")
    hook.on_start(task)
    images = torch.randn(6, 3, 16, 16)
    task.last_batch = LastBatch(None, None, None, {"input": images, "target": torch.zeros(6)}, {})
    hook.on_step(task)
    task.last_batch = None
    hook.on_end(task)
    assert not caplog.records  # the real batch: no fallback to Classy Vision's (3, 224, 224)
    program = torch.export.load(hook.output_path)
    module = program.module()
    with torch.no_grad():
        for size in (1, 3, 11):
            x = torch.randn(size, 3, 16, 16)
            torch.testing.assert_close(module(x), model(x))


def test_exporting_a_classy_vision_model_from_its_default_input_shape_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """No batch seen: Classy Vision's (3, 224, 224) for a model that declares no shape is used, never silently."""
    model = _classy_vision_model_with_a_head()
    task = make_task()
    task.base_model = model
    hook = TorchExportHook(str(tmp_path))
    caplog.set_level(logging.WARNING, logger="classy_hooks.export")
    hook.on_start(task)
    hook.on_end(task)
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("TorchExportHook: no batch was seen")
    assert "4 samples of ResNeXt.input_shape (3, 224, 224), Classy Vision's default" in warning
    assert "set base_model.input_shape to its per-sample shape" in warning
    with torch.no_grad():
        x = torch.randn(2, 3, 224, 224)
        torch.testing.assert_close(torch.export.load(hook.output_path).module()(x), model(x))


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----

def test_int_dynamic_batch_is_reported_by_the_constructor() -> None:
    with pytest.raises(HookConfigError) as info:
        build_hook({"name": "torch_export", "export_folder": "x", "dynamic_batch": 1})
    assert_reported(info.value, HookConfigError, ("TorchExportHook", "dynamic_batch", "Pass true or false"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_device_without_cuda_is_reported_at_on_start(tmp_path: Path) -> None:
    task = make_task([build_hook({"name": "torch_export", "export_folder": str(tmp_path), "device": "cuda:0"})])
    with pytest.raises(HookConfigError) as info:
        task.run()
    assert_reported(info.value, HookConfigError, ("TorchExportHook", "device", "cuda:0", 'Pass device="cpu"'))
    assert task.num_updates == 0


def test_data_dependent_model_is_reported_when_training_is_over(tmp_path: Path) -> None:
    hook = build_hook({"name": "torch_export", "export_folder": str(tmp_path / "export")})
    task = wrap_model(make_task([hook], num_epochs=1), DataDependentWrapper)
    with pytest.raises(ExportError) as info:
        task.run()
    assert_reported(info.value, ExportError, ("TorchExportHook", "DataDependent", "torch.export", "use torch.cond"))
    assert task.num_updates == task.num_train_phases * 128, "the error came before training was over"
