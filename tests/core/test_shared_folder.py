"""`check_shared_folder` under real torchrun (2 gloo ranks): one shared folder passes, per-rank folders fail on all ranks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from classy_hooks.core.shared_folder import PROBE_PREFIX, check_shared_folder
from helpers import ROOT, subprocess_env, torchrun_command

SCRIPT = r"""
import os, sys
import torch.distributed as dist
from classy_hooks.core import HookConfigError, get_rank
from classy_hooks.core.shared_folder import check_shared_folder

dist.init_process_group("gloo")
base, layout = sys.argv[1], sys.argv[2]
# "local": the same kind of path points at a different folder on each rank, as a node-local disk does
folder = base if layout == "shared" else os.path.join(base, f"node{get_rank()}")
os.makedirs(folder, exist_ok=True)
try:
    check_shared_folder("SomeHook", "folder", folder, why="Every rank writes there", fix="Use a shared folder.")
    print(f"rank {get_rank()}: ok", flush=True)
except HookConfigError as exc:
    print(f"rank {get_rank()}: error: {exc}", flush=True)
dist.destroy_process_group()
"""


def _run(tmp_path: Path, layout: str) -> str:
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    command = torchrun_command(script, [str(tmp_path / "folder"), layout])
    proc = subprocess.run(command, env=subprocess_env(), cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_single_process_is_a_no_op(tmp_path: Path) -> None:
    check_shared_folder("SomeHook", "folder", str(tmp_path), why="w", fix="f")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_shared_folder_passes_on_every_rank_and_leaves_no_probe(tmp_path: Path) -> None:
    out = _run(tmp_path, "shared")
    assert "rank 0: ok" in out and "rank 1: ok" in out
    assert not [p for p in (tmp_path / "folder").iterdir() if p.name.startswith(PROBE_PREFIX)]


@pytest.mark.slow
def test_per_rank_folders_fail_on_every_rank_with_what_to_do(tmp_path: Path) -> None:
    out = _run(tmp_path, "local")
    assert "rank 0: error: SomeHook: argument 'folder'" in out  # the primary fails too: no rank runs on alone
    assert "rank 1: error: SomeHook: argument 'folder'" in out
    assert "rank 1 sees a different folder at that path" in out and "Use a shared folder." in out
    assert not list((tmp_path / "folder").rglob(f"{PROBE_PREFIX}*"))
