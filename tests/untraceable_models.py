"""Models that train but cannot be traced or exported, for the export and graph hooks' bad-input tests."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class DetectorLike(nn.Module):
    """Like torchvision's detection models: logits while training, a list of per-image dicts in eval mode.

    Strict `torch.jit.trace` (TensorBoard's add_graph, the TorchScript hook's default) rejects list/dict outputs.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.input_shape = net.input_shape

    def forward(self, x: torch.Tensor) -> Any:
        logits = self.net(x)
        if self.training:
            return logits
        scores, labels = logits.softmax(1).max(1)
        return [{"scores": s, "labels": c} for s, c in zip(scores, labels)]


class DataDependent(nn.Module):
    """Rescales its input only when it is large: Python control flow on tensor data, which torch.export rejects."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.input_shape = net.input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().max() > 100:
            x = x / x.abs().max()
        return self.net(x)


def wrap_model(task: Any, wrapper: type[nn.Module]) -> Any:
    """The reference task with its model wrapped (the optimizer keeps the same parameters)."""
    task.base_model = task.model = wrapper(task.base_model)
    return task
