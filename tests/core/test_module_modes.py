"""eval_mode / preserved_modes: every module's own train/eval flag comes back, frozen submodules included."""

from __future__ import annotations

import pytest
from torch import nn

from classy_hooks.core.module_modes import eval_mode, preserved_modes


def _model_with_frozen_backbone() -> nn.Module:
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), nn.Dropout(0.5), nn.Linear(4, 2))
    model.train()
    model[0].eval()  # a deliberately frozen backbone inside a training model
    return model


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_eval_mode_puts_every_module_in_eval_and_restores_each_flag() -> None:
    model = _model_with_frozen_backbone()
    before = _modes(model)
    with eval_mode(model) as inside:
        assert inside is model and not any(_modes(model))
    assert _modes(model) == before == [True, False, False, False, True, True]


def test_preserved_modes_restores_after_an_exception() -> None:
    model = _model_with_frozen_backbone()
    before = _modes(model)
    with pytest.raises(RuntimeError), preserved_modes(model):
        model.train()
        raise RuntimeError("boom")
    assert _modes(model) == before
