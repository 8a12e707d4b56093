"""torch_private: torch's pytree and TracingCheckError where torch has them, and the fallbacks where it does not."""

from __future__ import annotations

import logging
from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch
from torch.utils import _pytree as torch_pytree

from classy_hooks.export import torch_private

Pair = namedtuple("Pair", ["image", "mask"])


def _nested() -> dict[str, object]:
    return {"x": torch.ones(2, 3), "rest": [torch.zeros(2), (torch.arange(2), Pair(torch.ones(1), 3))], "k": None}


def test_torch_2_13_to_2_14_provide_both_internals() -> None:
    assert torch_private.pytree is torch_pytree
    assert torch_private.TracingCheckError is torch.jit.TracingCheckError


def test_the_container_pytree_gives_torch_pytree_results(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        fallback = torch_private.load_pytree("classy_hooks_no_such_module._pytree")
    assert fallback is torch_private.CONTAINER_PYTREE
    assert torch.__version__ in caplog.text and torch_private.TESTED_TORCH in caplog.text
    tree = _nested()

    def double(t: object) -> object:
        return t * 2 if isinstance(t, torch.Tensor) else t

    ours, theirs = fallback.tree_map(double, tree), torch_pytree.tree_map(double, tree)
    assert type(ours["rest"][1][1]) is Pair
    assert torch_pytree.tree_flatten(ours)[1] == torch_pytree.tree_flatten(theirs)[1]
    for a, b in zip(fallback.tree_leaves(ours), torch_pytree.tree_leaves(theirs)):
        assert (torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b), (a, b)
    leaves, spec = fallback.tree_flatten(tree)
    assert len(leaves) == len(torch_pytree.tree_leaves(tree)) == 6
    assert spec == fallback.tree_flatten(ours)[1]  # same structure, other leaves
    assert spec != fallback.tree_flatten({**tree, "extra": 1})[1]
    assert spec != fallback.tree_flatten([tree])[1]


def test_a_pytree_module_without_the_functions_used_is_replaced() -> None:
    assert torch_private.load_pytree("logging") is torch_private.CONTAINER_PYTREE


def test_without_torch_jit_tracing_check_error_the_error_is_recognised_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        by_name = torch_private.load_tracing_check_error(SimpleNamespace())
    assert "torch.jit.TracingCheckError" in caplog.text and torch.__version__ in caplog.text
    real = torch.jit.TracingCheckError("graph diverged", "")
    assert isinstance(real, by_name)
    assert not isinstance(RuntimeError("other"), by_name)
