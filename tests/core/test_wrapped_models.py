"""unwrap_model / plain_state_dict: hooks see the module the user wrote through compile, DDP and DataParallel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classy_hooks.core.wrapped_models import has_wrapper_keys, is_wrapper, plain_key, plain_state_dict, unwrap_model


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_unwrap_sees_through_torch_compile_and_data_parallel() -> None:
    model = _model()
    compiled = torch.compile(model, backend="eager")
    assert is_wrapper(compiled) and not is_wrapper(model)
    assert unwrap_model(compiled) is model
    assert unwrap_model(nn.DataParallel(compiled)) is model
    assert unwrap_model(torch.compile(nn.DataParallel(model), backend="eager")) is model
    assert unwrap_model(model) is model


def test_compiled_state_dict_keys_become_the_plain_modules() -> None:
    model = _model()
    compiled = torch.compile(nn.DataParallel(model), backend="eager")
    wrapped_keys = list(compiled.state_dict())
    assert all(k.startswith("_orig_mod.module.") for k in wrapped_keys)
    assert list(plain_state_dict(compiled.state_dict())) == list(model.state_dict())


def test_a_compiled_submodule_loses_its_inner_segment_and_a_submodule_named_module_stays() -> None:
    assert plain_key("backbone._orig_mod.conv.weight") == "backbone.conv.weight"
    assert plain_key("module._orig_mod.fc.bias") == "fc.bias"
    assert plain_key("head.module.weight") == "head.module.weight"
    assert plain_key("module") == "module"


def test_colliding_keys_are_an_error() -> None:
    with pytest.raises(ValueError, match=r"'fc\.weight' and '_orig_mod\.fc\.weight' both map to 'fc\.weight'"):
        plain_state_dict({"fc.weight": 1, "_orig_mod.fc.weight": 2})


def test_has_wrapper_keys_is_true_only_when_plain_key_changes_a_key() -> None:
    assert has_wrapper_keys(["module.fc.weight"]) and has_wrapper_keys(["a._orig_mod.b", "c"])
    assert not has_wrapper_keys(["fc.weight", "block.module.bias", "orig_mod_x.w", "a._orig_mod"])
    assert not has_wrapper_keys([])
