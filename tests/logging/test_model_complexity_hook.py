"""ModelComplexityHook: hand-computed counts, torchvision's published GFLOPS, unsupported operators in the log."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bad_input import assert_reported, assert_warned, run_to_the_end_and_warnings
from classy_hooks.core import HookConfigError, TaskContractError, build_hook
from classy_hooks.logging import ModelComplexityHook
from dev_dependencies import dev_dependency
from helpers import make_task

LOGGER = "classy_hooks.logging.model_complexity_hook"


def _task(model: nn.Module) -> SimpleNamespace:
    return SimpleNamespace(base_model=model, last_batch=None)


def test_constructors_and_bad_config() -> None:
    assert ModelComplexityHook().num_flops is None
    assert isinstance(ModelComplexityHook.from_config({}), ModelComplexityHook)
    assert isinstance(build_hook({"name": "model_complexity"}), ModelComplexityHook)
    with pytest.raises(HookConfigError, match="unknown key 'input_shape'"):
        build_hook({"name": "model_complexity", "input_shape": [3, 224, 224]})
    with pytest.raises(TaskContractError, match=r"ModelComplexityHook.*base_model"):
        ModelComplexityHook().on_start(object())


class ConvLinear(nn.Module):
    """conv 3->8 (3x3, pad 1) on 3x16x16, ReLU, linear 2048->10: counts computed by hand below."""

    input_shape = (3, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(1))


def test_hand_computed_counts_for_a_small_conv_and_linear_net(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    hook = ModelComplexityHook()
    model = ConvLinear()
    model.train()
    hook.on_start(_task(model))
    conv_macs = (8 * 16 * 16) * (3 * 3 * 3)  # output elements x multiply-adds per element = 55,296
    linear_macs = 2048 * 10  # 20,480 (the bias add is not a multiply-add)
    assert hook.num_flops == conv_macs + linear_macs == 75_776
    assert hook.flops_by_operator == {"conv": conv_macs, "linear": linear_macs}
    assert hook.num_activations == 8 * 16 * 16 + 10  # conv and linear outputs
    assert hook.num_parameters == (8 * 27 + 8) + (2048 * 10 + 10)
    assert hook.unsupported_ops == {}
    assert hook.get_summary() == pytest.approx(
        {"FLOPS(M)": 0.075776, "num_activations(M)": 0.002058, "num_parameters(M)": 0.020714}
    )
    assert model.training  # counted in eval mode, mode restored
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "75,776 FLOPs per sample (fvcore unit: 1 multiply-add = 1 FLOP" in text


def test_a_linear_layer_alone() -> None:
    model = nn.Linear(10, 5)
    model.input_shape = (10,)
    hook = ModelComplexityHook()
    hook.on_start(_task(model))
    assert (hook.num_flops, hook.num_activations, hook.num_parameters) == (50, 5, 55)


def test_operators_fvcore_cannot_count_are_listed_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    hook = ModelComplexityHook()
    hook.on_start(make_task())  # SmallCNN: max pooling has no formula
    assert hook.unsupported_ops == {"aten::max_pool2d": 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("counted as 0: aten::max_pool2d x1" in w for w in warnings)


def test_input_from_the_first_batch_when_the_model_has_no_input_shape() -> None:
    hook = ModelComplexityHook()
    task = make_task([hook], num_epochs=1)
    del task.base_model.input_shape
    task.run()
    reference = ModelComplexityHook()
    reference.on_start(make_task())  # same model with input_shape
    assert hook.num_flops == reference.num_flops and hook.num_flops is not None and hook.num_flops > 0


def test_a_model_fvcore_cannot_run_costs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    class Untraceable(nn.Module):
        input_shape = (4,)

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] == 1:  # the example input from input_shape is one sample
                raise RuntimeError("this model refuses a batch of one sample")
            return self.fc(x)

    hook = ModelComplexityHook()
    hook.on_start(_task(Untraceable()))
    assert hook.num_parameters == 10 and hook.num_flops is None
    assert any("fvcore could not count FLOPs" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
def test_matches_torchvision_published_gflops(name: str) -> None:
    """torchvision's weights metadata ("_ops", GFLOPS at 224x224) counts multiply-adds of
    convolutions and matrix products only (pytorch/vision PR #6936), so that part of our count
    must match within 2 %; the total adds BatchNorm and pooling (4.4 % more for mobilenet_v2)."""
    torchvision = dev_dependency("torchvision", reason="torchvision is not installed: the floor run (torch 2.13.0) has none, as torchvision does not import beside torch 2.13")

    weights = torchvision.models.get_model_weights(name).DEFAULT
    model = torchvision.models.get_model(name, weights=None)
    model.input_shape = (3, 224, 224)
    hook = ModelComplexityHook()
    hook.on_start(_task(model))
    published = weights.meta["_ops"] * 1e9
    conv_and_matmul = hook.flops_by_operator["conv"] + hook.flops_by_operator["linear"]
    assert conv_and_matmul == pytest.approx(published, rel=0.02)
    assert hook.num_flops is not None and published <= hook.num_flops <= 1.05 * published
    assert hook.num_parameters == weights.meta["num_params"]


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----


def test_task_without_base_model_is_reported_at_on_start() -> None:
    with pytest.raises(TaskContractError) as info:
        build_hook({"name": "model_complexity"}).on_start(SimpleNamespace(last_batch=None))
    assert_reported(info.value, TaskContractError, ("ModelComplexityHook", "base_model", "Add them to your task"))


def test_bad_input_shape_is_a_warning_and_training_continues(caplog: pytest.LogCaptureFixture) -> None:
    task = make_task([build_hook({"name": "model_complexity"})], num_epochs=1)
    task.base_model.input_shape = "3x16x16"
    warnings = run_to_the_end_and_warnings(task, caplog)
    assert_warned(warnings, ("ModelComplexityHook", "input_shape must be a sequence", "FLOPs and activations not counted"))
