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

from bad_input import assert_reported
from classy_hooks.core import HookConfigError, TaskContractError, build_hook
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
    assert hook.ema_dtype == "auto"
    assert isinstance(ExponentialMovingAverageModelHook.from_config({"decay": 0.5, "device": "cpu"}), type(hook))
    assert ExponentialMovingAverageModelHook.from_config({"decay": 0.5, "ema_dtype": "float64"}).ema_dtype == "float64"
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
        ({"decay": 0.9, "ema_dtype": "fp8"}, "ema_dtype"),
        ({"decay": 0.9, "ema_dtype": None}, "ema_dtype"),
        ({"decay": 0.9, "update_period": 0}, "update_period"),
        ({"decay": 0.9, "update_period": 2.5}, "update_period"),
        ({"decay": 0.9, "update_period": "4"}, "update_period"),
        ({"decay": 0.9, "decy": 1}, "decy"),
        ({}, "decay"),
    ],
)
def test_bad_config_is_a_value_error(config: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=rf"ExponentialMovingAverageModelHook.*'{argument}'"):
        build_hook({"name": "ema_model_weights", **config})
    assert issubclass(HookConfigError, ValueError)


@pytest.mark.parametrize(
    ("ema_dtype", "bf16_average"), [("param", torch.bfloat16), ("auto", torch.float32), ("float32", torch.float32)]
)
def test_update_is_exact_for_every_floating_dtype_and_copies_integers(
    ema_dtype: str, bf16_average: torch.dtype
) -> None:
    model = MixedModel()
    _set_all(model, 0.0)
    hook = ExponentialMovingAverageModelHook(0.75, device="cpu", ema_dtype=ema_dtype)
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
    assert ema["c"].dtype == bf16_average
    assert ema["b.weight"].dtype == (torch.float32 if ema_dtype == "float32" else torch.float64)
    assert hook.state.num_updates == 3


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.append(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    ("ema_dtype", "ops"),
    [
        ("param", ["_foreach_copy_", "_foreach_lerp_", "_foreach_lerp_", "_foreach_lerp_"]),
        # the bf16 parameter's fp32 average: mul_ + add_ read the bf16 weights as they are (no cast copy)
        ("auto", ["_foreach_add_", "_foreach_copy_", "_foreach_lerp_", "_foreach_lerp_", "_foreach_mul_"]),
    ],
)
def test_one_fused_op_per_device_dtype_group_and_no_host_sync(ema_dtype: str, ops: list[str]) -> None:
    model = MixedModel()
    hook = ExponentialMovingAverageModelHook(0.9, ema_dtype=ema_dtype)
    task = _task(model)
    hook.on_start(task)
    hook.on_step(task)  # builds the groups
    with _OpRecorder() as recorder:
        hook.on_step(task)
    assert sorted(recorder.ops) == ops
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


@pytest.mark.parametrize("ema_dtype", ["param", "auto"])
def test_the_hook_holds_one_extra_copy_before_and_after_swaps(ema_dtype: str) -> None:
    model = MixedModel()
    hook = ExponentialMovingAverageModelHook(0.9, ema_dtype=ema_dtype)
    task = _task(model)
    hook.on_start(task)
    live = list(model.parameters()) + list(model.buffers())
    one_copy = _storages(live)
    # "param": the copy is the model's size; "auto": the bf16 parameter's average is fp32 (2 x its bytes),
    # and while swapped its bf16 training weights are set aside (so that the average is never rounded)
    extra = one_copy if ema_dtype == "param" else one_copy + model.c.numel() * 2
    for train in (False, True, False):
        task.train = train
        hook.on_phase_start(task)
        held = [v for v in vars(hook.state).values() if isinstance(v, torch.Tensor)] + list(
            hook.state.ema_state.values()
        )
        aside = list(hook._held.values())  # the hook's own bookkeeping, counted here on purpose
        set_aside = 0 if ema_dtype == "param" or train else model.c.numel() * 2
        assert _storages(aside) == set_aside
        assert _storages(list(model.parameters()) + list(model.buffers()), held) == one_copy + extra


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


