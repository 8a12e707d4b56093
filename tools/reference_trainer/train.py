"""Command line of the reference trainer (Classy Vision's `classy_train.py`, minus the framework).

python tools/train.py --config tools/configs/demo.json --run-dir runs/demo [--resume PATH] [--set KEY.PATH=JSON]
torchrun --nproc_per_node 2 tools/train.py --config ... --run-dir ...

Under torchrun the process group is NCCL when the task's device is CUDA (`"device": "auto"` on a GPU machine),
else gloo; each rank uses cuda:LOCAL_RANK.

Exit status: 0 when training finished; `PREEMPTED_EXIT_CODE` (75) when a preemption signal stopped it
after CheckpointHook wrote its checkpoint (`preemption_signals`): requeue the job with `--resume <folder>`.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import warnings
from typing import Any

import torch
import torch.distributed as dist

from classy_hooks.core import get_world_size
from classy_hooks.core.deprecations import JIT_DEPRECATION_MESSAGE
from classy_hooks.core.preemption import TrainingPreempted
from reference_trainer.config import ConfigError, load_config
from reference_trainer.task import ReferenceTask, resolve_device

logger = logging.getLogger("reference_trainer")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train with classy-hooks on synthetic data.")
    parser.add_argument("--config", required=True, help="JSON config (see tools/configs/demo.json)")
    parser.add_argument("--run-dir", required=True, help="folder for everything the hooks write")
    parser.add_argument("--resume", help="checkpoint file or folder to continue from")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override a config key, nested with dots; the value is JSON, e.g. --set dataset.batch_size=64",
    )
    return parser.parse_args(argv)


def filter_known_warnings() -> None:
    """Silence the TorchScript deprecation notices of torch>=2.11 (by message only: torch 2.14 raises them as
    FutureWarning, fvcore's import as DeprecationWarning)."""
    warnings.filterwarnings("ignore", message=JIT_DEPRECATION_MESSAGE)


def read_once_and_broadcast(path: str) -> dict[str, Any]:
    """Rank 0 loads the single-file checkpoint (weights_only) and sends its bytes; every rank loads those bytes.

    One reader instead of one per rank (a shared file system read N times), and no pickle on the wire:
    the bytes are a `torch.save` file that each rank reads with `torch.load(weights_only=True)`.
    classy_hooks.model has no broadcasting loader (`resume_task` reads on every rank), hence this function.
    NCCL moves CUDA tensors only, so under NCCL the bytes travel through the rank's GPU.
    """
    from classy_hooks.model import load_checkpoint

    wire = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    payload = torch.empty(0, dtype=torch.uint8)
    if dist.get_rank() == 0:
        buffer = io.BytesIO()
        torch.save(load_checkpoint(path), buffer)
        payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=wire)
    dist.broadcast(size, src=0)
    if dist.get_rank() != 0:
        payload = torch.empty(int(size.item()), dtype=torch.uint8)
    payload = payload.to(wire)
    dist.broadcast(payload, src=0)
    checkpoint: dict[str, Any] = torch.load(io.BytesIO(payload.cpu().numpy().tobytes()), weights_only=True)
    return checkpoint


def resume(task: ReferenceTask, path: str) -> None:
    """`--resume`: the package's `resume_task` (on one process, and for a sharded DCP checkpoint, which every rank
    loads in place); a single file under torch.distributed is read by rank 0 and broadcast instead."""
    from classy_hooks.model import resume_task
    from classy_hooks.model.checkpoint_io import find_sharded_checkpoint

    if get_world_size() == 1 or find_sharded_checkpoint(path) is not None:
        resume_task(task, path)
    else:
        task.set_classy_state(read_once_and_broadcast(path)["classy_state_dict"])


def init_distributed(config: dict[str, Any]) -> None:
    """Under torchrun: NCCL when the config's device resolves to CUDA (each rank on cuda:LOCAL_RANK), else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    device = resolve_device(config.get("device", "auto"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    filter_known_warnings()
    run_dir = os.path.abspath(args.run_dir)
    try:
        config = load_config(args.config, args.set)
        init_distributed(config)
        os.makedirs(run_dir, exist_ok=True)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("WORLD_SIZE", "1"))))
        task = ReferenceTask.from_config(config, run_dir=run_dir)
    except ConfigError as error:  # a bad key, value or unset variable: say which, before anything is written
        logger.error("%s", error)
        if dist.is_initialized():
            dist.destroy_process_group()
        return 2
    if args.resume:
        resume(task, args.resume)
        logger.info(
            "Resumed from %s: phase %d was done, continuing with phase %d",
            args.resume,
            task.phase_idx,
            task.phase_idx + 1,
        )
    try:
        task.run()
    except TrainingPreempted as stop:
        logger.warning("%s", stop)
        return stop.exit_code
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    logger.info("Run finished; outputs are in %s", run_dir)
    return 0
