"""Classy Vision 0.7.0 runs for the integration tests: a tiny ClassificationTask config, built by Classy's own
`build_task` and trained by its own `LocalTrainer` on the CPU (synthetic 16x16 images, a one-block ResNeXt)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from dev_dependencies import dev_dependency

dev_dependency(
    "classy_vision",
    reason="Classy Vision is a test-only dependency of the dev venv (tools/requirements-dev-no-deps.txt); "
    "the floors venv has no torchvision for it",
)

import classy_vision.hooks  # noqa: E402 - after the dependency check
from classy_vision.tasks import ClassificationTask, build_task  # noqa: E402 - after the dependency check
from classy_vision.trainer import LocalTrainer  # noqa: E402 - after the dependency check

from classy_hooks.core.classy_vision_bridge import use_in_classy_vision  # noqa: E402 - after the dependency check

TRAIN_SAMPLES, TEST_SAMPLES, BATCH = 32, 16, 8


def _dataset(num_samples: int, shuffle: bool, seed: int) -> dict[str, Any]:
    return {
        "name": "synthetic_image",
        "crop_size": 16,
        "class_ratio": 0.5,
        "num_samples": num_samples,
        "seed": seed,
        "batchsize_per_replica": BATCH,
        "use_shuffle": shuffle,
        "transforms": [{"name": "apply_transform_to_key", "transforms": [{"name": "ToTensor"}], "key": "input"}],
    }


def classification_config(hooks: list[dict[str, Any]], num_epochs: int = 3) -> dict[str, Any]:
    """A Classy Vision ClassificationTask config, as a Classy user writes it (train and test phases alternate)."""
    return {
        "name": "classification_task",
        "num_epochs": num_epochs,
        "use_gpu": False,
        "loss": {"name": "CrossEntropyLoss"},
        "dataset": {"train": _dataset(TRAIN_SAMPLES, True, 0), "test": _dataset(TEST_SAMPLES, False, 1)},
        "meters": {"accuracy": {"topk": [1]}},
        "model": {
            "name": "resnext",
            "num_blocks": [1],
            "init_planes": 8,
            "reduction": 1,
            "small_input": True,
            "basic_layer": True,
            "heads": [
                {
                    "name": "fully_connected",
                    "unique_id": "default_head",
                    "num_classes": 2,
                    "fork_block": "block0-0",
                    "in_plane": 8,
                }
            ],
        },
        "optimizer": {
            "name": "sgd",
            "param_schedulers": {"lr": {"name": "step", "values": [0.1, 0.05, 0.01]}},
            "weight_decay": 1e-4,
            "momentum": 0.9,
        },
        "hooks": copy.deepcopy(hooks),
    }


def build_classification_task(config: dict[str, Any], seed: int = 0) -> ClassificationTask:
    """Classy Vision's own `build_task`, seeded so every run starts from the same weights; data loaded in-process."""
    torch.manual_seed(seed)
    task = build_task(copy.deepcopy(config))
    assert type(task) is ClassificationTask
    for dataset in task.datasets.values():
        dataset.set_num_workers(0)  # Classy's own setter; worker processes only cost time here
    return task


def train(task: ClassificationTask) -> ClassificationTask:
    """Classy Vision's own trainer (its `train()` calls `task.prepare()`, then runs every phase)."""
    LocalTrainer().train(task)
    return task


@contextmanager
def classy_hooks_in_classy_vision(prefix: str = "") -> Iterator[dict[str, Any]]:
    """`use_in_classy_vision` for one test: Classy Vision's registry is restored afterwards (it is process-wide)."""
    saved = dict(classy_vision.hooks.HOOK_REGISTRY)
    try:
        yield use_in_classy_vision(classy_vision.hooks, prefix=prefix)
    finally:
        classy_vision.hooks.HOOK_REGISTRY.clear()
        classy_vision.hooks.HOOK_REGISTRY.update(saved)


def weights(task: ClassificationTask) -> dict[str, torch.Tensor]:
    """The model's state dict (plain keys), detached copies."""
    return {k: v.detach().clone() for k, v in task.base_model.state_dict().items()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference over the floating tensors of two state dicts with the same keys."""
    assert set(a) == set(b), sorted(set(a) ^ set(b))
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())
