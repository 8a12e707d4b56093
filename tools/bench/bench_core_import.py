"""Import times, side by side in one run, each against its floor.

1. `classy_hooks.core` against a bare interpreter start (`python -c pass`); target (issue 2): at
   most 30 ms more.
2. The torch packages (`classy_hooks.export`, `.model`, `.logging`) against `import torch`, which
   each of them needs anyway; target (issue 15): `import classy_hooks.export` <= 1.05x. Reported
   as the median over rounds of each round's ratio, so machine noise that hits a whole round cancels.

Every command is a fresh interpreter; the commands run interleaved, round after round.

Run: .venv/bin/python tools/bench/bench_core_import.py [--rounds 30] [--torch-rounds 15] [--only core|torch]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CORE_COMMANDS = {
    "python -c pass": "pass",
    "import classy_hooks.core": "import classy_hooks.core",
    # what a training script really touches: the base class, the registry and the task contract
    "import + ClassyHook, build_hook, Task": "from classy_hooks.core import ClassyHook, build_hook, Task",
}

TORCH_FLOOR = "import torch"
TORCH_COMMANDS = {
    TORCH_FLOOR: "import torch",
    "import classy_hooks.export": "import classy_hooks.export",
    "import classy_hooks.model": "import classy_hooks.model",
    "import classy_hooks.logging": "import classy_hooks.logging",
}


def _time(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def _interleaved(commands: dict[str, str], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(rounds):  # interleaved, so machine noise hits every command alike
        for label, code in commands.items():
            times[label].append(_time(code))
    return times


def bench_core(rounds: int) -> None:
    times = _interleaved(CORE_COMMANDS, rounds)
    medians = {label: statistics.median(t) * 1000 for label, t in times.items()}
    bare_ms = medians["python -c pass"]
    for label, ms in medians.items():
        extra = "" if label == "python -c pass" else f"  ({ms - bare_ms:+.1f} ms over bare; target <= +30 ms)"
        print(f"{label:40s} median {ms:7.1f} ms over {rounds} runs{extra}")


def bench_torch_packages(rounds: int) -> None:
    times = _interleaved(TORCH_COMMANDS, rounds)
    floor = times[TORCH_FLOOR]
    for label, samples in times.items():
        ms = statistics.median(samples) * 1000
        if label == TORCH_FLOOR:
            print(f"{label:40s} median {ms:7.1f} ms over {rounds} runs (the floor)")
            continue
        ratio = statistics.median(t / f for t, f in zip(samples, floor))
        target = "  (target <= 1.05x)" if label == "import classy_hooks.export" else ""
        print(f"{label:40s} median {ms:7.1f} ms; median ratio to import torch {ratio:.3f}x{target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="rounds of the core commands")
    parser.add_argument("--torch-rounds", type=int, default=15, help="rounds of the torch package commands")
    parser.add_argument("--only", choices=("core", "torch"), help="run one of the two tables")
    args = parser.parse_args()
    if args.only != "torch":
        bench_core(args.rounds)
    if args.only != "core":
        bench_torch_packages(args.torch_rounds)


if __name__ == "__main__":
    main()
