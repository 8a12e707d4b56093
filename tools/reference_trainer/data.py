"""A seeded synthetic image-classification dataset whose classes are learnable, and its loaders."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class SyntheticImages(Dataset[dict[str, torch.Tensor]]):
    """`num_samples` images: a class prototype plus noise, the same for a given seed on every rank.

    `seed` fixes the class prototypes; `split` picks which samples are drawn (train 0, test 1).

    Items are dicts `{"input": (C,H,W) float, "target": int64 class, "id": int64 sample id}`.
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int = 10,
        image_size: int = 32,
        channels: int = 3,
        seed: int = 0,
        noise: float = 1.0,
        id_offset: int = 0,
        split: int = 0,
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        # a per-class colour (survives global pooling) plus a per-class texture
        prototypes = torch.randn(num_classes, channels, 1, 1, generator=gen) + 0.5 * torch.randn(
            num_classes, channels, image_size, image_size, generator=gen
        )
        gen.manual_seed(seed * 1000 + 1 + split)  # train and test share prototypes, not samples
        self.targets = torch.randint(0, num_classes, (num_samples,), generator=gen)
        self.inputs = prototypes[self.targets] + noise * torch.randn(
            num_samples, channels, image_size, image_size, generator=gen
        )
        self.ids = torch.arange(id_offset, id_offset + num_samples)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input": self.inputs[index], "target": self.targets[index], "id": self.ids[index]}


class SkipSampler(Sampler[int]):
    """The indices of `sampler` after the first `skip` of them: a phase resumed after the batches already done."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip :])

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)  # type: ignore[arg-type]


class ShardSampler(Sampler[int]):
    """Every `world_size`-th index from `rank`, no padding: each sample is seen by exactly one rank."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_loader(
    dataset: SyntheticImages,
    *,
    train: bool,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    epoch: int,
    skip_batches: int = 0,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """Train: shuffled per epoch (DistributedSampler, seeded, same order on resume). Test: unpadded shard.

    `skip_batches`: start after that many batches of the epoch (a mid-phase resume: the data position).
    The loader has a generator of its own, so iterating it never draws from torch's global RNG
    (whose state a checkpoint restores). `pin_memory` (for CUDA) lets batches be copied with non_blocking=True.
    """
    sampler: Sampler[int]
    if train:
        dist_sampler: DistributedSampler[int] = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        dist_sampler.set_epoch(epoch)
        sampler = dist_sampler
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    if skip_batches:
        sampler = SkipSampler(sampler, skip_batches * batch_size)
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=train, num_workers=0, generator=generator,
        pin_memory=pin_memory,
    )


def batches_per_epoch(num_samples: int, batch_size: int, world_size: int) -> int:
    """Train batches per rank per epoch (DistributedSampler with drop_last, loader with drop_last)."""
    return math.floor(num_samples // world_size / batch_size)
