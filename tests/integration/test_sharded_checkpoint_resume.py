"""FSDP2 on 2 gloo ranks: sharded checkpoints (one file per rank + metadata) resume bit-identically, survive SIGKILL
during a save, and convert to one Classy file that resumes in a single process.

Real torchrun jobs of the reference trainer with EMA, precise BatchNorm and CheckpointHook (sharded, chosen
automatically because the FSDP2 state holds DTensors). The reference is one uninterrupted run; every other run
must end with the very same final checkpoint: model, optimizer (keyed by parameter name), EMA (sharded), hook
state, counters and RNG.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from classy_hooks.model import CheckpointHook, ExponentialMovingAverageModelHook, PreciseBatchNormHook, load_checkpoint
from classy_hooks.model.checkpoint_io import resume_task
from classy_hooks.model.sharded_checkpoint import LATEST_SHARDED, read_sharded_metadata
from helpers import ROOT, assert_same, subprocess_env, tiny_config, train_command, write_config
from integration.test_checkpoint_sigkill import _saving
from reference_trainer.task import ReferenceTask

pytestmark = pytest.mark.slow


def _hooks(non_blocking: bool = False) -> list[dict[str, Any]]:
    return [
        {
            "name": "checkpoint",
            "checkpoint_folder": "{run_dir}/checkpoints",
            "phase_types": ["train", "test"],
            "non_blocking": non_blocking,
        },
        {"name": "ema_model_weights", "decay": 0.8},
        {"name": "precise_bn", "num_samples": 32},
    ]


def _config(non_blocking: bool = False) -> dict[str, Any]:
    return tiny_config(num_epochs=3, fsdp=True, hooks=_hooks(non_blocking))  # 6 phases: train, test, ...


def _train(run_dir: Path, config: dict[str, Any], extra: tuple[str, ...] = ()) -> str:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = write_config(run_dir / f"config-{len(list(run_dir.glob('config-*.json')))}.json", config)
    proc = subprocess.run(
        train_command(path, run_dir, nproc=2, extra=extra),
        env=subprocess_env(),
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"training failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc): torchrun starts each rank in a session of its own."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in Path(f"/proc/{tree[index]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                tree.extend(int(child) for child in task.read_text().split())
        index += 1
    return tree


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _kill_job(job: subprocess.Popen[bytes]) -> None:
    """SIGKILL torchrun and both ranks at once (a lost node), then wait until none of them runs."""
    pids = _process_tree(job.pid)
    assert job.poll() is not None or len(pids) >= 3, f"torchrun's ranks not found under it: {pids}"
    for pid in reversed(pids):  # ranks first, so the agent cannot react to a dead rank
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "a rank survived SIGKILL"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: 6 phases in one go; returns its checkpoint folder."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    out = _train(run_dir, _config())
    assert "Model sharded with FSDP2 fully_shard over 2 ranks" in out
    return run_dir / "checkpoints"


def test_sharded_layout_one_file_per_rank_plus_metadata_and_a_latest_pointer(uninterrupted: Path) -> None:
    names = sorted(os.listdir(uninterrupted))
    assert names == [LATEST_SHARDED] + [f"model_phase-{n}_end.dcp" for n in range(6)]  # no temp folder left
    assert (uninterrupted / LATEST_SHARDED).read_text() == "model_phase-5_end.dcp\n"
    assert sorted(os.listdir(uninterrupted / "model_phase-5_end.dcp")) == [
        ".checksums-0.json", ".checksums-1.json", ".metadata", "__0_0.distcp", "__1_0.distcp"
    ]
    metadata = read_sharded_metadata(uninterrupted / "model_phase-5_end.dcp")
    ema_key = "classy_state_dict.hooks.ExponentialMovingAverageModelHook.ema_state.features.0.weight"
    model_key = "classy_state_dict.base_model.features.0.weight"
    for key in (ema_key, model_key):  # the model and the EMA are saved sharded: one chunk per rank
        assert len(metadata.state_dict_metadata[key].chunks) == 2, key
    state = load_checkpoint(uninterrupted)["classy_state_dict"]
    assert state["phase_idx"] == 5 and state["hooks"]["CheckpointHook"]["phase_counter"] == 6
    assert "features.0.weight" in state["optimizer"]["state"]  # DCP's optimizer state is keyed by parameter name


def test_resume_into_the_sharded_model_is_bit_identical_with_async_saves(uninterrupted: Path, tmp_path: Path) -> None:
    out = _train(tmp_path, _config(non_blocking=True), ("--resume", str(uninterrupted / "model_phase-2_end.dcp")))
    assert "phase 2 was done, continuing with phase 3" in out
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [LATEST_SHARDED] + [
        f"model_phase-{n}_end.dcp" for n in (3, 4, 5)
    ]
    assert_same(load_checkpoint(tmp_path / "checkpoints"), load_checkpoint(uninterrupted))


def test_sigkill_during_sharded_saves_then_resume_ends_bit_identical(uninterrupted: Path, tmp_path: Path) -> None:
    """SIGKILL the whole torchrun job (agent and both ranks, as a lost node) while a sharded save's temp folder exists."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    config_path = write_config(tmp_path / "config.json", _config())
    rng = random.Random(0)
    kills, kills_during_save, last_phase = 0, 0, -1
    while kills < 4:
        extra = ("--resume", str(folder)) if (folder / LATEST_SHARDED).exists() else ()
        stale = {name for name in os.listdir(folder) if name.endswith(".tmp")}  # left by the previous kill
        job = subprocess.Popen(
            train_command(config_path, tmp_path, nproc=2, extra=extra),
            env=subprocess_env(),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while stale & set(os.listdir(folder)) and job.poll() is None:  # the new run's on_start removes them first
            assert time.monotonic() < deadline, f"the resumed run never removed {stale}"
            time.sleep(0.0005)
        while not (folder / LATEST_SHARDED).exists() and job.poll() is None:  # a complete one to fall back on
            assert time.monotonic() < deadline, "the run never committed a checkpoint"
            time.sleep(0.0005)
        while not _saving(folder) and job.poll() is None:
            assert time.monotonic() < deadline, "the run never started a save"
            time.sleep(0.0005)
        time.sleep(rng.uniform(0, 0.01))
        hit = _saving(folder)
        _kill_job(job)
        kills += 1
        kills_during_save += hit
        if (folder / LATEST_SHARDED).exists():  # the latest pointer always names a complete checkpoint
            state = load_checkpoint(folder)["classy_state_dict"]
            assert state["phase_idx"] >= last_phase
            last_phase = state["phase_idx"]
        if kills_during_save >= 2 or last_phase >= 4:
            break
    print(f"{kills} kills, {kills_during_save} during a save, latest phase {last_phase}", file=sys.stderr)
    assert kills_during_save >= 1, "no kill hit a save"
    assert last_phase >= 0, "no complete checkpoint was there to resume from"
    # The last kill may have struck just after the save committed (nothing left), or between a shard folder and
    # its pointer file (two entries left).
    left_behind = sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))
    extra = ("--resume", str(folder)) if (folder / LATEST_SHARDED).exists() else ()
    out = _train(tmp_path, _config(), extra)
    cleanup = [line for line in out.splitlines() if "left by an interrupted save" in line]
    expected = f"removed {len(left_behind)} temporary file(s) or folder(s) left by an interrupted save"
    assert [expected in line for line in cleanup] == ([True] if left_behind else []), (left_behind, cleanup)
    assert not any(name.endswith(".tmp") for name in os.listdir(folder))
    assert_same(load_checkpoint(folder), load_checkpoint(uninterrupted))


