"""A plain PyTorch loop over hooks built by name, run by the Python of a venv made from a README install line.

Usage: python installed_hooks_loop.py CONFIGS_JSON RUN_DIR. Hooks whose config builds are trained with for two
epochs (train and test phases, a checkpoint, a resume of the hook state); a hook whose extra is missing is reported
with its error message instead. Prints one JSON line: the hooks that ran, the messages of those that could not be
built, whether the weights stayed finite, and the modules the run imported.
"""

from __future__ import annotations

import json
import sys

import torch
from torch import nn

from classy_hooks.core import (
    ClassyHookFunctions,
    LastBatch,
    MissingExtraError,
    build_hook,
    call_hooks,
    get_hooks_state,
    set_hooks_state,
)


class Accuracy:
    """The smallest meter: top-1 accuracy of the phase."""

    name = "accuracy"

    def __init__(self) -> None:
        self.correct = self.total = 0

    @property
    def value(self) -> dict[str, float]:
        return {"top_1": self.correct / max(self.total, 1)}


class PlainTask:
    """The task attributes the hooks read, on a tiny CNN with random data (2 train + 2 test phases)."""

    use_gpu = False
    test_only = False

    def __init__(self, hooks: list) -> None:
        torch.manual_seed(0)
        self.base_model = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4, 3),
        )
        self.base_model.input_shape = (3, 8, 8)
        self.model = self.base_model
        self.optimizer = torch.optim.SGD(self.base_model.parameters(), lr=0.1)
        self.hooks = hooks
        self.phases = [True, False, True, False]
        self.batches = {
            train: [
                {"input": torch.randn(8, 3, 8, 8), "target": torch.randint(0, 3, (8,)), "id": torch.arange(8 * i, 8 * i + 8)}
                for i in range(3)
            ]
            for train in (True, False)
        }
        self.phase_idx = self.train_phase_idx = -1
        self.num_updates, self.train, self.losses = 0, True, []
        self.meters, self.last_batch, self.dataloader = [Accuracy()], None, None
        self.is_optimizer_step = True

    phase_type = property(lambda self: "train" if self.train else "test")
    num_batches_per_phase = property(lambda self: len(self.dataloader or []))
    where = property(lambda self: min(self.num_updates / (2 * 3 * 8), 1.0))

    def get_batchsize_per_replica(self) -> int:
        return 8

    def get_global_batchsize(self) -> int:
        return 8

    def get_classy_state(self, deep_copy: bool = False) -> dict:
        return {
            "base_model": self.base_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "phase_idx": self.phase_idx, "train_phase_idx": self.train_phase_idx, "train": self.train,
            "num_updates": self.num_updates, "losses": [float(x) for x in self.losses],
            "hooks": get_hooks_state(self.hooks),
        }

    def set_classy_state(self, state: dict) -> None:
        self.base_model.load_state_dict(state["base_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_hooks_state(self.hooks, state["hooks"])

    def run(self) -> None:
        call_hooks(self.hooks, ClassyHookFunctions.on_start, self)
        for train in self.phases:
            self.phase_idx += 1
            self.train_phase_idx += int(train)
            self.train, self.losses, self.meters = train, [], [Accuracy()]
            self.dataloader = self.batches[train]
            self.base_model.train(train)
            call_hooks(self.hooks, ClassyHookFunctions.on_phase_start, self)
            for batch in self.dataloader:
                with torch.set_grad_enabled(train):
                    output = self.model(batch["input"])
                    loss = nn.functional.cross_entropy(output, batch["target"])
                if train:
                    loss.backward()
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                    self.num_updates += 8
                self.meters[0].correct += int((output.argmax(1) == batch["target"]).sum())
                self.meters[0].total += 8
                self.losses.append(loss.detach())
                self.last_batch = LastBatch(loss.detach(), output.detach(), batch["target"], batch, {})
                call_hooks(self.hooks, ClassyHookFunctions.on_step, self)
            self.losses = [float(x) for x in self.losses]
            call_hooks(self.hooks, ClassyHookFunctions.on_phase_end, self)
        call_hooks(self.hooks, ClassyHookFunctions.on_end, self)


def main() -> None:
    configs, run_dir = json.loads(sys.argv[1]), sys.argv[2]
    hooks, missing = [], {}
    for config in configs:
        try:
            hooks.append(build_hook(json.loads(json.dumps(config).replace("{run_dir}", run_dir))))
        except MissingExtraError as exc:
            missing[config["name"]] = str(exc)
    task = PlainTask(hooks)
    task.run()
    restored = PlainTask([build_hook(json.loads(json.dumps(c).replace("{run_dir}", run_dir))) for c in configs
                          if c["name"] not in missing])
    set_hooks_state(restored.hooks, get_hooks_state(task.hooks))  # hook state round-trips through a checkpoint
    finite = all(bool(torch.isfinite(p).all()) for p in task.base_model.parameters())
    print(json.dumps({"hooks": [type(h).__name__ for h in hooks], "missing": missing, "finite": finite,
                      "torch": torch.__version__, "modules": sorted(sys.modules)}))


if __name__ == "__main__":
    main()
