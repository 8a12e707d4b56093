"""torchrun job: each rank builds an FSDP2-sharded reference task and calls an export hook's `on_start`.

Prints one line per rank saying whether the hook refused the model, then meets the other rank at
a barrier (so a rank that did not refuse, or hung, shows up as a missing line or a timeout).
Usage: torchrun --nproc_per_node 2 fsdp_export_job.py <torchscript|torch_export> <folder>
"""

from __future__ import annotations

import sys

import torch.distributed as dist

from classy_hooks.core import TaskContractError, build_hook
from helpers import make_task

FOLDER_ARG = {"torchscript": "torchscript_folder", "torch_export": "export_folder"}


def main() -> None:
    name, folder = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    hook = build_hook({"name": name, FOLDER_ARG[name]: folder})
    task = make_task([hook], fsdp=True)
    try:
        hook.on_start(task)
        print(f"rank {rank}: accepted", flush=True)
    except TaskContractError as exc:
        print(f"rank {rank}: refused: {exc}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
