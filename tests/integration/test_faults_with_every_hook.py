"""Faults during a run with every hook of the demo config: training finishes, nothing good is lost.

Each test trains the reference trainer in a real subprocess (`tools/train.py`) with the 13 hooks
of `tools/configs/demo.json` on a tiny config (16 train steps and 2 test steps per phase, 8
phases, checkpoints after every phase), talking to a real Visdom server on 127.0.0.1, and
injects one fault mid-run from the outside:

1. the Visdom server is SIGKILLed;
2. the TensorBoard folder is made read-only, then the disk under it fills up;
3. the trainer is SIGKILLed while it writes a checkpoint, then restarted with `--resume`.

The run with the killed Visdom server doubles as the uninterrupted reference: no fault touches
the model, so every run must end with bit-identical weights, optimizer and EMA state.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from classy_hooks.model import load_checkpoint
from helpers import ROOT, read_scalars, subprocess_env, tiny_config, train_command, write_config
from visdom_server import VisdomServer

pytestmark = pytest.mark.slow

#: The trainer as root without the capabilities that let root ignore permission bits.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]


def every_hook_config() -> dict[str, Any]:
    """tiny_config with the demo's 13 hooks; every hook must be available (none skipped)."""
    demo = json.loads((ROOT / "tools" / "configs" / "demo.json").read_text())
    hooks = demo["hooks"]
    assert len(hooks) == 13
    for hook in hooks:
        if hook["name"] == "precise_bn":
            hook["num_samples"] = 32
        if hook["name"] == "checkpoint":
            hook["phase_types"] = ["train", "test"]  # a checkpoint after every phase: more saves to strike
        if hook["name"] == "tensorboard_plot":
            hook["log_period"] = 1  # enough scalars after the disk fills to need a new tmpfs page
    return tiny_config(
        num_epochs=4,
        test_phase_period=1,
        dataset={"num_classes": 4, "image_size": 16, "train_samples": 256, "test_samples": 32, "batch_size": 16},
        hooks=hooks,
    )


PHASES = 8  # 4 epochs of train + test: at least two train phases follow the disk fill of the read-only test


