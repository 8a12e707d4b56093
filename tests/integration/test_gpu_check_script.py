"""Story: tools/gpu_check is safe to run anywhere. Without CUDA it says so and exits 0; its CPU dry mode runs the
very same trainings and checks (one process, and two gloo ranks under torchrun) and every check passes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers import ROOT, subprocess_env

SCRIPT = ROOT / "tools" / "gpu_check"
CHECKS = [
    "EMA (device='gpu')",
    "precise BN",
    "TorchscriptHook export",
    "TorchExportHook export",
    "checkpoint (single file)",
    "EMA (device='cpu')",
    "checkpoint (sharded, DCP)",
]


def run_script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=subprocess_env(),
        text=True,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
    )


def verdicts(stdout: str) -> dict[str, str]:
    """{check name: "PASS" or "FAIL"} from the script's report lines."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        verdict, _, rest = line.partition(" ")
        if verdict in ("PASS", "FAIL"):
            out[rest.split(" on ")[0]] = verdict
    return out


@pytest.mark.slow  # a fresh interpreter importing torch: ~10 s on a busy machine
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_says_so_and_exits_0():
    proc = run_script(timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "gpu_check: no CUDA device here" in proc.stdout and "--device cpu" in proc.stdout
    assert not verdicts(proc.stdout), "nothing is checked without CUDA"


@pytest.mark.slow  # four tiny training runs with exports
def test_cpu_dry_mode_runs_every_check_and_passes():
    proc = run_script("--device", "cpu")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert verdicts(proc.stdout) == dict.fromkeys(CHECKS, "PASS"), proc.stdout
    assert all(line.endswith(" on cpu") for line in proc.stdout.splitlines() if line.startswith("PASS"))


@pytest.mark.slow  # the same on two gloo ranks under torchrun (the script relaunches itself)
def test_cpu_dry_mode_on_two_ranks_passes_on_every_rank():
    proc = run_script("--device", "cpu", "--processes", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert verdicts(proc.stdout) == dict.fromkeys(CHECKS, "PASS"), proc.stdout
    assert proc.stdout.count("on cpu, 2 processes (gloo)") == len(CHECKS)
