"""A run SIGKILLed while it prunes old checkpoints (keep_last) always leaves a loadable latest checkpoint.

A helper process imports torch once and forks real runs (ReferenceTask + CheckpointHook with
`keep_last=1`), each resuming from the folder as a restarted job would. Each run SIGKILLs itself
(a real SIGKILL, from inside, so that it lands exactly there) at a chosen instant of pruning: just
before deleting an old checkpoint, just after, or (sharded `.dcp` folders) between the rename to a
temporary name and the removal of its files. After every kill the folder's latest checkpoint loads without fallback, is no older than before, and
the checkpoint the killed run resumed from still exists; after the last start no temporary file is
left and at most `keep_last` + the resumed-from checkpoint remain (removals a killed run left pending are
done by the next `on_start`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from classy_hooks.model import CheckpointHook, load_checkpoint, resume_task
from classy_hooks.model.checkpoint_io import checkpoint_order
from helpers import ROOT, make_task, subprocess_env, tiny_config

FORKER = r"""
import json, os, shutil, signal, sys
import torch
torch.set_num_threads(1)
from reference_trainer.task import ReferenceTask
from classy_hooks.model import CheckpointHook, checkpoint_hook, resume_task
from classy_hooks.model import checkpoint_io

folder, config, hook_args = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
ReferenceTask(config, [])  # warm up torch's lazy imports once; the children inherit them
real_remove, real_rmtree = checkpoint_io.remove_checkpoint, shutil.rmtree
for line in sys.stdin:  # one kill plan per run: "<where> <n>": die at the n-th removal (where: before/after/rmtree)
    where, n = line.split()
    pid = os.fork()
    if pid == 0:
        calls, trees = [0], [0]  # removals, and removals of renamed .dcp folders
        def die(): os.kill(os.getpid(), signal.SIGKILL)
        def remove(f, name):
            calls[0] += 1
            if where == "before" and calls[0] == int(n): die()
            removed = real_remove(f, name)
            if where == "after" and calls[0] == int(n): die()
            return removed
        def rmtree(path, *args, **kwargs):
            if where == "rmtree" and path.endswith(".old.tmp") and os.path.exists(path):
                trees[0] += 1
                if trees[0] == int(n): die()
            return real_rmtree(path, *args, **kwargs)
        checkpoint_hook.remove_checkpoint = remove
        shutil.rmtree = rmtree
        try:
            hook = CheckpointHook(folder, **hook_args)
            task = ReferenceTask(config, [hook])
            if hook.sharded and os.path.exists(os.path.join(folder, "checkpoint.latest")) or (
                not hook.sharded and os.path.exists(os.path.join(folder, "checkpoint.torch"))
            ):
                resume_task(task, folder)
            print("from", json.dumps(hook.state.written[-1] if hook.state.written else None), flush=True)
            task.run()
        except BaseException:
            import traceback; traceback.print_exc()
        finally:
            os._exit(0)
    print("pid", pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(status, flush=True)
"""

KILLS = 12


def _progress(folder: Path) -> tuple[int, int, int, int]:
    """Where the folder's latest checkpoint is, in training order (it must load without fallback)."""
    state = load_checkpoint(folder)["classy_state_dict"]
    position = state.get("data_position")
    if position is None:
        return (state["phase_idx"], 1, 0, 0)
    return (state["phase_idx"], 0, position["batches"], 0)


def _run_kills(tmp_path: Path, sharded: bool) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    hook_args: dict[str, object] = {"keep_last": 1, "phase_types": ["train", "test"]}
    if sharded:
        hook_args["sharded"] = True
    else:
        hook_args["checkpoint_every_n_steps"] = 1
    config = tiny_config(
        num_epochs=200,
        dataset={"num_classes": 4, "image_size": 8, "train_samples": 32, "test_samples": 16, "batch_size": 8},
    )
    forker = subprocess.Popen(
        [sys.executable, "-c", FORKER, str(folder), json.dumps(config), json.dumps(hook_args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        cwd=ROOT,
    )
    assert forker.stdin is not None and forker.stdout is not None
    rng = random.Random(4)
    plans = (["rmtree"] if sharded else ["before", "after"]) * (KILLS // (1 if sharded else 2))
    progress = (-1, 0, 0, 0)
    try:
        for i, where in enumerate(plans):
            forker.stdin.write(f"{where} {rng.randint(1, 3)}\n")
            forker.stdin.flush()
            lines = dict(forker.stdout.readline().split(" ", 1) for _ in range(2))  # the child's and the parent's
            resumed_from = json.loads(lines["from"])
            status = int(forker.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"run {i} was not killed"
            now = _progress(folder)
            assert now >= progress, (i, now, progress)
            progress = now
            if resumed_from is not None:
                assert (folder / resumed_from).exists(), f"run {i} removed the checkpoint it resumed from"
    finally:
        forker.kill()
        forker.wait()
    assert progress > (0, 0, 0, 0), "no run got past its first checkpoint"
    hook = CheckpointHook(str(folder), **hook_args)  # the next start
    task = make_task([hook])
    resume_task(task, folder)
    hook.on_start(task)
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if n.startswith(".")], names  # no temporary file or folder after the next start
    named = [n for n in names if checkpoint_order(n) is not None]
    assert 1 <= len(named) <= 2, names  # keep_last=1, plus the checkpoint the last run resumed from


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the run launcher forks (POSIX)")
@pytest.mark.parametrize("sharded", [False, True], ids=["single-file", "sharded"])
def test_sigkill_during_pruning_keeps_a_loadable_checkpoint(tmp_path: Path, sharded: bool) -> None:
    _run_kills(tmp_path, sharded)