def wait_for(condition: Any, proc: subprocess.Popen[str], what: str, timeout: float = 90, poll: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the trainer exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def committed_phases(folder: Path) -> list[int]:
    """Phase indices of the complete per-phase checkpoint files (temp files are hidden dot files)."""
    if not folder.is_dir():
        return []
    names = [n for n in os.listdir(folder) if n.startswith("model_phase-") and n.endswith("_end.torch")]
    return sorted(int(n[len("model_phase-") : -len("_end.torch")]) for n in names)


def start_training(
    tmp_path: Path,
    run_dir: Path,
    port: int,
    prefix: list[str] = (),
    extra: list[str] = (),  # type: ignore[assignment]
) -> tuple[subprocess.Popen[str], Path]:
    config_path = write_config(tmp_path / f"config-{run_dir.name}.json", every_hook_config())
    log = tmp_path / f"{run_dir.name}-{len(list(tmp_path.glob(f'{run_dir.name}-*.log')))}.log"
    env = subprocess_env()
    env["VISDOM_PORT"] = str(port)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*prefix, *train_command(config_path, run_dir, extra=extra)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
    return proc, log


def finish(proc: subprocess.Popen[str], log: Path, timeout: float = 240) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert proc.returncode == 0, f"training failed ({proc.returncode}):\n{output[-6000:]}"
    assert "Run finished" in output
    return output


def warnings_of(output: str) -> list[str]:
    return [line for line in output.splitlines() if " WARNING " in line]


def assert_same_model(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Bit-identical model, optimizer and EMA state, same counters."""
    assert a["phase_idx"] == b["phase_idx"] == PHASES - 1 and a["num_updates"] == b["num_updates"]
    for key, value in a["base_model"].items():
        assert torch.equal(value, b["base_model"][key]), f"model {key}"
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for index, slots in a["optimizer"]["state"].items():
        for name, value in slots.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), f"optimizer {index}.{name}"
    ema_a = a["hooks"]["ExponentialMovingAverageModelHook"]
    ema_b = b["hooks"]["ExponentialMovingAverageModelHook"]
    assert ema_a["num_updates"] == ema_b["num_updates"] > 0
    for key, value in ema_a["ema_state"].items():
        assert torch.equal(value, ema_b["ema_state"][key]), f"EMA {key}"


@pytest.fixture(scope="module")
def run_without_visdom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A full run whose Visdom server is SIGKILLed once the first test phase is checkpointed."""
    tmp_path = tmp_path_factory.mktemp("visdom_killed")
    server = VisdomServer(tmp_path / "visdom")
    try:
        run_dir = tmp_path / "run"
        proc, log = start_training(tmp_path, run_dir, server.port)
        try:
            wait_for(lambda: 1 in committed_phases(run_dir / "checkpoints"), proc, "the phase-1 checkpoint")
        finally:
            server.stop()  # SIGKILL to the server's process group
        assert not server.listening()
        killed_at = max(committed_phases(run_dir / "checkpoints"))
        assert killed_at < PHASES - 1, "the run ended before the server was killed"
        output = finish(proc, log)
    finally:
        server.stop()
    return run_dir, output


def test_visdom_server_killed_mid_run(run_without_visdom: tuple[Path, str]) -> None:
    """Proves: losing the Visdom server costs one warning, not the run, and no other output.

    The hook sends from a background thread, so the dead server neither stops nor stalls
    training; every file the other hooks write is complete and readable.
    """
    run_dir, output = run_without_visdom
    lost = [w for w in warnings_of(output) if "VisdomHook: lost the Visdom server" in w]
    assert len(lost) == 1, warnings_of(output)
    assert "Traceback" not in output
    assert committed_phases(run_dir / "checkpoints") == list(range(PHASES))
    for path in (run_dir / "checkpoints").iterdir():
        torch.load(path, weights_only=True)
    assert load_checkpoint(run_dir / "checkpoints")["classy_state_dict"]["phase_idx"] == PHASES - 1
    scalars = read_scalars(run_dir / "tensorboard")
    steps = [16 * (epoch + 1) for epoch in range(PHASES // 2)]  # one train and one test phase per epoch
    assert [s for s, _ in scalars["Losses/train"]] == steps
    assert [s for s, _ in scalars["Losses/test"]] == steps
    rows = (run_dir / "predictions" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 32, rows[:3]  # header + every test sample of the last test phase
    scripted = torch.jit.load(str(run_dir / "export" / "torchscript.pt"))
    exported = torch.export.load(str(run_dir / "export" / "exported_program.pt2")).module()
    x = torch.zeros(2, 3, 16, 16)
    assert torch.allclose(scripted(x), exported(x), atol=1e-5)


def _can_mount_private_tmpfs(folder: Path) -> bool:
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$0"', str(folder)],
        capture_output=True,
    )
    return probe.returncode == 0


def test_tensorboard_folder_read_only_then_disk_full(
    tmp_path: Path, shared_visdom_server: VisdomServer, run_without_visdom: tuple[Path, str]
) -> None:
    """Proves: an unwritable TensorBoard folder never costs the run or its checkpoints.

    What "unwritable" can break, found by trying: tensorboardX opens its event file once, in
    `on_start`, and keeps the descriptor. So `chmod` of the folder and its files mid-run changes
    nothing for the running writer (the kernel checks permissions at open, not at write): the
    test shows events of later phases still land in the file. What really makes TensorBoard
    writes fail mid-run is the disk under the folder filling up (ENOSPC on the open file), so
    the folder is a 1 MiB tmpfs, mounted in a private mount namespace of the trainer only, that
    the test fills once the read-only phase is proven. tmpfs allocates 4 KiB pages, so writes into
    the event file's last page still succeed: `log_period` 1 and 16 train steps per phase make
    the remaining phases (at least two train phases) write ~5 KB of events, which needs a new page. Training must then
    finish with one warning from TensorboardPlotHook (before the fix, its phase-end flush raised
    ENOSPC and killed the run), without tensorboardX's exit handler retrying the broken file,
    and the checkpoints (on another disk) must be complete and equal the reference run's.

    The trainer runs as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH/CAP_FOWNER (setpriv),
    so permission bits bind it; the test checks that by failing to create a file there with
    the same privileges.
    """
    if os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("nsenter") is None:
        pytest.skip("needs root (a private tmpfs mount) and util-linux setpriv/nsenter")
    tb_dir = tmp_path / "run" / "tensorboard"
    tb_dir.mkdir(parents=True)
    if not _can_mount_private_tmpfs(tb_dir):
        pytest.skip("cannot mount a tmpfs in a private mount namespace here")
    mount = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$0" && exec "$@"', str(tb_dir)]
    proc, log = start_training(tmp_path, tmp_path / "run", shared_visdom_server.port, prefix=[*mount, *NO_DAC])
    checkpoints = tmp_path / "run" / "checkpoints"
    try:
        view = Path(f"/proc/{proc.pid}/root") / tb_dir.relative_to("/")  # the trainer's tmpfs, seen from here
        wait_for(lambda: 0 in committed_phases(checkpoints), proc, "the phase-0 checkpoint")
        # The trainer is stopped while its folder is made read-only and measured: a short test phase can
        # otherwise end (and write its events) between the chmod and the size taken as the baseline.
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            (plot_file,) = view.glob("events.*.TensorboardPlotHook")
            for path in view.iterdir():
                path.chmod(0o444)
            view.chmod(0o555)
            size_at_chmod = plot_file.stat().st_size
            done_at_chmod = max(committed_phases(checkpoints))
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        probe = subprocess.run(
            ["nsenter", "-t", str(proc.pid), "-m", *NO_DAC, "sh", "-c", 'touch "$0"/probe', str(tb_dir)],
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "Permission denied" in probe.stderr, probe

        next_phase = done_at_chmod + 1
        wait_for(lambda: next_phase in committed_phases(checkpoints), proc, f"the phase-{next_phase} checkpoint")
        assert plot_file.stat().st_size > size_at_chmod, "the open writer stopped at the chmod"
        copy = tmp_path / "tensorboard-read-only"
        copy.mkdir()
        shutil.copy(plot_file, copy)
        # TensorBoard's reader reads the file written on after the chmod: phase 1's test loss at step 16 first
        assert [s for s, _ in read_scalars(copy)["Losses/test"]][:1] == [16]

        filled = 0
        with open(view / "filler", "wb") as filler:  # root with every capability may write here
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
                    filled += 65536
            except OSError as exc:
                assert exc.errno == 28, exc  # ENOSPC
        assert filled > 0
        output = finish(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    failed = [w for w in warnings_of(output) if "TensorboardPlotHook" in w]
    assert len(failed) == 1 and "No space left on device" in failed[0], warnings_of(output)
    assert "training continues without TensorBoard plots" in failed[0]
    assert "Exception ignored in atexit" not in output
    assert committed_phases(checkpoints) == list(range(PHASES))
    for path in checkpoints.iterdir():
        torch.load(path, weights_only=True)
    reference = load_checkpoint(run_without_visdom[0] / "checkpoints")["classy_state_dict"]
    assert_same_model(load_checkpoint(checkpoints)["classy_state_dict"], reference)
    assert (tmp_path / "run" / "export" / "exported_program.pt2").is_file()


def _saving(folder: Path) -> bool:
    return folder.is_dir() and any(name.endswith(".tmp") for name in os.listdir(folder))


def settled(folder: Path, previous: int) -> bool:
    """A save more than `previous` finished completely: `checkpoint.torch` is in place, no temp file."""
    return len(committed_phases(folder)) > previous and (folder / "checkpoint.torch").exists() and not _saving(folder)


def test_sigkill_during_checkpoint_save_then_resume(
    tmp_path: Path, shared_visdom_server: VisdomServer, run_without_visdom: tuple[Path, str]
) -> None:
    """Proves: a SIGKILL in the middle of a checkpoint write loses nothing, with every hook active.

    The test waits until a checkpoint is committed, then until the next save's temporary file
    appears, and SIGKILLs the trainer; the temp file still being there afterwards proves the
    save was cut short (else the attempt is repeated on the restarted run). Right after the
    kill the folder's latest checkpoint loads with `load_checkpoint` (no fallback) and every
    file with `torch.load(weights_only=True)`, and it is the newest committed one. The trainer
    restarted with `--resume <run>/checkpoints` finishes with the model, optimizer and EMA state
    of the uninterrupted reference run, bit for bit, and every exporter's output.
    """
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    extra: list[str] = []
    kills = 0
    for _attempt in range(3):
        proc, log = start_training(tmp_path, run_dir, shared_visdom_server.port, extra=extra)
        try:
            count = len(committed_phases(checkpoints))
            # a save finished: its files are renamed into place and no temp file is left (a save writes
            # `.checkpoint.torch.*.tmp`, links it to `model_phase-N_end.torch`, then renames it last)
            wait_for(lambda: settled(checkpoints, count), proc, "a complete checkpoint", poll=0.002)  # noqa: B023
            good = max(committed_phases(checkpoints))
            wait_for(lambda: _saving(checkpoints), proc, "the next checkpoint save", poll=0.0002)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert good < PHASES - 1
        state = load_checkpoint(checkpoints)["classy_state_dict"]  # no fallback needed
        assert state["phase_idx"] >= good
        for path in checkpoints.iterdir():
            if path.suffix == ".torch":
                torch.load(path, weights_only=True)
        extra = ["--resume", str(checkpoints)]
        if _saving(checkpoints):  # the kill cut a save short
            kills += 1
            break
    assert kills == 1, "no SIGKILL landed during a checkpoint save in 3 attempts"

    proc, log = start_training(tmp_path, run_dir, shared_visdom_server.port, extra=extra)
    output = finish(proc, log)
    assert f"Resumed from {checkpoints}: phase {state['phase_idx']} was done" in output
    cleaned = [w for w in warnings_of(output) if "temporary file(s) left by an interrupted save" in w]
    assert len(cleaned) == 1, warnings_of(output)
    others = [w for w in warnings_of(output) if w not in cleaned and "fvcore has no FLOP formula" not in w]
    assert not others
    assert committed_phases(checkpoints) == list(range(PHASES))
    reference = load_checkpoint(run_without_visdom[0] / "checkpoints")["classy_state_dict"]
    assert_same_model(load_checkpoint(checkpoints)["classy_state_dict"], reference)
    assert (run_dir / "export" / "torchscript.pt").is_file()
    assert (run_dir / "export" / "exported_program.pt2").is_file()
    rows = (run_dir / "predictions" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 32
