"""Turn a sharded checkpoint into one Classy-compatible checkpoint file, loadable by a single process.

    python -m classy_hooks.model.convert_checkpoint SRC DST

SRC is a `model_phase-N_end.dcp` folder or a checkpoint folder (its `checkpoint.latest` is used).
DST is a file (`.../checkpoint.torch`, any name ending in `.torch`) or a folder, which then gets
`checkpoint.torch`. No process group is needed: every rank's shard is read and joined into full
tensors; the optimizer state goes back from parameter names to `Optimizer.state_dict()`'s indices.
The result loads with `load_checkpoint` / `torch.load(weights_only=True)` and resumes an
unsharded task with `resume_task` (or `set_classy_state`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from classy_hooks.core.files import atomic_write
from classy_hooks.core.url_files import is_url, join, local_path
from classy_hooks.model.checkpoint_file import write_torch_file
from classy_hooks.model.checkpoint_io import (
    LATEST_CHECKPOINT,
    CheckpointError,
    check_weights_only,
    find_sharded_checkpoint,
    load_checkpoint,
)
from classy_hooks.model.sharded_checkpoint import optimizer_state_by_index

logger = logging.getLogger(__name__)


def _keyed_by_name(optimizer_state: Any) -> bool:
    """True for DCP's optimizer state (parameter names in `param_groups`), False for `Optimizer.state_dict()`'s."""
    if not isinstance(optimizer_state, Mapping):
        return False
    groups = optimizer_state.get("param_groups") or []
    return any(isinstance(name, str) for group in groups for name in group.get("params", []))


def convert_sharded_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> str:
    """Write the sharded checkpoint `src` as the single checkpoint file `dst` (see the module doc); return its path."""
    source = find_sharded_checkpoint(src)
    if source is None:
        raise CheckpointError(
            f"convert_checkpoint: {os.fspath(src)} is not a sharded checkpoint (a model_phase-N_end.dcp folder "
            "with .metadata, or a checkpoint folder with checkpoint.latest). Single files need no conversion."
        )
    checkpoint = load_checkpoint(source)
    state = dict(checkpoint["classy_state_dict"])
    if _keyed_by_name(state.get("optimizer")):
        state["optimizer"] = optimizer_state_by_index(state["optimizer"])
    checkpoint["classy_state_dict"] = state
    check_weights_only(checkpoint)
    target = local_path(os.fspath(dst))
    if not target.endswith(".torch") or (not is_url(target) and os.path.isdir(target)):
        target = join(target, LATEST_CHECKPOINT)
    if not is_url(target):  # a URL (s3://...) needs no folder: atomic_write uploads the file whole
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with atomic_write(target, "wb") as handle:  # a read-write temp file: write_torch_file reads it back
        handle.flush()
        write_torch_file(handle.fileno(), checkpoint)  # torch.save plus the content checksum load_checkpoint checks
    logger.info("Converted sharded checkpoint %s to %s", source, target)
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line: `python -m classy_hooks.model.convert_checkpoint SRC DST`."""
    parser = argparse.ArgumentParser(
        prog="python -m classy_hooks.model.convert_checkpoint",
        description="Turn a sharded (torch.distributed.checkpoint) CheckpointHook checkpoint into one file.",
    )
    parser.add_argument("src", help="a model_phase-N_end.dcp folder, or a checkpoint folder with checkpoint.latest")
    parser.add_argument("dst", help="the file to write (ending in .torch), or a folder to write checkpoint.torch in")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        convert_sharded_checkpoint(args.src, args.dst)
    except CheckpointError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
