"""foreach_ops: the fused multi-tensor updates, and the exact per-tensor fallback when torch lacks one."""

from __future__ import annotations

import logging

import pytest
import torch

from classy_hooks.model import foreach_ops


def _pairs(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (7,), (2, 2, 5)]
    targets = [torch.randn(s, generator=generator) for s in shapes]
    others = [torch.randn(s, generator=generator) for s in shapes]
    return targets, others


def _run_all(targets: list[torch.Tensor], others: list[torch.Tensor]) -> list[torch.Tensor]:
    foreach_ops.lerp_(targets, others, 0.25)
    wide = [t.double() for t in targets]
    foreach_ops.scale_add_(wide, 0.5, [o.to(torch.bfloat16) for o in others], 0.125)
    copies = [torch.empty_like(t) for t in targets]
    foreach_ops.copy_(copies, targets)
    return [*targets, *wide, *copies]


def test_the_fallback_gives_the_fused_results_and_warns_once_naming_the_torch_version(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fused = _run_all(*_pairs(0))
    monkeypatch.setattr(foreach_ops, "_warned", set())
    for name in ("lerp_", "mul_", "add_", "copy_"):
        monkeypatch.delattr(torch, f"_foreach_{name}")  # a torch without the private fused ops
    with caplog.at_level(logging.WARNING):
        fallback = _run_all(*_pairs(0))
        _run_all(*_pairs(1))
    assert len(fused) == len(fallback)
    for a, b in zip(fused, fallback):
        assert torch.equal(a, b)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 4  # one per missing op, not one per call
    assert all(torch.__version__ in w and foreach_ops.TESTED_TORCH in w for w in warnings)


def test_fused_ops_are_used_when_torch_has_them() -> None:
    assert all(foreach_ops.fused(name) is not None for name in ("lerp_", "mul_", "add_", "copy_"))
    targets, others = _pairs(2)
    expected = [t.lerp(o, 0.25) for t, o in zip(targets, others)]
    foreach_ops.lerp_(targets, others, 0.25)
    assert all(torch.equal(t, e) for t, e in zip(targets, expected))