def test_warmup_schedule_with_an_update_period_counts_optimizer_steps() -> None:
    hook = ExponentialMovingAverageModelHook(0.99, warmup_steps=10, update_period=4)
    decays = []
    for n in range(3):
        hook.state.num_updates = n  # update n comes after 4 * n optimizer steps
        decays.append(hook.current_decay())
    assert decays == pytest.approx([(1 / 10) ** 4, (5 / 14) ** 4, (9 / 18) ** 4])
    hook.state.num_updates = 10_000
    assert hook.current_decay() == pytest.approx(0.99**4)


def _train_steps(model: nn.Module, steps: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Weights after each of `steps` pretend optimizer steps (seeded, so runs can be replayed)."""
    generator = torch.Generator().manual_seed(seed)
    weights = []
    for _ in range(steps):
        weights.append(
            {n: torch.randn(t.shape, generator=generator).to(t.dtype) for n, t in model.state_dict().items()}
        )
    return weights


def _load(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(weights[name].to(tensor.dtype) if tensor.is_floating_point() else weights[name].abs())


@pytest.mark.parametrize(("period", "warmup"), [(1, 0), (3, 0), (4, 6)])
def test_update_period_is_exact_against_a_reference_with_the_same_schedule(period: int, warmup: int) -> None:
    """Every `period`-th optimizer step: ema = d**k * ema + (1 - d**k) * w (micro-steps and test steps skipped)."""
    torch.manual_seed(0)
    model = MixedModel()
    decay = 0.9
    hook = ExponentialMovingAverageModelHook(decay, warmup_steps=warmup, update_period=period, ema_dtype="param")
    task = _task(model)
    hook.on_start(task)
    reference = {n: t.detach().clone() for n, t in model.state_dict().items()}
    optimizer_steps = updates = 0
    for i, weights in enumerate(_train_steps(model, 14, seed=1)):
        _load(model, weights)
        task.is_optimizer_step = i % 5 != 4  # every fifth step is a gradient-accumulation micro-step
        hook.on_step(task)
        if not task.is_optimizer_step:
            continue
        optimizer_steps += 1
        if optimizer_steps % period == 0:
            steps_before = updates * period
            per_step = decay if warmup == 0 else min(decay, (1 + steps_before) / (warmup + steps_before))
            weight = 1 - per_step**period
            for name, tensor in model.state_dict().items():
                if tensor.is_floating_point():
                    reference[name].lerp_(tensor, weight)
                else:
                    reference[name].copy_(tensor)
            updates += 1
    assert hook.state.num_updates == updates == 12 // period  # 14 steps, 2 of them micro-steps
    assert hook.state.steps_in_period == 12 % period
    for name, tensor in hook.state.ema_state.items():
        assert torch.equal(tensor, reference[name]), name


def test_a_resume_in_the_middle_of_an_update_period_continues_exactly() -> None:
    weights = _train_steps(MixedModel(), 10, seed=2)

    def run(hook: ExponentialMovingAverageModelHook, model: nn.Module, steps: list[dict[str, torch.Tensor]]) -> None:
        task = _task(model)
        hook.on_start(task)
        for w in steps:
            _load(model, w)
            hook.on_step(task)

    torch.manual_seed(0)
    straight_model = MixedModel()
    straight = ExponentialMovingAverageModelHook(0.8, update_period=4)
    run(straight, straight_model, weights)

    torch.manual_seed(0)
    model = MixedModel()
    first = ExponentialMovingAverageModelHook(0.8, update_period=4)
    run(first, model, weights[:6])  # one update, then 2 steps into the second period
    assert (first.state.num_updates, first.state.steps_in_period) == (1, 2)
    buffer = io.BytesIO()
    torch.save(first.get_classy_state(), buffer)
    buffer.seek(0)
    resumed = ExponentialMovingAverageModelHook(0.8, update_period=4)
    resumed.set_classy_state(torch.load(buffer, weights_only=True))
    run(resumed, model, weights[6:])
    assert (resumed.state.num_updates, resumed.state.steps_in_period) == (2, 2)
    for name, tensor in straight.state.ema_state.items():
        assert torch.equal(resumed.state.ema_state[name], tensor), name


def test_a_state_saved_before_update_period_existed_starts_a_new_period() -> None:
    hook = ExponentialMovingAverageModelHook(0.9, update_period=2)
    model = MixedModel()
    hook.set_classy_state({"ema_state": {k: v.clone() for k, v in model.state_dict().items()}, "num_updates": 3})
    task = _task(model)
    hook.on_start(task)
    hook.on_step(task)
    assert (hook.state.num_updates, hook.state.steps_in_period) == (3, 1)
    hook.on_step(task)
    assert (hook.state.num_updates, hook.state.steps_in_period) == (4, 0)


def test_averaged_weights_in_swaps_in_the_ema_and_back() -> None:
    model = MixedModel()
    _set_all(model, 0.0)
    hook = ExponentialMovingAverageModelHook(0.5)
    task = _task(model)
    hook.on_start(task)
    _set_all(model, 1.0)
    hook.on_step(task)
    assert hook.averages_bn_statistics() and not hook.holds_averaged_weights()
    with hook.averaged_weights_in(task):
        assert hook.holds_averaged_weights()
        assert torch.allclose(model.a.weight, torch.full_like(model.a.weight, 0.5))
        model.bn.running_mean.fill_(7.0)  # written while the EMA is in: it stays in the EMA
    assert not hook.holds_averaged_weights()
    assert torch.equal(model.a.weight, torch.ones_like(model.a.weight))
    assert torch.equal(hook.state.ema_state["bn.running_mean"], torch.full((4,), 7.0))
    task.train = False
    hook.on_phase_start(task)  # a test phase: already holding the EMA, the context changes nothing
    with hook.averaged_weights_in(task):
        assert hook.holds_averaged_weights()
    assert hook.holds_averaged_weights()
    assert not ExponentialMovingAverageModelHook(0.5, consider_bn_buffers=False).averages_bn_statistics()


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


def _bf16_ulp(x: torch.Tensor) -> torch.Tensor:
    """Distance from each bf16 value to the next one up in magnitude (as float64)."""
    b = x.to(torch.bfloat16).abs()
    return (torch.nextafter(b, torch.full_like(b, float("inf"))) - b).double()


@pytest.mark.parametrize("ema_dtype", ["auto", "param"])
def test_bf16_weights_track_a_float64_reference_within_bf16_rounding(
    ema_dtype: str, caplog: pytest.LogCaptureFixture
) -> None:
    """300 steps of decay 0.9999 on bf16 weights with a test phase half way, against an fp64 EMA of the same weights."""
    decay, steps = 0.9999, 300
    gen = torch.Generator().manual_seed(0)
    model = nn.Linear(64, 64).to(torch.bfloat16)
    hook = ExponentialMovingAverageModelHook(decay, ema_dtype=ema_dtype)
    task = _task(model)
    with caplog.at_level(logging.WARNING):
        hook.on_start(task)
    reference = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    start = {n: r.clone() for n, r in reference.items()}
    for step in range(steps):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen).to(torch.bfloat16), alpha=0.01)
        hook.on_step(task)
        for n, p in model.named_parameters():
            reference[n].lerp_(p.detach().double(), 1 - decay)
        if step == steps // 2:  # a test phase: the average is cast into the model and back
            training = {n: p.detach().clone() for n, p in model.named_parameters()}
            task.train = False
            hook.on_phase_start(task)
            task.train = True
            hook.on_phase_start(task)
            for n, p in model.named_parameters():
                assert torch.equal(p, training[n])  # training resumes from the exact training weights
    task.train = False
    hook.on_phase_start(task)  # the final test phase evaluates the average, in bf16
    for n, p in model.named_parameters():
        ref, evaluated = reference[n], p.detach().double()
        moved = (ref - start[n]).abs().mean()
        error = (evaluated - ref).abs()
        if ema_dtype == "auto":
            assert p.dtype == torch.bfloat16 and hook.state.ema_state[n].dtype == torch.float32
            # within bf16 rounding of the result (half an ulp, plus the fp32 average's own error near
            # rounding ties); the test phase half way did not round the average
            assert bool((error <= _bf16_ulp(ref) / 2 + 2e-6).all()), n
            assert bool(((hook.state.ema_state[n].double() - ref).abs() <= 2e-6).all()), n
            assert float(error.mean()) < 0.1 * float(moved), n
        else:  # Classy Vision's bf16 average: updates of 1e-4 of the distance round away, the EMA stays put
            assert float((p.detach().double() == start[n]).double().mean()) > 0.9, n
            assert float(error.mean()) > 0.9 * float(moved), n
    frozen_warning = "cannot move" in caplog.text
    assert frozen_warning == (ema_dtype == "param")


def test_a_low_precision_average_that_cannot_move_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        ExponentialMovingAverageModelHook(0.9999, ema_dtype="bfloat16").on_start(_task(nn.Linear(2, 2)))
    assert "ExponentialMovingAverageModelHook" in caplog.text and "decay=0.9999" in caplog.text
    assert "torch.bfloat16" in caplog.text and "ema_dtype='auto'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ExponentialMovingAverageModelHook(1 - 1e-8).on_start(_task(nn.Linear(2, 2)))  # below float32's too
        assert "torch.float32" in caplog.text
        caplog.clear()
        ExponentialMovingAverageModelHook(0.9999).on_start(_task(nn.Linear(2, 2).to(torch.bfloat16)))  # auto: fp32
        ExponentialMovingAverageModelHook(1.0).on_start(_task(nn.Linear(2, 2)))  # frozen on purpose
        ExponentialMovingAverageModelHook(0.99, ema_dtype="bfloat16").on_start(_task(nn.Linear(2, 2)))
    assert caplog.text == ""


def test_prepare_to_load_lays_out_the_state_to_load_into_in_place() -> None:
    model = MixedModel()
    saved = ExponentialMovingAverageModelHook(0.9)
    task = _task(model)
    saved.on_start(task)
    _set_all(model, 3.0)
    saved.on_step(task)
    _set_all(model, 1.0)
    hook = ExponentialMovingAverageModelHook(0.9)
    hook.prepare_to_load(task)
    target = hook.get_classy_state()["ema_state"]
    assert {n: (t.shape, t.dtype) for n, t in target.items()} == {
        n: (t.shape, t.dtype) for n, t in saved.state.ema_state.items()
    }
    assert target["c"].dtype == torch.float32 and torch.equal(target["a.weight"], model.a.weight)
    for name, tensor in target.items():  # what an in-place loader (torch.distributed.checkpoint) does
        tensor.copy_(saved.state.ema_state[name])
    hook.on_start(task)
    for name, tensor in saved.state.ema_state.items():
        assert torch.equal(hook.state.ema_state[name], tensor)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="device='cpu' with a CUDA model needs a GPU")
def test_cpu_ema_of_a_cuda_model_reads_complete_copies() -> None:
    """The weights change on the GPU right before each update: a copy read before it lands would be stale."""
    model = nn.Sequential(nn.Linear(2048, 2048), nn.BatchNorm1d(2048)).cuda()
    hook = ExponentialMovingAverageModelHook(0.5, device="cpu")
    task = _task(model)
    hook.on_start(task)
    reference = {n: p.detach().cpu().double() for n, p in model.named_parameters()}
    x = torch.randn(2048, 2048, device="cuda")
    for _ in range(5):
        with torch.no_grad():
            for _ in range(10):  # queue long kernels that write into the weights
                model[0].weight.copy_(torch.tanh(x @ model[0].weight))
        hook.on_step(task)
        for n, p in model.named_parameters():
            reference[n].lerp_(p.detach().cpu().double(), 0.5)
    assert {t.device.type for t in hook.state.ema_state.values()} == {"cpu"}
    for n, ref in reference.items():
        assert torch.allclose(hook.state.ema_state[n].double(), ref, atol=1e-5), n
    task.train = False
    hook.on_phase_start(task)
    assert torch.allclose(model[0].weight.cpu().double(), reference["0.weight"], atol=1e-5)


def test_a_checkpoint_taken_while_swapped_resumes_exact_training_weights_for_bf16_weights() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8)).to(torch.bfloat16)
    hook = ExponentialMovingAverageModelHook(0.9)
    task = _task(model)
    hook.on_start(task)
    with torch.no_grad():
        model[0].weight.add_(0.3)
    hook.on_step(task)
    training = {k: v.clone() for k, v in model.state_dict().items()}
    average = {k: v.clone() for k, v in hook.state.ema_state.items()}
    task.train = False
    hook.on_phase_start(task)  # a test phase; the checkpoint at its end sees the swapped state
    state = hook.get_classy_state()
    for name, tensor in state["ema_state"].items():  # the training weights, in the EMA's dtype, as always
        assert tensor.dtype == average[name].dtype and torch.equal(tensor, training[name].to(tensor.dtype)), name
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "hook": state}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8)).to(torch.bfloat16)
    resumed_model.load_state_dict(saved["model"])
    resumed = ExponentialMovingAverageModelHook(0.9)
    resumed.set_classy_state(saved["hook"])
    resumed_task = _task(resumed_model)
    resumed.on_start(resumed_task)
    resumed.on_phase_start(resumed_task)  # the next train phase
    for key, value in resumed_model.state_dict().items():
        assert torch.equal(value, training[key]), key  # bit-identical training weights
    for name, tensor in resumed.state.ema_state.items():  # the average, rounded once to bf16 by the resume
        assert torch.equal(tensor, average[name].to(torch.bfloat16).to(tensor.dtype)), name


def test_state_keys_are_the_plain_modules_through_compile_and_ddp_wrappers() -> None:
    model = MixedModel()
    plain = ExponentialMovingAverageModelHook(0.9)
    plain.on_start(_task(model))
    model.a = torch.compile(model.a)  # a compiled submodule adds `_orig_mod` in the middle of its names
    wrapped = ExponentialMovingAverageModelHook(0.9)
    wrapped.on_start(_task(torch.compile(model)))
    assert set(wrapped.state.ema_state) == set(plain.state.ema_state)
    assert "a.weight" in wrapped.state.ema_state


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----

@pytest.mark.parametrize(
    ("config", "argument", "fix"),
    [
        pytest.param({}, "decay", "Add it to the hook's config", id="decay-key-missing"),
        pytest.param({"decay": 1.5}, "decay", "Pass a value between 0.0 and 1.0", id="decay-above-one"),
        pytest.param({"decay": 0.9, "device": "tpu"}, "device", "Pass one of 'gpu', 'cpu'", id="device-unknown"),
    ],
)
def test_bad_config_is_reported_by_the_constructor(config: dict[str, Any], argument: str, fix: str) -> None:
    with pytest.raises(HookConfigError) as info:
        build_hook({"name": "ema_model_weights", **config})
    assert_reported(info.value, HookConfigError, ("ExponentialMovingAverageModelHook", argument, fix))


def test_task_without_base_model_is_reported_at_on_start() -> None:
    task = make_task([build_hook({"name": "ema_model_weights", "decay": 0.9})])
    del task.base_model
    with pytest.raises(TaskContractError) as info:
        task.run()
    assert_reported(info.value, TaskContractError, ("ExponentialMovingAverageModelHook", "base_model", "Add them"))
    assert task.num_updates == 0


def test_state_restored_from_another_model_is_reported_at_on_start() -> None:
    hook = ExponentialMovingAverageModelHook(decay=0.9)
    hook.set_classy_state({"ema_state": {"fc.weight": torch.zeros(4, 4)}, "num_updates": 3, "swapped": False})
    task = make_task([hook])
    with pytest.raises(HookConfigError) as info:
        task.run()
    assert_reported(info.value, HookConfigError, ("ExponentialMovingAverageModelHook", "EMA state", "Resume with the same model"))
    assert task.num_updates == 0
