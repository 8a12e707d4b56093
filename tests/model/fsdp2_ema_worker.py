"""torchrun worker (2 gloo ranks, CPU): the EMA and precise-BN hooks on an FSDP2-sharded model.

Run by tests/model/test_ema_on_fsdp2.py as `torchrun --nproc_per_node 2 fsdp2_ema_worker.py OUT_DIR`. Stories:
fp32 model with BatchNorm (sharded layout and bytes, exact updates, precise BN, test phase, resume from full
tensors, DCP round trip, sharded state on a plain model) and bf16 weights with a float32 average. Every
check is an assertion made on every rank against references computed independently from full (unsharded)
tensors; the figures measured (per-rank EMA bytes) go to OUT_DIR/rank<r>.json.
"""

from __future__ import annotations

import copy
import json
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from classy_hooks.core import HookConfigError
from classy_hooks.model import ExponentialMovingAverageModelHook, PreciseBatchNormHook
from classy_hooks.model.sharded_tensors import fsdp_modules, local_nbytes, reshard

DECAY = 0.8


class Net(nn.Module):
    """Linear, BatchNorm and an odd-sized Linear (31 rows: uneven shards of 16 and 15 rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(6, 32)
        self.bn = nn.BatchNorm1d(32)
        self.l2 = nn.Linear(32, 31)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.relu(self.bn(self.l1(x))))


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The full value of a tensor: all-gathered for a DTensor (a collective), a clone otherwise."""
    with torch.no_grad():
        return tensor.full_tensor().clone() if isinstance(tensor, DTensor) else tensor.detach().clone()


def gathered(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: full(t) for n, t in tensors.items()}


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and BatchNorm buffers (what the EMA tracks), full values."""
    reshard(fsdp_modules(model))
    named = dict(model.named_parameters()) | {f"bn.{n}": b for n, b in model.bn.named_buffers()}
    return gathered(named)


def lerp_all(reference: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> None:
    """The EMA update on full tensors: lerp the floating ones, copy the integer counter."""
    for n, r in reference.items():
        if r.is_floating_point():
            r.lerp_(weights[n], 1 - DECAY)
        else:
            r.copy_(weights[n])


def assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), (what, sorted(a), sorted(b))
    for n in a:
        assert torch.equal(a[n], b[n]), (what, n, (a[n].double() - b[n].double()).abs().max())


def bn_input_stats(model: nn.Module, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of the BatchNorm layer's input over all `inputs`, plain float64 (single process)."""
    model = copy.deepcopy(model).train()
    seen: list[torch.Tensor] = []
    model.bn.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    with torch.no_grad():
        for x in inputs:
            model(x)
    x = torch.cat(seen).double()
    return x.mean(0), x.var(0, unbiased=False)


