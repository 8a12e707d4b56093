"""torchrun job: each rank builds an FSDP2-sharded reference task and calls an export hook's `on_start`.

Prints one line per rank saying whether the hook refused the model, then follows the README's fix:
every rank gathers the full weights, rank 0 loads them into an unsharded model, exports it with the
hook and prints whether the file reproduces the sharded model's output. The ranks meet at a barrier
(a rank that did not refuse, or hung, shows up as a missing line or a timeout).
Usage: torchrun --nproc_per_node 2 fsdp_export_job.py <torchscript|torch_export> <folder>
"""

from __future__ import annotations

import sys
import warnings

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from classy_hooks.core import TaskContractError, build_hook
from helpers import make_task
from reference_trainer.models import build_model

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

    sharded = task.base_model.eval()
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = sharded(x)  # an FSDP2 forward: every rank takes part
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
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated")
            loaded = (
                torch.export.load(exporter.output_path).module()
                if name == "torch_export"
                else torch.jit.load(exporter.output_path)
            )
        with torch.no_grad():
            match = torch.allclose(loaded(x), expected, rtol=1e-4, atol=1e-5)
        print(f"rank 0: exported unsharded copy matches the sharded model: {match}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
