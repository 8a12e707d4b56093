"""Train/eval modes of a model's modules, saved and given back per module (duck-typed: no torch import).

Restoring each module's own flag, not `model.train(previous)`, keeps deliberately frozen
submodules (a backbone in eval mode inside a training model) exactly as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def preserved_modes(model: Any) -> Iterator[Any]:
    """Give every module of `model` its own `training` flag back on exit, whatever happened inside."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """Put `model` in eval mode for the block, then restore each module's previous mode."""
    with preserved_modes(model):
        model.eval()
        yield model
