"""ExponentialMovingAverageModelHook: arguments, the fused update, swapping, state and resume."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from classy_hooks.core import HookConfigError, build_hook
from classy_hooks.model import ExponentialMovingAverageModelHook
from helpers import make_task


class MixedModel(nn.Module):
    """fp32, fp64 and bf16 parameters plus a BatchNorm (float buffers and the int64 counter)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2).to(torch.float64)
        self.c = nn.Parameter(torch.zeros(5, dtype=torch.bfloat16))
        self.bn = nn.BatchNorm1d(4)


def _task(model: nn.Module, train: bool = True, **extra: Any) -> SimpleNamespace:
    return SimpleNamespace(base_model=model, train=train, is_optimizer_step=True, **extra)


def _set_all(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
        model.bn.running_mean.fill_(value)
        model.bn.running_var.fill_(value)
        model.bn.num_batches_tracked.fill_(int(value * 10))


def test_constructor_from_config_and_build_hook() -> None:
    hook = ExponentialMovingAverageModelHook(0.9)
    assert (hook.decay, hook.consider_bn_buffers, hook.device, hook.warmup_steps) == (0.9, True, "gpu", 0)
    assert isinstance(ExponentialMovingAverageModelHook.from_config({"decay": 0.5, "device": "cpu"}), type(hook))
    built = build_hook({"name": "ema_model_weights", "decay": 0.99, "consider_bn_buffers": False})
    assert isinstance(built, ExponentialMovingAverageModelHook) and not built.consider_bn_buffers


@pytest.mark.parametrize(
    ("config", "argument"),
    [
        ({"decay": -0.1}, "decay"),
        ({"decay": 1.5}, "decay"),
        ({"decay": "0.9"}, "decay"),
        ({"decay": float("nan")}, "decay"),
        ({"decay": 0.9, "device": "crazy_hardware"}, "device"),
        ({"decay": 0.9, "consider_bn_buffers": "yes"}, "consider_bn_buffers"),
        ({"decay": 0.9, "warmup_steps": -1}, "warmup_steps"),
        ({"decay": 0.9, "decy": 1}, "decy"),
        ({}, "decay"),
    ],
)
def test_bad_config_is_a_value_error(config: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=rf"ExponentialMovingAverageModelHook.*'{argument}'"):
        build_hook({"name": "ema_model_weights", **config})
    assert issubclass(HookConfigError, ValueError)


def test_update_is_exact_for_every_floating_dtype_and_copies_integers() -> None:
    model = MixedModel()
    _set_all(model, 0.0)
    hook = ExponentialMovingAverageModelHook(0.75, device="cpu")
    task = _task(model)
    hook.on_start(task)
    _set_all(model, 1.0)
    for _ in range(3):
        hook.on_step(task)
    ema = hook.state.ema_state
    expected = 1 - 0.75**3  # decay weighs the EMA, not the new weights (a 0.5 test could not tell)
    for name, tensor in ema.items():
        if name.endswith("num_batches_tracked"):
            assert tensor.dtype == torch.int64 and int(tensor) == 10  # copied, not averaged
        else:
            tol = 1e-2 if tensor.dtype == torch.bfloat16 else 1e-6
            assert torch.allclose(tensor.double(), torch.full_like(tensor, expected).double(), atol=tol), name
    assert {t.dtype for t in ema.values()} == {torch.float32, torch.float64, torch.bfloat16, torch.int64}
    assert hook.state.num_updates == 3


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.append(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


def test_one_fused_op_per_device_dtype_group_and_no_host_sync() -> None:
    model = MixedModel()
    hook = ExponentialMovingAverageModelHook(0.9)
    task = _task(model)
    hook.on_start(task)
    hook.on_step(task)  # builds the groups
    with _OpRecorder() as recorder:
        hook.on_step(task)
    assert sorted(recorder.ops) == ["_foreach_copy_", "_foreach_lerp_", "_foreach_lerp_", "_foreach_lerp_"]
    assert not any(op in recorder.ops for op in ("_local_scalar_dense", "item", "to", "_to_copy"))


def test_micro_steps_and_test_phases_do_not_update() -> None:
    model = MixedModel()
    hook = ExponentialMovingAverageModelHook(0.9)
    task = _task(model)
    hook.on_start(task)
    task.is_optimizer_step = False
    hook.on_step(task)
    task.is_optimizer_step, task.train = True, False
    hook.on_step(task)
    assert hook.state.num_updates == 0


def test_test_phases_use_ema_weights_and_train_phases_resume_exact_training_weights() -> None:
    model = MixedModel()
    _set_all(model, 0.0)
    hook = ExponentialMovingAverageModelHook(0.9)
    task = _task(model)
    hook.on_start(task)
    hook.on_phase_start(task)
    _set_all(model, 1.0)
    hook.on_step(task)
    training = {k: v.clone() for k, v in model.state_dict().items()}
    pointers = {n: p.data_ptr() for n, p in model.named_parameters()}
    task.train = False
    hook.on_phase_start(task)
    assert hook.state.swapped
    assert torch.allclose(model.a.weight, torch.full_like(model.a.weight, 0.1))
    assert torch.allclose(model.bn.running_mean, torch.full((4,), 0.1))
    task.train = True
    hook.on_phase_start(task)
    assert not hook.state.swapped
    for key, value in model.state_dict().items():
        assert torch.equal(value, training[key]), key  # bit-identical
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == pointers  # the same storage, not a copy


def _storages(*groups: Any) -> int:
    seen: dict[int, int] = {}
    for group in groups:
        for t in group:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def test_the_hook_holds_one_extra_copy_before_and_after_swaps() -> None:
    model = MixedModel()
    hook = ExponentialMovingAverageModelHook(0.9)
    task = _task(model)
    hook.on_start(task)
    live = list(model.parameters()) + list(model.buffers())
    one_copy = _storages(live)
    for train in (False, True, False):
        task.train = train
        hook.on_phase_start(task)
        held = [v for v in vars(hook.state).values() if isinstance(v, torch.Tensor)] + list(
            hook.state.ema_state.values()
        )
        assert _storages(list(model.parameters()) + list(model.buffers()), held) == 2 * one_copy


def test_task_ema_false_evaluates_the_training_weights() -> None:
    model = MixedModel()
    hook = ExponentialMovingAverageModelHook(0.9)
    task = _task(model, train=False, ema=False)
    hook.on_start(task)
    hook.on_phase_start(task)
    assert not hook.state.swapped


def test_without_bn_buffers_only_parameters_are_tracked() -> None:
    hook = ExponentialMovingAverageModelHook(0.9, consider_bn_buffers=False)
    hook.on_start(_task(MixedModel()))
    assert not any(name.startswith("bn.running") for name in hook.state.ema_state)
    assert "bn.weight" in hook.state.ema_state


def test_warmup_schedule() -> None:
    hook = ExponentialMovingAverageModelHook(0.99, warmup_steps=10)
    decays = []
    for n in range(3):
        hook.state.num_updates = n
        decays.append(hook.current_decay())
    assert decays == pytest.approx([1 / 10, 2 / 11, 3 / 12])
    hook.state.num_updates = 10_000
    assert hook.current_decay() == 0.99


def test_gpu_device_on_a_cpu_model_keeps_the_copy_on_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    hook = ExponentialMovingAverageModelHook(0.9, device="gpu")
    with caplog.at_level(logging.INFO):
        hook.on_start(_task(MixedModel()))
    assert "stays next to it on the CPU" in caplog.text
    assert {t.device.type for t in hook.state.ema_state.values()} == {"cpu"}


def test_state_round_trips_through_a_weights_only_checkpoint() -> None:
    model = MixedModel()
    hook = ExponentialMovingAverageModelHook(0.9)
    task = _task(model)
    hook.on_start(task)
    _set_all(model, 2.0)
    hook.on_step(task)
    buffer = io.BytesIO()
    torch.save(hook.get_classy_state(), buffer)
    buffer.seek(0)
    restored = ExponentialMovingAverageModelHook(0.9)
    restored.set_classy_state(torch.load(buffer, weights_only=True))
    restored.on_start(_task(model))
    assert restored.state.num_updates == 1
    for name, tensor in hook.state.ema_state.items():
        assert torch.equal(restored.state.ema_state[name], tensor)


def test_restored_state_for_another_model_is_a_clear_error() -> None:
    hook = ExponentialMovingAverageModelHook(0.9)
    hook.set_classy_state({"ema_state": {"other.weight": torch.zeros(1)}})
    with pytest.raises(HookConfigError, match="does not match the model"):
        hook.on_start(_task(MixedModel()))


def test_on_start_checks_the_task() -> None:
    with pytest.raises(TypeError, match=r"ExponentialMovingAverageModelHook.*base_model"):
        ExponentialMovingAverageModelHook(0.9).on_start(object())


def test_in_the_reference_loop_evaluation_uses_ema_weights() -> None:
    hook = ExponentialMovingAverageModelHook(0.5)
    task = make_task([hook], num_epochs=1)
    task.run()
    # The last phase is a test phase: the model holds the EMA weights and the hook the training ones.
    assert hook.state.swapped and hook.state.num_updates == 8
    hook.swap(task)
    assert not hook.state.swapped
