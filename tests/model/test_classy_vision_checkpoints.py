"""classy_vision_checkpoints: Classy Vision's EMA hook state (model_state, ema_model_state, `_buffer_` keys)
becomes ExponentialMovingAverageModelHook's, with the model's weights on the right side of the swap."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from classy_hooks.model import CheckpointError, ExponentialMovingAverageModelHook
from classy_hooks.model.classy_vision_checkpoints import (
    adopt_classy_vision_ema_state,
    ema_state_from_classy_vision,
    is_classy_vision_ema_state,
    state_dict_name,
)


@pytest.mark.parametrize(
    ("classy_name", "name"),
    [
        ("blocks.0.bn_buffer_running_mean", "blocks.0.bn.running_mean"),
        ("trunk.1_buffer_num_batches_tracked", "trunk.1.num_batches_tracked"),
        ("_buffer_running_var", "running_var"),  # a BatchNorm model itself (module name "")
        ("fc.weight", "fc.weight"),
        ("x_buffer_y.weight", "x_buffer_y.weight"),  # a module that happens to be called x_buffer_y
    ],
)
def test_state_dict_name(classy_name: str, name: str) -> None:
    assert state_dict_name(classy_name) == name


def classy_vision_state(model: nn.Module, offset: float) -> dict[str, dict[str, torch.Tensor]]:
    """What Classy Vision's EMA hook saves for `model`: training weights and an average `offset` away."""
    named = dict(model.named_parameters())
    for module_name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm1d):
            named.update({f"{module_name}_buffer_{n}": b for n, b in module.named_buffers()})
    training = {k: v.detach().clone() for k, v in named.items()}
    average = {k: (v + offset if v.is_floating_point() else v.clone()) for k, v in training.items()}
    return {"model_state": training, "ema_model_state": average}


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_after_a_train_phase_the_average_is_the_ema_copy() -> None:
    state = classy_vision_state(model(), 0.5)
    ours = ema_state_from_classy_vision(state, model_holds_average=False)
    assert ours["swapped"] is False and ours["num_updates"] == 0
    assert ours["ema_state"]["1.running_mean"] is state["ema_model_state"]["1_buffer_running_mean"]
    assert set(ours["ema_state"]) == set(model().state_dict())


def test_after_a_test_phase_the_model_holds_the_average_and_the_copy_is_the_training_weights() -> None:
    state = classy_vision_state(model(), 0.5)
    ours = ema_state_from_classy_vision(state, model_holds_average=True)
    assert ours["swapped"] is True and ours["ema_state"]["0.weight"] is state["model_state"]["0.weight"]


def test_mismatched_classy_vision_state_is_a_clear_error() -> None:
    state = classy_vision_state(model(), 0.5)
    del state["ema_model_state"]["0.bias"]
    with pytest.raises(CheckpointError, match=r"ExponentialMovingAverageModelHook: .*\['0.bias'\].*damaged"):
        ema_state_from_classy_vision(state, model_holds_average=False)


def test_only_classy_vision_s_state_is_recognised() -> None:
    assert is_classy_vision_ema_state(classy_vision_state(model(), 0.5))
    assert not is_classy_vision_ema_state({"ema_state": {}, "swapped": False, "num_updates": 3})
    hook = ExponentialMovingAverageModelHook(0.9, device="cpu")
    assert not adopt_classy_vision_ema_state(hook.state, SimpleNamespace(train=True))
    assert hook.state.ema_state == {}


@pytest.mark.parametrize("train", [True, False], ids=["after_train_phase", "after_test_phase"])
def test_the_ema_hook_resumes_classy_vision_s_state_and_saves_none_of_its_keys(train: bool) -> None:
    net = model()
    state = classy_vision_state(net, 0.5)
    classy_name = {state_dict_name(k): k for k in state["model_state"]}
    if not train:  # Classy Vision's test phase: the model holds the average
        with torch.no_grad():
            for name, tensor in net.state_dict().items():
                tensor.copy_(state["ema_model_state"][classy_name[name]])
    hook = ExponentialMovingAverageModelHook(0.9, device="cpu")
    hook.set_classy_state(copy.deepcopy(state))  # the hook adopts the tensors (no copy) and swaps into them
    task = SimpleNamespace(base_model=net, train=train)
    hook.on_start(task)
    saved = hook.get_classy_state()
    assert not {"model_state", "ema_model_state"} & set(saved)
    assert saved["swapped"] is (not train)

    task.train = True  # the next train phase: the model must hold Classy Vision's training weights
    hook.on_phase_start(task)
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, state["model_state"][classy_name[name]]), name
    task.train = False  # a test phase: the average
    hook.on_phase_start(task)
    assert torch.equal(net.state_dict()["0.weight"], state["ema_model_state"]["0.weight"])
