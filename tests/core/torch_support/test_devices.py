"""devices: the device of a model is the device of its tensors (CPU for a model without any)."""

from __future__ import annotations

import torch
from torch import nn

from classy_hooks.core.torch_support.devices import model_device


def test_a_model_is_where_its_first_tensor_is() -> None:
    assert model_device(nn.Linear(2, 2).to("meta")) == torch.device("meta")
    buffers_only = nn.BatchNorm1d(3, affine=False).to("meta")
    assert model_device(buffers_only) == torch.device("meta")


def test_a_model_without_tensors_is_on_the_cpu() -> None:
    assert model_device(nn.ReLU()) == torch.device("cpu")
