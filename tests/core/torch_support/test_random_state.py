"""random_state: a side pass that draws random numbers leaves the generators as they were, even if it fails."""

from __future__ import annotations

import pytest
import torch

from classy_hooks.core.torch_support.random_state import preserved_rng


def test_draws_inside_are_undone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    with preserved_rng():
        torch.nn.functional.dropout(torch.ones(100), 0.5)
        torch.rand(10)
    assert torch.equal(torch.rand(4), expected)


def test_a_failure_inside_still_restores_the_state() -> None:
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="boom"), preserved_rng():
        torch.rand(10)
        raise RuntimeError("boom")
    assert torch.equal(torch.get_rng_state(), state)
