"""Top-k accuracy meter with Classy Vision's meter interface (`name`, `value`, `sync_state`)."""

from __future__ import annotations

from typing import Any

import torch

from classy_hooks.core import all_reduce


class AccuracyMeter:
    """Counts correct top-k predictions on the device, with no host sync until `value` is read."""

    name = "accuracy"

    def __init__(self, topk: tuple[int, ...] = (1, 5)) -> None:
        self.topk = tuple(topk)
        self.reset()

    def reset(self) -> None:
        self.correct = torch.zeros(len(self.topk), dtype=torch.float64)
        self.total = torch.zeros((), dtype=torch.float64)

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        if self.total.device != output.device:  # counts live where the outputs are (no host sync per batch)
            self.correct, self.total = self.correct.to(output.device), self.total.to(output.device)
        if target.dim() == 2:
            target = target.argmax(dim=1)
        k = min(max(self.topk), output.shape[1])
        top = output.topk(k, dim=1).indices
        hits = top.eq(target.unsqueeze(1))
        for i, kk in enumerate(self.topk):
            self.correct[i] += hits[:, : min(kk, k)].any(dim=1).sum()
        self.total += target.shape[0]

    def sync_state(self) -> None:
        """Sum the counts over ranks (a collective: every rank must call it)."""
        all_reduce(self.correct)
        all_reduce(self.total)

    @property
    def value(self) -> dict[str, float]:
        denom = max(float(self.total), 1.0)
        return {f"top_{k}": float(c) / denom for k, c in zip(self.topk, self.correct.tolist())}

    def get_classy_state(self) -> dict[str, Any]:
        return {"topk": list(self.topk), "correct": self.correct.clone(), "total": self.total.clone()}

    def set_classy_state(self, state: dict[str, Any]) -> None:
        self.correct = state["correct"].clone()
        self.total = state["total"].clone()

    def __repr__(self) -> str:
        return f"{self.name}: " + ", ".join(f"{k}={v:.4f}" for k, v in self.value.items())
