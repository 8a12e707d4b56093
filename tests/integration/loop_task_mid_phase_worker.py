"""A plain loop on `LoopTask` with step checkpoints, run straight or SIGKILLed at a chosen batch and started again.

`loop_task_mid_phase_worker.py FOLDER [KILL_PHASE KILL_BATCH]`: four phases (train, test, train, test) of a
shuffling DataLoader (its order drawn from the global generator), with input noise and dropout (more draws)
and gradient accumulation every 3 batches of 10 (an optimizer step also ends each train phase), EMA and a
checkpoint every 2 optimizer steps. With KILL_*, rank 0 SIGKILLs itself right after that batch. A start on a
folder holding a checkpoint resumes from its newest (`classy_hooks.model.resume_task`) and writes the data
position it continued from to FOLDER/resumed-<rank>.txt, and at its end the number of training samples it
loaded to FOLDER/loaded-<rank>.txt. With LOOP_TASK_LOADER=stateful the training data is torchdata's
StatefulDataLoader, which keeps its own position. Runs on one process or under torchrun (gloo, DDP).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from classy_hooks.core import LoopTask, build_hooks, get_rank, get_world_size
from classy_hooks.model import resume_task
from helpers import CountingDataset
from reference_trainer.meters import AccuracyMeter

ACCUMULATE = 3


def training_loader(dataset: CountingDataset) -> Any:
    """A shuffling loader of batches of 4: torch's DataLoader, or torchdata's StatefulDataLoader if asked."""
    if os.environ.get("LOOP_TASK_LOADER") == "stateful":
        from torchdata.stateful_dataloader import StatefulDataLoader

        return StatefulDataLoader(dataset, batch_size=4, shuffle=True)
    return DataLoader(dataset, batch_size=4, shuffle=True)


def main() -> None:
    folder = sys.argv[1]
    kill_at = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else None
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world = get_rank(), get_world_size()
    torch.manual_seed(0)
    inputs, targets = torch.randn(40 * world, 6), torch.randint(0, 3, (40 * world,))
    shard = TensorDataset(inputs[rank::world], targets[rank::world])  # 40 samples, 10 batches on each rank
    counted = CountingDataset(*shard.tensors)
    train = training_loader(counted)
    test = DataLoader(shard, batch_size=8)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    wrapped = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hooks = build_hooks(
        [
            {"name": "ema_model_weights", "decay": 0.8, "device": "cpu"},
            {"name": "checkpoint", "checkpoint_folder": folder, "checkpoint_every_n_steps": 2, "phase_types": ["train", "test"]},
        ]
    )
    task = LoopTask(model, optimizer, hooks, meters=[AccuracyMeter(topk=(1,))], distributed_model=wrapped)
    if os.path.exists(os.path.join(folder, "checkpoint.torch")):
        state = resume_task(task, folder)["classy_state_dict"]
        position = state.get("data_position") or {}
        with open(os.path.join(folder, f"resumed-{rank}.txt"), "w", encoding="utf-8") as handle:
            handle.write(f"{state['phase_idx']} {position.get('batches')}")
    for _, data in task.run_phases([("train", train), ("test", test)] * 2):
        for x, y in data:
            batch_idx = task.batches_done  # not enumerate(data): a resumed phase starts after batch 0
            batch = {"input": x + 0.1 * torch.randn_like(x), "target": y}
            with torch.set_grad_enabled(task.train):
                output = wrapped(batch["input"])
                loss = nn.functional.cross_entropy(output, y)
            optimizer_step = task.train and ((batch_idx + 1) % ACCUMULATE == 0 or batch_idx + 1 == len(data))
            if task.train:
                (loss / ACCUMULATE).backward()
                if optimizer_step:
                    optimizer.step()
                    optimizer.zero_grad()
            task.step(batch, output, loss, optimizer_step=optimizer_step)
            if kill_at == (task.phase_idx, batch_idx + 1) and rank == 0:
                os.kill(os.getpid(), signal.SIGKILL)
    with open(os.path.join(folder, f"loaded-{rank}.txt"), "w", encoding="utf-8") as handle:
        handle.write(str(counted.loaded))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
