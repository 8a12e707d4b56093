"""Story: a model compiled with `torch.compile(backend="aot_eager")` goes through all thirteen hooks. The run
finishes, the complexity and graph hooks see the plain module, the TorchScript and torch.export files load and
match the eager model, and the checkpoint holds the plain module's keys and loads into an uncompiled model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from classy_hooks.core import build_hooks
from classy_hooks.core.deprecations import quiet_jit_deprecations
from classy_hooks.model import load_checkpoint
from helpers import ROOT, make_task, run_training, tiny_config
from reference_trainer.models import build_model
from visdom_server import VisdomServer

COMPILE = {"backend": "aot_eager"}


def every_hook(port: int, run_dir: Path | str, env: str) -> list[dict[str, Any]]:
    """The demo's thirteen hooks on the tiny data set, writing under `run_dir`, Visdom env `env` on `port`."""
    hooks = json.loads((ROOT / "tools" / "configs" / "demo.json").read_text())["hooks"]
    assert len(hooks) == 13
    for hook in hooks:
        for key, value in hook.items():
            if isinstance(value, str):
                hook[key] = value.replace("{run_dir}", str(run_dir))
            if isinstance(value, dict) and "logdir" in value:
                value["logdir"] = value["logdir"].replace("{run_dir}", str(run_dir))
        if hook["name"] == "visdom":
            hook["port"], hook["env"] = str(port), env
        if hook["name"] == "precise_bn":
            hook["num_samples"] = 32
    return hooks


def uncompiled_model(config: dict[str, Any]) -> torch.nn.Module:
    data = config["dataset"]
    return build_model(config["model"], data["image_size"], data["num_classes"])


def load_exports(export_dir: Path) -> dict[str, Any]:
    with quiet_jit_deprecations():
        scripted = torch.jit.load(str(export_dir / "torchscript.pt"))
    return {"torchscript": scripted, "torch_export": torch.export.load(str(export_dir / "exported_program.pt2")).module()}


def check_exports_match(export_dir: Path, model: torch.nn.Module) -> None:
    """Both files run the eval-mode `model` (uncompiled, final weights) exactly, on two batch sizes."""
    model.eval()
    x = torch.randn(7, *model.input_shape, generator=torch.Generator().manual_seed(3))
    for name, exported in load_exports(export_dir).items():
        with torch.no_grad():
            for batch in (x, x[:2]):
                torch.testing.assert_close(exported(batch), model(batch), rtol=1e-4, atol=1e-5, msg=name)


def check_plain_checkpoint(checkpoint_dir: Path, config: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The checkpoint's model and EMA keys are the plain module's and load strictly into uncompiled models.

    Returns the trained model and the EMA model: after the final test phase the run's model holds
    the EMA weights (the EMA hook swaps them in for test phases), so that is what the exports hold.
    """
    state = load_checkpoint(str(checkpoint_dir))["classy_state_dict"]
    keys = list(state["base_model"])
    assert keys and not [k for k in keys if "_orig_mod" in k or k.startswith("module.")], keys
    trained = uncompiled_model(config)
    trained.load_state_dict(state["base_model"], strict=True)
    ema_state = state["hooks"]["ExponentialMovingAverageModelHook"]["ema_state"]
    assert not [k for k in ema_state if "_orig_mod" in k], list(ema_state)
    ema = uncompiled_model(config)
    ema.load_state_dict({**state["base_model"], **ema_state}, strict=True)
    return trained, ema


@pytest.mark.slow
def test_compiled_run_through_every_hook_exports_and_checkpoints_the_plain_model(
    tmp_path: Path, shared_visdom_server: VisdomServer
) -> None:
    """The reference trainer's `"compile"` option: the loop runs the compiled model, the hooks get base_model."""
    run_dir = tmp_path / "run"
    config = tiny_config(compile=COMPILE, hooks=every_hook(shared_visdom_server.port, "{run_dir}", "compiled_run"))
    proc = run_training(tmp_path, config, run_dir=run_dir, timeout=600)
    log = proc.stdout + proc.stderr
    assert "Model compiled with torch.compile" in log
    for line in ("TorchscriptHook: wrote", "TorchExportHook: wrote", "ModelTensorboardHook: wrote the graph"):
        assert line in log, line
    assert "FLOPs per sample" in log and "ProfilerHook: forward and backward" in log
    assert "Traceback" not in log and "could not" not in log, log[-3000:]
    _, ema = check_plain_checkpoint(run_dir / "checkpoints", config)
    check_exports_match(run_dir / "export", ema)
    assert shared_visdom_server.lines("compiled_run:loss", "compiled_run"), "the Visdom hook plotted the loss"


@pytest.mark.slow
def test_hooks_given_the_compiled_module_itself_see_through_it(
    tmp_path: Path, shared_visdom_server: VisdomServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop that hands the hooks the `torch.compile` wrapper as base_model (an OptimizedModule)."""
    caplog.set_level(logging.INFO)
    hooks = build_hooks(every_hook(shared_visdom_server.port, tmp_path, "compiled_base_model"))
    task = make_task(hooks)
    plain = task.base_model
    task.base_model = torch.compile(plain, **COMPILE)
    assert type(task.base_model).__name__ == "OptimizedModule"
    task.run()
    messages = [r.getMessage() for r in caplog.records]
    text = "\n".join(messages)
    assert "ModelComplexityHook: SmallCNN has" in text and "FLOPs per sample" in text, text[-3000:]
    assert "ModelTensorboardHook: wrote the graph of SmallCNN." in text
    assert "TorchscriptHook: wrote" in text and "TorchExportHook: wrote" in text
    assert "ProfilerHook: forward and backward of OptimizedModule" in text  # the compiled pass is what trains
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "could not" in r.getMessage()]
    _, ema = check_plain_checkpoint(tmp_path / "checkpoints", tiny_config())
    for key, value in plain.state_dict().items():  # the run ends holding the EMA weights (last phase: test)
        assert torch.equal(ema.state_dict()[key], value), key
    check_exports_match(tmp_path / "export", plain)
    assert shared_visdom_server.lines("compiled_base_model:loss", "compiled_base_model")


def test_ema_state_of_a_compiled_base_model_has_the_plain_keys() -> None:
    """The EMA hook given the compiled wrapper names its state after the plain module (checkpoints load uncompiled)."""
    from classy_hooks.model import ExponentialMovingAverageModelHook

    hook = ExponentialMovingAverageModelHook(decay=0.9)
    task = make_task([hook], num_epochs=1)
    plain = task.base_model
    task.base_model = torch.compile(plain, **COMPILE)
    hook.on_start(task)
    assert set(hook.get_classy_state()["ema_state"]) <= set(plain.state_dict())
