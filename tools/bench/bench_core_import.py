"""Import time of `classy_hooks.core` against a bare interpreter start (`python -c pass`), side by side.

Run: .venv/bin/python tools/bench/bench_core_import.py [--rounds 30]
Target (issue 2): at most 30 ms more than `python -c pass`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    rounds = parser.parse_args().rounds
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import classy_hooks.core": [sys.executable, "-c", "import classy_hooks.core"],
        # what a training script really touches: the base class, the registry and the task contract
        "import + ClassyHook, build_hook, Task": [
            sys.executable,
            "-c",
            "from classy_hooks.core import ClassyHook, build_hook, Task",
        ],
    }
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(rounds):  # interleaved, so machine noise hits every command alike
        for label, cmd in commands.items():
            times[label].append(_time(cmd))
    medians = {label: statistics.median(t) * 1000 for label, t in times.items()}
    bare_ms = medians["python -c pass"]
    for label, ms in medians.items():
        extra = "" if label == "python -c pass" else f"  ({ms - bare_ms:+.1f} ms over bare; target <= +30 ms)"
        print(f"{label:40s} median {ms:7.1f} ms over {rounds} runs{extra}")


if __name__ == "__main__":
    main()
