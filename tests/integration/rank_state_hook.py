"""A test hook that saves, per rank, what must agree across ranks: the model and the EMA weights."""

from __future__ import annotations

import os
from typing import Any

import torch

from classy_hooks.core import ClassyHook, get_rank, register_hook


@register_hook("rank_state_dump", bypass_checks=True)
class RankStateDumpHook(ClassyHook):
    """At `on_end`, writes `<folder>/rank<r>.pt` with the model's state dict and the EMA hook's tensors."""

    on_start = on_phase_start = on_step = on_phase_end = ClassyHook._noop

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def on_end(self, task: Any) -> None:
        ema = [h for h in task.hooks if h.name() == "ExponentialMovingAverageModelHook"]
        dump = {
            "model": {k: v.detach().clone() for k, v in task.base_model.state_dict().items()},
            "ema": {k: v.detach().clone() for k, v in ema[0].state.ema_state.items()} if ema else {},
        }
        os.makedirs(self.folder, exist_ok=True)
        torch.save(dump, os.path.join(self.folder, f"rank{get_rank()}.pt"))
