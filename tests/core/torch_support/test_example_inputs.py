"""example_inputs: the one builder of example inputs, used by the logging hooks and the export hooks alike."""

from __future__ import annotations

import collections
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils import _pytree as pytree

from classy_hooks.core import LastBatch, TaskContractError
from classy_hooks.core.torch_support import example_inputs
from classy_hooks.export import _model_export
from classy_hooks.logging import example_input


def _model(**attributes: Any) -> nn.Module:
    model = nn.Linear(4, 2)
    for name, value in attributes.items():
        setattr(model, name, value)
    return model


def _same(a: Any, b: Any) -> bool:
    leaves_a, spec_a = pytree.tree_flatten(a)
    leaves_b, spec_b = pytree.tree_flatten(b)
    return spec_a == spec_b and all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(leaves_a, leaves_b)
    )


@pytest.mark.parametrize(
    "attributes",
    [
        {"input_shape": (3, 5)},
        {"input_shape": [(4,), (2, 3)]},  # two positional tensors
        {"input_shape": (4,), "input_key": "image"},  # {input_key: tensor}
    ],
    ids=["one-shape", "two-shapes", "input-key"],
)
def test_shapes_give_a_seeded_normal_batch(attributes: dict[str, Any]) -> None:
    model = _model(**attributes)
    ours = example_inputs.example_from_shape("H", model, 3)
    assert _same(ours, example_inputs.example_from_shape("H", model, 3))  # seeded: the same every time
    tensors = [t for t in pytree.tree_leaves(ours) if isinstance(t, torch.Tensor)]
    assert all(t.shape[0] == 3 and t.std() > 0.5 for t in tensors)  # a batch of 3, not zeros


@pytest.mark.parametrize(
    ("attributes", "match"),
    [
        ({"input_shape": "3x224x224"}, r"H: base_model.input_shape must be a sequence of positive ints"),
        ({"input_shape": (3, 0)}, r"must be a sequence of positive ints .* got \(3, 0\)"),
        ({"input_shape": (3, True)}, r"must be a sequence of positive ints"),
        ({"input_shape": (4,), "input_key": ["a", "b"]}, r"H: base_model.input_key is \['a', 'b'\]"),
    ],
)
def test_bad_shapes_and_keys_are_a_task_contract_error(attributes: dict[str, Any], match: str) -> None:
    with pytest.raises(TaskContractError, match=match):
        example_inputs.example_from_shape("H", _model(**attributes), 1)


@pytest.mark.parametrize(
    "value",
    [torch.randn(6, 4), (torch.randn(6, 4), torch.randint(0, 5, (6, 2))), {"image": torch.randn(6, 4), "scale": 2.0}],
    ids=["tensor", "tuple", "dict-with-a-number"],
)
def test_the_batch_input_is_passed_as_the_loop_passes_it_cut_to_the_samples_asked(value: Any) -> None:
    task = SimpleNamespace(last_batch=LastBatch(None, None, None, {"input": value, "target": torch.zeros(6)}, {}))
    ours = example_inputs.example_from_batch(task, 2)
    assert ours is not None and _same(ours[0], pytree.tree_map(lambda t: t[:2] if isinstance(t, torch.Tensor) else t, value))
    assert _same(example_inputs.example_from_batch(task, None), (value,))


@pytest.mark.parametrize(
    "sample", [None, {"target": torch.zeros(2)}, {"input": torch.tensor(1.0)}, {"input": torch.zeros(0, 3)}]
)
def test_no_usable_batch_input_is_none(sample: Any) -> None:
    task = SimpleNamespace(last_batch=None if sample is None else LastBatch(None, None, None, sample, {}))
    assert example_inputs.example_from_batch(task, 1) is None


def test_namedtuple_inputs_keep_their_type() -> None:
    pair = collections.namedtuple("pair", "image mask")(torch.randn(4, 3), torch.ones(4, 1))
    task = SimpleNamespace(last_batch=LastBatch(None, None, None, {"input": pair}, {}))
    inputs = example_inputs.example_from_batch(task, 1)
    assert inputs is not None
    (cut,) = inputs
    assert type(cut) is type(pair) and cut.image.shape == (1, 3) and torch.equal(cut.mask, torch.ones(1, 1))


def test_the_logging_and_export_hooks_use_this_one_builder() -> None:
    for user in (example_input, _model_export):
        assert user.example_from_shape is example_inputs.example_from_shape
        assert user.example_from_batch is example_inputs.example_from_batch
