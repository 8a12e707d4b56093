"""_common.RunningLoss: the step-loss sums TensorboardPlotHook and LossLrMeterLoggingHook log between two reads."""

from __future__ import annotations

import math

import torch

from classy_hooks.logging._common import RunningLoss


def test_mean_of_tensor_and_float_losses_and_none_is_not_counted() -> None:
    running = RunningLoss()
    assert running.mean() is None
    for loss in (torch.tensor(1.0), None, 2.0, torch.tensor(6.0)):
        running.add(loss)
    assert running.count == 3
    assert running.mean() == 3.0
    running.reset()
    assert running.mean() is None and running.count == 0


def test_bf16_losses_are_summed_in_float32() -> None:
    running = RunningLoss()
    for _ in range(1000):
        running.add(torch.tensor(1.001, dtype=torch.bfloat16))
    step = float(torch.tensor(1.001, dtype=torch.bfloat16))
    mean = running.mean()
    assert mean is not None and math.isclose(mean, step, rel_tol=1e-6)  # a bf16 sum would stall at 256


def test_the_callers_loss_tensor_is_never_changed() -> None:
    loss = torch.tensor(2.0)
    running = RunningLoss()
    running.add(loss)
    running.add(torch.tensor(4.0))
    assert loss.item() == 2.0 and running.mean() == 3.0
