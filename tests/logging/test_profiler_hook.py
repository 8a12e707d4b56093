"""ProfilerHook: a per-operator table of one forward+backward pass, and no trace left on training."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from bad_input import assert_reported, assert_warned, run_to_the_end_and_warnings
from classy_hooks.core import HookConfigError, TaskContractError, build_hook
from classy_hooks.logging import ProfilerHook
from helpers import make_task

LOGGER = "classy_hooks.logging.profiler_hook"


def test_constructors_and_bad_config() -> None:
    assert isinstance(ProfilerHook(), ProfilerHook)
    assert isinstance(ProfilerHook.from_config({}), ProfilerHook)
    assert isinstance(build_hook({"name": "profiler"}), ProfilerHook)
    with pytest.raises(HookConfigError, match="unknown key 'use_cuda'"):
        build_hook({"name": "profiler", "use_cuda": True})
    with pytest.raises(TaskContractError, match="ProfilerHook"):
        ProfilerHook().on_start(object())


def test_forward_and_backward_operators_in_the_logged_table(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    hook = ProfilerHook()
    task = make_task([hook])
    hook.on_start(task)
    assert hook.table is not None
    for op in ("aten::convolution", "aten::convolution_backward", "aten::native_batch_norm_backward", "aten::addmm"):
        assert op in hook.table, op
    assert "Self CPU" in hook.table
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == LOGGER)
    assert "forward and backward of SmallCNN on a batch of 16x3x16x16" in logged and "aten::addmm" in logged


def test_profiling_leaves_no_trace_on_training() -> None:
    task = make_task()
    model = task.base_model
    model.train()
    model.head.eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)  # e.g. gradients of an accumulation micro-step
    params = [p.detach().clone() for p in model.parameters()]
    buffers = [b.detach().clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    ProfilerHook().on_start(task)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    assert all(torch.equal(b, c) for b, c in zip(model.buffers(), buffers))  # BatchNorm statistics untouched
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)  # dropout draws undone
    assert model.training and not model.head.training


def test_profiles_the_first_batch_when_the_model_has_no_input_shape() -> None:
    hook = ProfilerHook()
    task = make_task([hook], num_epochs=1)
    del task.base_model.input_shape
    task.run()
    assert hook.table is not None and "aten::convolution_backward" in hook.table


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----


def test_task_without_get_batchsize_per_replica_is_reported_at_on_start() -> None:
    task = SimpleNamespace(base_model=torch.nn.Linear(2, 2), last_batch=None)
    with pytest.raises(TaskContractError) as info:
        build_hook({"name": "profiler"}).on_start(task)
    assert_reported(info.value, TaskContractError, ("ProfilerHook", "get_batchsize_per_replica", "Add them to your task"))


def test_bad_input_shape_is_a_warning_and_training_continues(caplog: pytest.LogCaptureFixture) -> None:
    task = make_task([build_hook({"name": "profiler"})], num_epochs=1)
    task.base_model.input_shape = "3x16x16"
    warnings = run_to_the_end_and_warnings(task, caplog)
    assert_warned(warnings, ("ProfilerHook", "input_shape must be a sequence", "not profiling"))