def test_a_damaged_shard_stops_the_resume_on_both_ranks_naming_the_file(uninterrupted: Path, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    shutil.copytree(uninterrupted, folder)
    shard = folder / "model_phase-5_end.dcp" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a tensor of rank 1's shard: DCP alone would load it silently
    shard.write_bytes(bytes(data))
    config_path = write_config(tmp_path / "config.json", _config())
    proc = subprocess.run(
        train_command(config_path, tmp_path, nproc=2, extra=("--resume", str(folder))),
        env=subprocess_env(),
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    message = "model_phase-5_end.dcp is damaged: __1_0.distcp's content checksum does not match"
    assert output.count(message) >= 2, output[-4000:]  # every rank stops with the same verdict
    assert "resume from the previous one, " in output and "model_phase-4_end.dcp" in output
    assert sorted(os.listdir(folder)) == sorted(os.listdir(uninterrupted))  # nothing written or removed


def test_two_rank_checkpoint_converted_resumes_in_one_process(uninterrupted: Path, tmp_path: Path) -> None:
    target = tmp_path / "converted" / "checkpoint.torch"
    proc = subprocess.run(
        [sys.executable, "-m", "classy_hooks.model.convert_checkpoint", str(uninterrupted / "model_phase-3_end.dcp"),
         str(target)],
        env=subprocess_env(),
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    single = torch.load(target, weights_only=True)  # a Classy Vision checkpoint: plain tensors, index-keyed optimizer
    assert set(single) == {"input_args", "classy_state_dict", "checkpoint_format_version"}
    saved = single["classy_state_dict"]
    assert sorted(saved["optimizer"]["state"]) == list(range(len(saved["optimizer"]["state"])))

    folder = tmp_path / "single"
    hooks = [CheckpointHook(str(folder), phase_types=["train", "test"]), ExponentialMovingAverageModelHook(0.8),
             PreciseBatchNormHook(32)]
    config = tiny_config(num_epochs=3)
    task = ReferenceTask(config, hooks)
    resume_task(task, target)
    restored = task.get_classy_state()
    assert_same(restored["base_model"], saved["base_model"], "model")
    assert_same(restored["optimizer"], saved["optimizer"], "optimizer")
    assert_same(restored["hooks"], saved["hooks"], "hooks")  # EMA as full tensors, phase counter
    assert (restored["phase_idx"], restored["num_updates"]) == (3, saved["num_updates"])
    task.run()  # the single process trains on: phases 4 and 5, saved as single files
    assert sorted(os.listdir(folder)) == ["checkpoint.torch", "model_phase-4_end.torch", "model_phase-5_end.torch"]
    assert load_checkpoint(folder)["classy_state_dict"]["phase_idx"] == 5


@pytest.mark.parametrize("non_blocking", [False, True], ids=["sync", "async_save"])
def test_a_save_failing_on_the_primary_rank_only_stops_every_rank(tmp_path: Path, non_blocking: bool) -> None:
    """The commit (rank 0 only) fails: `checkpoint.latest` is a folder. Both ranks raise; none waits forever."""
    (tmp_path / "checkpoints" / LATEST_SHARDED).mkdir(parents=True)
    config_path = write_config(tmp_path / "config.json", _config(non_blocking))
    proc = subprocess.run(
        train_command(config_path, tmp_path, nproc=2),
        env=subprocess_env(),
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "a sharded checkpoint" in out and "Is a directory" in out  # rank 0: its own error
    assert "failed on 1 other rank(s); see their logs" in out  # rank 1: told, and stopped too


def test_converted_single_file_resumes_the_fsdp2_run_bit_identically(uninterrupted: Path, tmp_path: Path) -> None:
    """Sharded -> one file (full tensors, index-keyed optimizer) -> --resume on 2 FSDP2 ranks: the same end."""
    from classy_hooks.model import convert_sharded_checkpoint

    single = convert_sharded_checkpoint(uninterrupted / "model_phase-2_end.dcp", tmp_path / "single.torch")
    out = _train(tmp_path / "run", _config(), ("--resume", single))
    assert "phase 2 was done, continuing with phase 3" in out
    assert_same(load_checkpoint(tmp_path / "run" / "checkpoints"), load_checkpoint(uninterrupted))
