"""batch_norm: BatchNorm layers are recognised by torch's public classes and their subclasses."""

from __future__ import annotations

import torch
from torch import nn

from classy_hooks.model.batch_norm import is_batch_norm


class MyBatchNorm(nn.BatchNorm2d):
    """A subclass such as timm's or detectron2's."""


def test_public_batch_norm_classes_and_their_subclasses_are_batch_norm() -> None:
    for module in (nn.BatchNorm1d(3), nn.BatchNorm2d(3), nn.BatchNorm3d(3), nn.SyncBatchNorm(3), MyBatchNorm(3)):
        assert is_batch_norm(module), type(module).__name__


def test_a_lazy_batch_norm_counts_once_materialised() -> None:
    lazy = nn.LazyBatchNorm2d()
    assert not is_batch_norm(lazy)  # no shapes yet: nothing to average or recompute
    lazy(torch.randn(2, 3, 4, 4))
    assert is_batch_norm(lazy) and lazy.running_mean is not None and lazy.running_mean.shape == (3,)


def test_other_norms_are_not_batch_norm() -> None:
    for module in (nn.InstanceNorm2d(3, track_running_stats=True), nn.LayerNorm(3), nn.GroupNorm(1, 3), nn.Linear(2, 2)):
        assert not is_batch_norm(module), type(module).__name__
