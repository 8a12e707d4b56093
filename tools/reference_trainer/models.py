"""Models the reference trainer can build by name: a small BatchNorm CNN and torchvision classifiers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv-BN-ReLU blocks, global pooling, dropout and a linear head: fast on 2 CPU cores."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: int = 16, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.input_shape = (in_channels, image_size, image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.dropout(self.features(x)))
        return logits


def build_model(config: dict[str, Any], image_size: int, num_classes: int) -> nn.Module:
    """Build `config["name"]`: "small_cnn" or any torchvision classification model (e.g. "resnet18")."""
    options = {k: v for k, v in config.items() if k != "name"}
    name = config.get("name", "small_cnn")
    if name == "small_cnn":
        return SmallCNN(num_classes=num_classes, image_size=image_size, **options)
    import torchvision

    try:
        model: nn.Module = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    except ValueError as exc:
        raise ValueError(f"reference trainer: unknown model {name!r}: {exc}") from exc
    model.input_shape = (3, image_size, image_size)  # type: ignore[assignment]  # read by complexity and export hooks
    return model