def plain_model(tensors: dict[str, torch.Tensor]) -> Net:
    net = Net()
    net.load_state_dict(tensors)
    return net


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))  # a hang fails fast instead of blocking
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = Net()
    full_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    fully_shard(model.l1)
    fully_shard(model.l2)
    fully_shard(model)
    assert all(isinstance(p, DTensor) for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank trains on its own data
    loader = [{"input": torch.randn(8, 6, generator=gen) * 2 + 1} for _ in range(3)]
    ema = ExponentialMovingAverageModelHook(DECAY)
    precise = PreciseBatchNormHook(24)
    task = SimpleNamespace(
        base_model=model.train(), train=True, is_optimizer_step=True, hooks=[ema, precise], dataloader=loader
    )
    figures: dict[str, Any] = {}

    # ---- the sharded EMA: DTensors laid out like the parameters, 1/N of the model per rank ----
    for hook in task.hooks:
        hook.on_start(task)
        hook.on_phase_start(task)
    state = ema.state.ema_state
    for n, p in model.named_parameters():
        e = state[n]
        assert isinstance(e, DTensor) and e.placements == p.placements and e.device_mesh == p.device_mesh, n
        assert e.to_local().shape == p.to_local().shape and e.shape == p.shape, n
    assert not isinstance(state["bn.running_mean"], DTensor)
    figures["ema_local_bytes"] = local_nbytes(state.values())
    figures["model_local_bytes"] = local_nbytes(list(model.parameters()) + list(model.buffers()))
    figures["model_full_bytes"] = full_bytes
    assert figures["ema_local_bytes"] == figures["model_local_bytes"]  # exactly this rank's shards, no more

    # ---- sharded update, exact against a full-tensor reference computed independently ----
    reference = model_tensors(model)
    for batch in loader:
        loss = model(batch["input"]).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.on_step(task)
        lerp_all(reference, model_tensors(model))
    assert ema.state.num_updates == len(loader)
    assert_equal(gathered(ema.state.ema_state), reference, "EMA after sharded updates")

    # ---- precise BN for both sets of weights over the union of both ranks' batches ----
    everyone: list[list[torch.Tensor]] = [[] for _ in range(world)]
    dist.all_gather_object(everyone, [b["input"] for b in loader])
    union = [x for per_rank in everyone for x in per_rank]
    training_before = model_tensors(model)
    ema_before = gathered(ema.state.ema_state)
    for hook in task.hooks:
        hook.on_phase_end(task)
    training = model_tensors(model)
    ema_weights = gathered(ema.state.ema_state)
    for name, before, after in (("training", training_before, training), ("EMA", ema_before, ema_weights)):
        mean, var = bn_input_stats(plain_model(before), union)
        assert torch.allclose(after["bn.running_mean"].double(), mean, rtol=1e-5, atol=1e-6), name
        assert torch.allclose(after["bn.running_var"].double(), var, rtol=1e-5, atol=1e-6), name
        assert torch.equal(after["bn.num_batches_tracked"], before["bn.num_batches_tracked"]), name
        for n in before:  # nothing but the statistics changed
            if "running" not in n:
                assert torch.equal(after[n], before[n]), (name, n)
    stats = torch.cat([training["bn.running_mean"], ema_weights["bn.running_var"]])
    same = [torch.empty_like(stats) for _ in range(world)]
    dist.all_gather(same, stats)
    assert all(torch.equal(s, stats) for s in same)  # identical on every rank

    # ---- a test phase evaluates the EMA weights; training resumes from the exact training weights ----
    probe = torch.randn(5, 6, generator=torch.Generator().manual_seed(7))
    task.train = False
    for hook in task.hooks:
        hook.on_phase_start(task)
    assert ema.state.swapped
    model.eval()
    with torch.no_grad():
        evaluated = model(probe)
        expected = plain_model(ema_weights).eval()(probe)
        trained = plain_model(training).eval()(probe)
    assert torch.allclose(evaluated, expected, rtol=1e-6, atol=1e-6), (evaluated - expected).abs().max()
    assert not torch.allclose(evaluated, trained)
    assert_equal(model_tensors(model), ema_weights, "model during the test phase")
    model.train()
    task.train = True
    for hook in task.hooks:
        hook.on_phase_start(task)
    assert not ema.state.swapped
    assert_equal(model_tensors(model), training, "training weights after the test phase")
    assert_equal(gathered(ema.state.ema_state), ema_weights, "EMA after the test phase")
    # and the next sharded update is still exact
    loss = model(loader[0]["input"]).square().mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    ema.on_step(task)
    lerp_all(ema_weights, model_tensors(model))
    assert_equal(gathered(ema.state.ema_state), ema_weights, "EMA update after a swap")

    # ---- resume from a state of full plain tensors (a single-file checkpoint): sharded locally ----
    full_state = {"ema_state": gathered(ema.state.ema_state), "num_updates": 4, "swapped": False}
    resumed = ExponentialMovingAverageModelHook(DECAY)
    resumed.set_classy_state(full_state)
    resumed.on_start(task)
    for n, p in model.named_parameters():
        r = resumed.state.ema_state[n]
        assert isinstance(r, DTensor) and r.placements == p.placements, n
        assert torch.equal(r.to_local(), ema.state.ema_state[n].to_local()), n  # this rank's shard only
    for hook in (ema, resumed):
        hook.update(task)
    assert_equal(gathered(resumed.state.ema_state), gathered(ema.state.ema_state), "resumed from full tensors")

    # ---- prepare_to_load, then a torch.distributed.checkpoint round trip (sharded files) ----
    # DCP saves plain tensors once, as replicated: checkpoint at a phase end, where precise BN has made the
    # BatchNorm statistics (of the model and of the EMA) identical on every rank.
    precise.on_phase_end(task)
    bn_stats = torch.cat([ema.state.ema_state["bn.running_mean"], ema.state.ema_state["bn.running_var"]])
    same = [torch.empty_like(bn_stats) for _ in range(world)]
    dist.all_gather(same, bn_stats)
    assert all(torch.equal(s, bn_stats) for s in same)
    dcp.save(ema.get_classy_state(), checkpoint_id=str(out / "dcp"))
    loaded = ExponentialMovingAverageModelHook(DECAY)
    loaded.prepare_to_load(task)
    target = loaded.get_classy_state()
    dcp.load(target, checkpoint_id=str(out / "dcp"))
    loaded.set_classy_state(target)
    loaded.on_start(task)
    assert loaded.state.num_updates == ema.state.num_updates and loaded.state.swapped is False
    for n, t in ema.state.ema_state.items():
        assert type(loaded.state.ema_state[n]) is type(t), n
        assert torch.equal(local(loaded.state.ema_state[n]), local(t)), n

    # ---- a sharded state on a plain model is a clear error ----
    plain = ExponentialMovingAverageModelHook(DECAY)
    plain.set_classy_state({"ema_state": ema.state.ema_state})
    try:
        plain.on_start(SimpleNamespace(base_model=plain_model(training), train=True))
    except HookConfigError as error:
        assert "ExponentialMovingAverageModelHook" in str(error) and "is sharded" in str(error), error
        figures["plain_model_error"] = str(error)
    else:
        raise AssertionError("a DTensor EMA state on a plain model was accepted")

    # ---- bf16 weights: a float32 average, sharded, never rounded by a test phase ----
    torch.manual_seed(1)
    low = Net().to(torch.bfloat16)
    fully_shard(low)
    low_task = SimpleNamespace(base_model=low.train(), train=True, is_optimizer_step=True)
    low_ema = ExponentialMovingAverageModelHook(0.9999)
    low_ema.on_start(low_task)
    assert all(local(t).dtype == torch.float32 for t in low_ema.state.ema_state.values() if t.is_floating_point())
    low_reference = {n: t.double() for n, t in model_tensors(low).items()}
    for step in range(20):
        with torch.no_grad():
            for p in low.parameters():
                p.to_local().add_(0.01 * (step + 1))
        low_ema.on_step(low_task)
        for n, w in model_tensors(low).items():
            if low_reference[n].is_floating_point():
                low_reference[n].lerp_(w.double(), 1e-4)
            else:
                low_reference[n].copy_(w)
        if step == 10:
            low_training = model_tensors(low)
            low_task.train = False
            low_ema.on_phase_start(low_task)
            swapped_state = low_ema.get_classy_state()["ema_state"]  # what a checkpoint now saves
            assert_equal({n: full(t).to(torch.bfloat16) for n, t in swapped_state.items()}, low_training, "aside")
            assert all(isinstance(swapped_state[n], DTensor) for n, _ in low.named_parameters())
            low_task.train = True
            low_ema.on_phase_start(low_task)
            assert_equal(model_tensors(low), low_training, "bf16 training weights after the test phase")
    for n, t in low_ema.state.ema_state.items():
        if t.is_floating_point():
            assert (full(t).double() - low_reference[n]).abs().max() < 1e-6, n  # fp32 accuracy, not bf16

    (out / f"rank{rank}.json").write_text(json.dumps(figures))
    print(f"rank {rank} ok", flush=True)
    dist.destroy_process_group()


def local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


if __name__ == "__main__":
    main()
