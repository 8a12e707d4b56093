"""TorchscriptHook: arguments, trace vs script, strictness, clear failures, quiet deprecations."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from export_models import DictOutput, VarArgs

from bad_input import assert_reported
from classy_hooks.core import HookConfigError, TaskContractError, build_hook
from classy_hooks.core.deprecations import quiet_jit_deprecations
from classy_hooks.export import ExportError, TorchscriptHook
from helpers import make_task
from untraceable_models import DetectorLike, wrap_model


def run_export(hook: TorchscriptHook, model: torch.nn.Module) -> Any:
    task = make_task()
    task.base_model = model
    hook.on_start(task)
    hook.on_end(task)
    with quiet_jit_deprecations():
        return torch.jit.load(hook.output_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"torchscript_folder": 12}, r"TorchscriptHook: argument 'torchscript_folder' must be a str"),
        ({"torchscript_folder": ""}, r"argument 'torchscript_folder' must not be empty"),
        ({"torchscript_folder": "x", "use_trace": "yes"}, r"argument 'use_trace' must be a bool"),
        ({"torchscript_folder": "x", "trace_strict": 1}, r"argument 'trace_strict' must be a bool"),
        ({"torchscript_folder": "x", "device": 0}, r"argument 'device' must be a str"),
        ({"torchscript_folder": "x", "device": "gpu"}, r"argument 'device' is not a device torch knows"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str):
    with pytest.raises(HookConfigError, match=match):
        TorchscriptHook(**kwargs)


def test_build_from_config_with_classy_vision_names(tmp_path: Path):
    hook = build_hook({"name": "torchscript", "torchscript_folder": str(tmp_path), "use_trace": False})
    assert isinstance(hook, TorchscriptHook) and not hook.use_trace and hook.trace_strict
    assert hook.output_path == str(tmp_path / "torchscript.pt")
    with pytest.raises(HookConfigError, match=r"unknown key 'folder'"):
        build_hook({"name": "torchscript", "torchscript_folder": str(tmp_path), "folder": str(tmp_path)})


def test_script_mode(tmp_path: Path):
    from reference_trainer.models import SmallCNN

    model = SmallCNN(num_classes=3, image_size=8, width=4)
    loaded = run_export(TorchscriptHook(str(tmp_path), use_trace=False), model)
    assert isinstance(loaded, torch.jit.ScriptModule) and "forward" in loaded.code
    x = torch.randn(3, 3, 8, 8)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_trace_strict_is_passed_to_the_tracer(tmp_path: Path):
    with pytest.raises(ExportError, match=r"torch.jit.trace failed on DictOutput: .*pass trace_strict=False"):
        run_export(TorchscriptHook(str(tmp_path)), DictOutput())
    loaded = run_export(TorchscriptHook(str(tmp_path), trace_strict=False), DictOutput())
    assert set(loaded(torch.randn(2, 4))) == {"logits"}


def test_unscriptable_model_names_the_cause(tmp_path: Path):
    with pytest.raises(ExportError, match=r"torch.jit.script failed on VarArgs: .*(variable number|\*args)"):
        run_export(TorchscriptHook(str(tmp_path), use_trace=False), VarArgs())
    assert not (tmp_path / "torchscript.pt").exists()


@pytest.mark.parametrize("use_trace", [True, False])
def test_only_jit_deprecation_notices_are_hidden(tmp_path: Path, use_trace: bool):
    from reference_trainer.models import SmallCNN

    hook = TorchscriptHook(str(tmp_path), use_trace=use_trace)
    task = make_task()
    task.base_model = SmallCNN(num_classes=3, image_size=8, width=4)
    hook.on_start(task)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hook.on_end(task)
        warnings.warn("an unrelated deprecation", DeprecationWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "is deprecated" in m and "torch.jit" in m], messages
    assert "an unrelated deprecation" in messages


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----

@pytest.mark.parametrize(
    ("config", "argument", "fix"),
    [
        pytest.param({"use_trace": "false"}, "use_trace", "Pass true or false", id="use-trace-string"),
        pytest.param({"device": "gpu0"}, "device", 'Pass e.g. "cpu"', id="device-unknown"),
    ],
)
def test_bad_config_is_reported_by_the_constructor(config: dict[str, Any], argument: str, fix: str) -> None:
    with pytest.raises(HookConfigError) as info:
        build_hook({"name": "torchscript", "torchscript_folder": "x", **config})
    assert_reported(info.value, HookConfigError, ("TorchscriptHook", argument, fix))


def test_task_without_base_model_is_reported_at_on_start(tmp_path: Path) -> None:
    hook = build_hook({"name": "torchscript", "torchscript_folder": str(tmp_path)})
    with pytest.raises(TaskContractError) as info:
        hook.on_start(SimpleNamespace())
    assert_reported(info.value, TaskContractError, ("TorchscriptHook", "base_model", "Add them to your task"))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_untraceable_model_is_reported_when_training_is_over(tmp_path: Path) -> None:
    hook = build_hook({"name": "torchscript", "torchscript_folder": str(tmp_path / "ts")})
    task = wrap_model(make_task([hook], num_epochs=1, test_phase_period=0), DetectorLike)
    with pytest.raises(ExportError) as info:
        task.run()
    assert_reported(info.value, ExportError, ("TorchscriptHook", "DetectorLike", "pass trace_strict=False"))
    assert task.num_updates == task.num_train_phases * 128, "the error came before training was over"
