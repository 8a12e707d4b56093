"""torchrun job: an export hook on every rank of a 2-rank gloo job, with an FSDP2-sharded or a compiled DDP model.

`fsdp`: each rank calls the hook's `on_start` on an FSDP2-sharded reference task and prints whether it
refused the model; then the README's fix: every rank gathers the full weights, rank 0 loads them into
an unsharded model, exports it and prints whether the file reproduces the sharded model's output.
`ddp`: `base_model` is `torch.compile(DistributedDataParallel(model))`; after one training step on
every rank, every rank runs `on_start` and `on_end` (the primary exports), then each rank prints
whether the file reproduces the plain model.
The ranks meet at barriers, so a rank that did not refuse, or hung, shows up as a missing line or a timeout.
Both export hooks in turn, each writing under <folder>/<hook name>.
Usage: torchrun --nproc_per_node 2 distributed_export_job.py <fsdp|ddp> <folder>
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from classy_hooks.core import TaskContractError, build_hook
from classy_hooks.core.deprecations import quiet_jit_deprecations
from helpers import make_task
from reference_trainer.models import build_model

FOLDER_ARG = {"torchscript": "torchscript_folder", "torch_export": "export_folder"}


def say(line: str) -> None:
    """One line in one write(2): the ranks share stdout (unbuffered), so print's separate newline could interleave."""
    os.write(1, f"{line}\n".encode())


def load(name: str, path: str) -> Any:
    with quiet_jit_deprecations():
        return torch.export.load(path).module() if name == "torch_export" else torch.jit.load(path)


def example() -> torch.Tensor:
    return torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def fsdp(name: str, folder: str, rank: int) -> None:
    hook = build_hook({"name": name, FOLDER_ARG[name]: folder})
    task = make_task([hook], fsdp=True)
    try:
        hook.on_start(task)
        say(f"rank {rank}: accepted")
    except TaskContractError as exc:
        say(f"rank {rank}: refused: {exc}")

    sharded = task.base_model.eval()
    with torch.no_grad():
        expected = sharded(example())  # an FSDP2 forward: every rank takes part
    full = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        data = task.config["dataset"]
        unsharded = build_model(task.config["model"], data["image_size"], data["num_classes"])
        unsharded.load_state_dict(full)
        export_task = make_task()
        export_task.base_model = unsharded
        exporter = build_hook({"name": name, FOLDER_ARG[name]: folder})
        exporter.on_start(export_task)
        exporter.on_end(export_task)
        with torch.no_grad():
            match = torch.allclose(load(name, exporter.output_path)(example()), expected, rtol=1e-4, atol=1e-5)
        say(f"rank 0: exported unsharded copy matches the sharded model: {match}")
    dist.barrier()


def ddp(name: str, folder: str, rank: int) -> None:
    hook = build_hook({"name": name, FOLDER_ARG[name]: folder})
    task = make_task([hook])
    plain = task.base_model
    task.base_model = torch.compile(torch.nn.parallel.DistributedDataParallel(plain), backend="aot_eager")
    task.base_model(example()).sum().backward()  # one training step's forward and backward on every rank
    hook.on_start(task)
    hook.on_end(task)
    dist.barrier()  # the primary's file is in place
    plain.eval()
    with torch.no_grad():
        match = torch.allclose(load(name, hook.output_path)(example()), plain(example()), rtol=1e-5, atol=1e-6)
    say(f"rank {rank}: export of the compiled DDP model matches the plain model: {match}")
    dist.barrier()


def main() -> None:
    mode, folder = sys.argv[1:3]
    dist.init_process_group("gloo")
    for name in ("torchscript", "torch_export"):
        say(f"rank {dist.get_rank()}: {name}")
        {"fsdp": fsdp, "ddp": ddp}[mode](name, f"{folder}/{name}", dist.get_rank())
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
