"""sharded_tensors: DTensor helpers on a one-rank gloo process group (in process) and an FSDP2 model."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from classy_hooks.model import sharded_tensors
from classy_hooks.model.sharded_tensors import (
    fsdp_modules,
    is_sharded,
    local_nbytes,
    local_part,
    reshard,
    same_layout,
    shard_full_tensor,
    sharded_like,
)


@pytest.fixture
def one_rank(tmp_path: Path) -> Iterator[None]:
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_local_parts_layouts_and_bytes(one_rank: None) -> None:
    mesh = init_device_mesh("cpu", (1,))
    full = torch.arange(12.0).reshape(4, 3)
    sharded = distribute_tensor(full, mesh, [Shard(0)])
    assert is_sharded(sharded) and not is_sharded(full)
    assert local_part(full) is full and torch.equal(local_part(sharded), full)
    assert local_part(sharded).untyped_storage().data_ptr() == sharded.to_local().untyped_storage().data_ptr()
    copy = sharded_like(torch.zeros(4, 3, dtype=torch.float64), sharded)  # dtype may differ, layout is kept
    assert isinstance(copy, DTensor) and copy.dtype == torch.float64 and same_layout(copy, sharded)
    assert copy.placements == sharded.placements and copy.shape == sharded.shape
    cut = shard_full_tensor(full * 2, sharded)
    assert same_layout(cut, sharded) and torch.equal(cut.to_local(), full * 2)
    other = distribute_tensor(full.t().contiguous(), mesh, [Shard(1)])
    assert not same_layout(other, sharded)
    assert local_nbytes([sharded, full, copy]) == 12 * 4 + 12 * 4 + 12 * 8


def test_reshard_restores_the_dtensor_parameters_a_no_grad_forward_left_unsharded(one_rank: None) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    fully_shard(model[0])
    fully_shard(model)
    assert fsdp_modules(model) == [model, model[0]] and fsdp_modules(nn.Linear(1, 1)) == []
    with torch.no_grad():
        model(torch.randn(2, 3))
    assert not all(isinstance(p, DTensor) for p in model.parameters())  # the root stays unsharded
    reshard(fsdp_modules(model))
    assert all(isinstance(p, DTensor) for p in model.parameters())


def test_without_dtensor_s_private_spec_sharded_like_uses_from_local_and_warns(
    one_rank: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mesh = init_device_mesh("cpu", (1,))
    sharded = distribute_tensor(torch.arange(12.0).reshape(4, 3), mesh, [Shard(0)])
    private = sharded_like(torch.ones(4, 3, dtype=torch.float64), sharded)
    monkeypatch.setattr(sharded_tensors, "_tensor_meta_class", lambda: None)  # a torch without the private spec
    monkeypatch.setattr(sharded_tensors, "_warned", [])
    with caplog.at_level(logging.WARNING):
        public = sharded_like(torch.ones(4, 3, dtype=torch.float64), sharded)
        sharded_like(torch.ones(4, 3), sharded)
    assert isinstance(public, DTensor) and same_layout(public, private) and public.dtype == torch.float64
    assert torch.equal(public.to_local(), private.to_local()) and public.stride() == private.stride()
    assert caplog.text.count("DTensor.from_local") == 1 and torch.__version__ in caplog.text
