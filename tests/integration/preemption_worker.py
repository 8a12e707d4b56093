"""torchrun worker for the preemption test: one straight run, then runs the test SIGTERMs and resumes in turn.

`preemption_worker.py OUT CONFIG_JSON`. Every rank: trains `CONFIG` straight into OUT/straight; then
rounds of attempts into OUT/round-<k>: each attempt builds the task, resumes from the folder's newest
checkpoint exactly as `tools/train.py --resume` does (`reference_trainer.train.resume`), and runs
until it finishes or CheckpointHook raises `TrainingPreempted`. Rank 0 appends what happens to
OUT/events.log ("started", "preempted", "finished" lines), which the test reads to time its signals;
each rank writes its pid to OUT/rank<r>.pid. The job ends when OUT/stop exists after a round finished.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import torch
import torch.distributed as dist

from classy_hooks.core import ClassyHook
from classy_hooks.core.preemption import TrainingPreempted
from reference_trainer.task import ReferenceTask
from reference_trainer.train import resume


class _AnnounceStart(ClassyHook):
    """Rank 0 logs "started" at the attempt's first phase start: every hook's on_start (signal handlers) is done."""

    on_start = on_step = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, log: Any, attempt: int) -> None:
        super().__init__()
        self.log, self.attempt, self.announced = log, attempt, False

    def on_phase_start(self, task: Any) -> None:
        if not self.announced and dist.get_rank() == 0:
            self.log(f"started {self.attempt}")
        self.announced = True


def main() -> None:
    out, config = sys.argv[1], json.loads(sys.argv[2])
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = dist.get_rank()
    # a SIGTERM outside an attempt's training (between attempts) is dropped instead of killing the rank
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.path.join(out, f"rank{rank}.pid"), "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))

    def log(line: str) -> None:
        with open(os.path.join(out, "events.log"), "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def build(folder: str, extra: list[ClassyHook]) -> ReferenceTask:
        text = json.dumps(config).replace("{run_dir}", folder)
        task = ReferenceTask.from_config(json.loads(text), run_dir=folder)
        task.hooks = [*task.hooks, *extra]
        return task

    build(os.path.join(out, "straight"), []).run()
    if rank == 0:
        log("straight done")
    attempt, round_idx = 0, 0
    while True:
        folder = os.path.join(out, f"round-{round_idx}")
        checkpoints = os.path.join(folder, "checkpoints")
        attempt += 1
        task = build(folder, [_AnnounceStart(log, attempt)])
        if os.path.exists(os.path.join(checkpoints, "checkpoint.torch")):
            resume(task, checkpoints)
        try:
            task.run()
        except TrainingPreempted as stop:
            if rank == 0:
                log(f"preempted {attempt} {stop.signal_name} {os.path.basename(stop.checkpoint)}")
            continue
        dist.barrier()
        if rank == 0:
            log(f"finished {round_idx}")
        round_idx += 1
        stop_now = torch.tensor([float(os.path.exists(os.path.join(out, "stop")))])
        dist.broadcast(stop_now, src=0)
        if stop_now.item():
            break
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
