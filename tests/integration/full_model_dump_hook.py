"""A test hook that writes, at `on_end`, the full (unsharded) model state of the run on rank 0."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from classy_hooks.core import ClassyHook, get_rank, register_hook


@register_hook("full_model_dump", bypass_checks=True)
class FullModelDumpHook(ClassyHook):
    """Writes `<folder>/model.pt`: `task.base_model`'s full state dict (FSDP2 shards gathered), plain tensors."""

    on_start = on_phase_start = on_step = on_phase_end = ClassyHook._noop

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def on_end(self, task: Any) -> None:
        state = get_model_state_dict(task.base_model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if get_rank() == 0:
            os.makedirs(self.folder, exist_ok=True)
            torch.save({k: v.detach().clone() for k, v in state.items()}, os.path.join(self.folder, "model.pt"))
