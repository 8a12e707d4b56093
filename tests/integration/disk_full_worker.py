"""Trains the tiny task with a CheckpointHook into FOLDER (a small tmpfs that fills up) and reports what happened.

Run by test_checkpoint_on_a_full_disk.py inside a private mount namespace (the tmpfs lives as long as this
process), so everything about the folder is checked here and printed as one JSON line.
Usage: disk_full_worker.py FOLDER ON_SAVE_ERROR NON_BLOCKING
"""

from __future__ import annotations

import json
import logging
import os
import sys

from classy_hooks.model import CheckpointHook, load_checkpoint
from classy_hooks.model.checkpoint_file import verify_torch_file
from helpers import make_task


def main() -> None:
    folder, on_save_error, non_blocking = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    hook = CheckpointHook(folder, on_save_error=on_save_error, non_blocking=non_blocking)
    task = make_task([hook], num_epochs=2)
    report: dict[str, object] = {"finished": False}
    try:
        task.run()
        report["finished"] = True
    except Exception as exc:
        report["error_type"] = type(exc).__name__
        report["error"] = str(exc)
        report["needed_bytes"] = getattr(exc, "needed_bytes", None)
    report["last_phase"] = task.phase_idx
    report["files"] = sorted(os.listdir(folder))
    report["verified"] = verify_torch_file(os.path.join(folder, "checkpoint.torch"))
    report["loaded_phase"] = load_checkpoint(folder)["classy_state_dict"]["phase_idx"]
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
