"""Small models with known export behaviour, shared by the export hook tests."""

from __future__ import annotations

import torch
from torch import nn


class DictOutput(nn.Module):
    """Returns a dict: strict tracing refuses it, non-strict tracing accepts it."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = (4,)
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.linear(x)}


class VarArgs(nn.Module):
    """Takes *args, which TorchScript cannot compile."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = (4,)
        self.linear = nn.Linear(4, 3)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.linear(inputs[0])


class CallCounter(nn.Module):
    """Output depends on Python state that changes at every call: an export bakes in one value."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = (4,)
        self.linear = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x) * self.calls


class DataDependent(nn.Module):
    """Python control flow on tensor values: torch.export cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = (4,)
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if y.sum() > 0:
            return y * 2
        return y


class FixedBatch(nn.Module):
    """Reshapes with a constant batch size, so the exported batch size cannot be dynamic."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = (4,)
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(4, 4))


class FrozenBackbone(nn.Module):
    """A training model whose backbone is deliberately kept in eval mode (BN frozen)."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = (3, 8, 8)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(4 * 6 * 6, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class BatchBranch(nn.Module):
    """Branches on the batch size in Python: a trace freezes the branch taken for the example batch."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = (4,)
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y * 2 if int(x.shape[0]) > 2 else y


class HeadsVarArgs(nn.Module):
    """Classy Vision's model-with-heads signature: `forward(*args)`, the trunk's output fed to a head."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = (3, 8, 8)
        self.trunk = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(4, 2)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(args[0]).flatten(1))


class PairInput(nn.Module):
    """Takes one argument that is a tuple of two tensors (a batch whose "input" is a pair)."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Linear(4, 3)
        self.extra = nn.Linear(2, 3)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        image, extra = inputs
        return self.image(image) + self.extra(extra)
