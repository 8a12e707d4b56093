"""PreciseBatchNormHook: arguments, statistics against an independent computation and fvcore, samples, EMA."""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from classy_hooks.core import HookConfigError, TaskContractError, build_hook
from classy_hooks.model import ExponentialMovingAverageModelHook, PreciseBatchNormHook
from helpers import make_task

with warnings.catch_warnings():  # fvcore.nn calls torch.jit.script at import (deprecated in torch>=2.11)
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn.precise_bn import update_bn_stats
from bad_input import assert_reported, assert_warned, run_to_the_end_and_warnings
from reference_trainer.models import SmallCNN


def bn_input_stats(model: nn.Module, inputs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Mean and biased variance per channel of every BatchNorm layer's input over all `inputs` (float64).

    Computed independently of the hook: a copy of the model in train mode, forward pre-hooks that
    keep the inputs, and plain float64 statistics over everything kept.
    """
    model = copy.deepcopy(model).train()
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    seen: dict[int, list[torch.Tensor]] = {id(m): [] for m in layers}
    handles = [m.register_forward_pre_hook(lambda mod, args: seen[id(mod)].append(args[0].detach())) for m in layers]
    with torch.no_grad():
        for x in inputs:
            model(x)
    for h in handles:
        h.remove()
    out = []
    for m in layers:
        x = torch.cat([t.transpose(0, 1).reshape(t.shape[1], -1) for t in seen[id(m)]], dim=1).double()
        out.append((x.mean(dim=1), x.var(dim=1, unbiased=False)))
    return out


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _batches(n: int, batch: int = 16, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [{"input": torch.randn(batch, 3, 16, 16, generator=gen) * 2 + 1} for _ in range(n)]


def _task(model: nn.Module, loader: Any, **extra: Any) -> SimpleNamespace:
    return SimpleNamespace(base_model=model.train(), train=True, dataloader=loader, last_batch=None, **extra)


def test_constructor_from_config_and_build_hook() -> None:
    hook = PreciseBatchNormHook(64)
    assert (hook.num_samples, hook.cache_samples) == (64, False)
    assert PreciseBatchNormHook.from_config({"num_samples": 8, "cache_samples": True}).cache_samples
    assert isinstance(build_hook({"name": "precise_bn", "num_samples": 8}), PreciseBatchNormHook)


@pytest.mark.parametrize(
    ("config", "argument"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": -4}, "num_samples"),
        ({"num_samples": 2.5}, "num_samples"),
        ({"num_samples": True}, "num_samples"),
        ({"num_samples": "8"}, "num_samples"),
        ({"num_samples": 8, "cache_samples": "no"}, "cache_samples"),
        ({"num_samples": 8, "cache": True}, "cache"),
        ({}, "num_samples"),
    ],
)
def test_bad_config_is_a_clear_error(config: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=rf"PreciseBatchNormHook.*'{argument}'"):
        build_hook({"name": "precise_bn", **config})


def test_statistics_match_an_independent_computation_and_fvcore() -> None:
    torch.manual_seed(0)
    model = SmallCNN(num_classes=4, image_size=16, width=8)
    loader = _batches(6)
    inputs = [b["input"] for b in loader[:5]]  # 80 samples = 5 batches
    expected = bn_input_stats(model, inputs)
    reference = copy.deepcopy(model)
    tracked_before = [m.num_batches_tracked.clone() for m in bn_layers(model)]
    task = _task(model, loader)
    PreciseBatchNormHook(80).on_phase_end(task)
    update_bn_stats(reference.train(), inputs, num_iters=5)
    for m, ref, (mean, var), tracked in zip(bn_layers(model), bn_layers(reference), expected, tracked_before):
        assert torch.allclose(m.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        assert torch.allclose(m.running_var.double(), var, rtol=1e-5, atol=1e-6)
        assert torch.allclose(m.running_mean, ref.running_mean, rtol=1e-5, atol=1e-6)
        assert torch.allclose(m.running_var, ref.running_var, rtol=1e-4, atol=1e-6)
        assert m.momentum == 0.1 and torch.equal(m.num_batches_tracked, tracked)


def test_a_partial_last_batch_makes_exactly_num_samples() -> None:
    model = SmallCNN(num_classes=4, image_size=16, width=8)
    loader = _batches(4)
    expected = bn_input_stats(model, [loader[0]["input"], loader[1]["input"], loader[2]["input"][:8]])
    hook = PreciseBatchNormHook(40)
    hook.on_phase_end(_task(model, loader))
    assert hook.last_num_samples == 40
    for m, (mean, var) in zip(bn_layers(model), expected):
        assert torch.allclose(m.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        assert torch.allclose(m.running_var.double(), var, rtol=1e-5, atol=1e-6)


def test_cache_mode_keeps_at_most_num_samples_of_the_trained_batches() -> None:
    model = SmallCNN(num_classes=4, image_size=16, width=8)
    batches = _batches(5)
    task = _task(model, loader=None)
    hook = PreciseBatchNormHook(40, cache_samples=True)
    hook.on_start(task)
    hook.on_phase_start(task)
    for batch in batches:
        task.last_batch = SimpleNamespace(sample=batch)
        hook.on_step(task)
        assert sum(c.shape[0] for c in hook._cache) <= 40
    assert [c.shape[0] for c in hook._cache] == [16, 16, 8]
    expected = bn_input_stats(model, [c.clone() for c in hook._cache])
    hook.on_phase_end(task)
    assert hook._cache == []
    for m, (mean, _) in zip(bn_layers(model), expected):
        assert torch.allclose(m.running_mean.double(), mean, rtol=1e-5, atol=1e-6)


def test_the_task_loader_and_the_rng_are_left_alone() -> None:
    hook = PreciseBatchNormHook(48)
    task = make_task([hook], num_epochs=1, test_phase_period=0)
    seen: list[Any] = []
    task.hooks.insert(0, _LoaderSpy(seen))
    task.run()
    loader_before, rng_before, loader_after, rng_after = seen
    assert loader_after is loader_before
    assert torch.equal(rng_after, rng_before)  # dropout in the extra forwards ran on a forked RNG


class _LoaderSpy(PreciseBatchNormHook):
    """Records task.dataloader and the RNG state around the precise-BN hook's on_phase_end."""

    def __init__(self, seen: list[Any]) -> None:
        super().__init__(1)
        self.seen = seen

    def on_phase_end(self, task: Any) -> None:
        self.seen += [task.dataloader, torch.get_rng_state()]

    def on_end(self, task: Any) -> None:
        self.seen += [task.dataloader, torch.get_rng_state()]

    on_start = on_phase_start = on_step = PreciseBatchNormHook._noop


def test_a_short_loader_warns_and_uses_what_it_has(caplog: pytest.LogCaptureFixture) -> None:
    model = SmallCNN(num_classes=4, image_size=16, width=8)
    loader = _batches(2)
    expected = bn_input_stats(model, [b["input"] for b in loader])
    hook = PreciseBatchNormHook(1000)
    with caplog.at_level(logging.WARNING):
        hook.on_phase_end(_task(model, loader))
    assert "only 32 of num_samples=1000" in caplog.text and hook.last_num_samples == 32
    for m, (mean, _) in zip(bn_layers(model), expected):
        assert torch.allclose(m.running_mean.double(), mean, rtol=1e-5, atol=1e-6)


def test_test_phases_are_left_alone() -> None:
    model = SmallCNN(num_classes=4, image_size=16, width=8)
    before = copy.deepcopy(model.state_dict())
    PreciseBatchNormHook(16).on_phase_end(SimpleNamespace(base_model=model, train=False, dataloader=_batches(1)))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_on_start_checks_the_task() -> None:
    with pytest.raises(TypeError, match=r"PreciseBatchNormHook.*dataloader"):
        PreciseBatchNormHook(8).on_start(SimpleNamespace(base_model=nn.Linear(1, 1), train=True))


@pytest.mark.parametrize("ema_first", [True, False])
def test_with_ema_each_set_of_weights_gets_its_own_statistics_whatever_the_order(ema_first: bool) -> None:
    model = SmallCNN(num_classes=4, image_size=16, width=8).train()
    loader = _batches(3)
    inputs = [b["input"] for b in loader]
    ema = ExponentialMovingAverageModelHook(0.5)
    precise = PreciseBatchNormHook(48)
    task = _task(model, loader, is_optimizer_step=True)
    task.hooks = [ema, precise] if ema_first else [precise, ema]
    for hook in task.hooks:
        hook.on_start(task)
        hook.on_phase_start(task)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # a "training step" moves the weights away from the EMA
    ema.on_step(task)
    for hook in task.hooks:
        hook.on_phase_end(task)
    training_expected = bn_input_stats(model, inputs)
    training_stats = [(m.running_mean.clone(), m.running_var.clone()) for m in bn_layers(model)]
    task.train = False
    ema.on_phase_start(task)  # a test phase: EMA weights and their statistics are swapped in
    ema_expected = bn_input_stats(model, inputs)
    for m, (mean, var), (train_mean, _) in zip(bn_layers(model), ema_expected, training_stats):
        assert torch.allclose(m.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        assert torch.allclose(m.running_var.double(), var, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(m.running_mean, train_mean)
    for (mean, var), (train_mean, train_var) in zip(training_expected, training_stats):
        assert torch.allclose(train_mean.double(), mean, rtol=1e-5, atol=1e-6)
        assert torch.allclose(train_var.double(), var, rtol=1e-5, atol=1e-6)


def test_hook_order_does_not_change_a_training_run() -> None:
    results = []
    for order in ("ema_first", "precise_first"):
        ema, precise = ExponentialMovingAverageModelHook(0.8), PreciseBatchNormHook(32)
        task = make_task([ema, precise] if order == "ema_first" else [precise, ema])
        task.run()
        results.append((task.base_model.state_dict(), ema.state.ema_state))
    (model_a, ema_a), (model_b, ema_b) = results
    for key in model_a:
        assert torch.equal(model_a[key], model_b[key]), key
    for key in ema_a:
        assert torch.equal(ema_a[key], ema_b[key]), key


def test_with_a_float32_ema_of_bf16_weights_the_ema_gets_its_own_statistics() -> None:
    """The EMA's statistics are written into the bf16 model while it is swapped and end in the fp32 average."""
    model = SmallCNN(num_classes=4, image_size=16, width=8).to(torch.bfloat16).train()
    loader = [{"input": b["input"].to(torch.bfloat16)} for b in _batches(3)]
    ema = ExponentialMovingAverageModelHook(0.5)
    precise = PreciseBatchNormHook(48)
    task = _task(model, loader, is_optimizer_step=True, hooks=[ema, precise])
    for hook in task.hooks:
        hook.on_start(task)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    ema.on_step(task)
    training = copy.deepcopy(model.state_dict())
    ema.swap(task)
    ema_expected = bn_input_stats(model, [b["input"] for b in loader])
    ema.swap(task)
    precise.on_phase_end(task)
    running = [k for k in training if "running" in k]
    assert all(ema.state.ema_state[k].dtype == torch.float32 for k in running)
    for key, value in model.state_dict().items():  # the model's own statistics changed, nothing else
        assert torch.equal(value, training[key]) != (key in running), key
    task.train = False
    ema.on_phase_start(task)
    for m, (mean, var) in zip(bn_layers(model), ema_expected):
        assert torch.allclose(m.running_mean.double(), mean, rtol=2e-2, atol=2e-2)
        assert torch.allclose(m.running_var.double(), var, rtol=2e-2, atol=2e-2)


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----

@pytest.mark.parametrize(
    ("config", "argument", "fix"),
    [
        pytest.param({"num_samples": 0}, "num_samples", "Pass an int of at least 1", id="num-samples-zero"),
        pytest.param({"num_samples": 64, "cache_samples": "yes"}, "cache_samples", "Pass true or false", id="cache-samples-string"),
    ],
)
def test_bad_config_is_reported_by_the_constructor(config: dict[str, Any], argument: str, fix: str) -> None:
    with pytest.raises(HookConfigError) as info:
        build_hook({"name": "precise_bn", **config})
    assert_reported(info.value, HookConfigError, ("PreciseBatchNormHook", argument, fix))


def test_task_without_dataloader_is_reported_at_on_start() -> None:
    task = make_task([build_hook({"name": "precise_bn", "num_samples": 32})])
    del task.dataloader
    with pytest.raises(TaskContractError) as info:
        task.run()
    assert_reported(info.value, TaskContractError, ("PreciseBatchNormHook", "dataloader", "Add them to your task"))
    assert task.num_updates == 0


def test_more_samples_than_the_phase_is_a_warning_and_training_continues(caplog: pytest.LogCaptureFixture) -> None:
    task = make_task([build_hook({"name": "precise_bn", "num_samples": 10_000})], num_epochs=1)
    warnings = run_to_the_end_and_warnings(task, caplog)
    assert_warned(warnings, ("PreciseBatchNormHook", "provided only 128 of num_samples=10000"))
