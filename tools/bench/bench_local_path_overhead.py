"""What URL support costs a plain local path: `atomic_write` against the bare syscalls it makes, and fsspec's.

Interleaved in one run, each on a fresh local temp folder, for a small file (4 KiB, where fixed costs show) and
a large one (64 MiB by default):
  - floor: the crash-safe sequence written out by hand (mkstemp, chmod, write, fsync, os.replace, folder fsync),
  - ours: `classy_hooks.core.files.atomic_write` (the same sequence behind the URL test),
  - peer: fsspec's local filesystem (`fsspec.open("file://...", "wb")`, as fsspec-everywhere trainers write;
    it writes in place, with no fsync and no rename, so it is not crash-safe: a weaker guarantee, for scale).
Also: the cost of the URL test itself (`is_url`) per call, and that the local path never imports fsspec.
Run: .venv/bin/python tools/bench/bench_local_path_overhead.py [--rounds 40] [--large-mib 64]
Target (issue 12): ours within noise of the floor; `is_url` well under a microsecond.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit


def _floor_write(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.chmod(tmp, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _ours_write(path: str, data: bytes) -> None:
    from classy_hooks.core.files import atomic_write

    with atomic_write(path) as handle:
        handle.write(data)


def _peer_write(path: str, data: bytes) -> None:
    import fsspec

    with fsspec.open(f"file://{path}", "wb") as handle:
        handle.write(data)


def _bench(size: int, rounds: int) -> dict[str, float]:
    data = os.urandom(size)
    writers = {
        "floor (syscalls)": _floor_write,
        "ours (atomic_write)": _ours_write,
        "peer (fsspec file://)": _peer_write,
    }
    times: dict[str, list[float]] = {name: [] for name in writers}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as folder:
        for write in writers.values():  # warm-up (imports, page cache)
            write(os.path.join(folder, "warm"), data)
        for _ in range(rounds):
            for name, write in writers.items():
                start = time.perf_counter()
                write(os.path.join(folder, f"{name.split()[0]}.bin"), data)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--large-mib", type=int, default=64)
    args = parser.parse_args()

    from classy_hooks.core.url_files import is_url

    calls = 1_000_000
    per_call = min(timeit.repeat(lambda: is_url("/data/run/checkpoints/checkpoint.torch"), number=calls, repeat=5))
    noop = min(timeit.repeat(lambda: None, number=calls, repeat=5))
    print(f"is_url on a local path: {1e9 * per_call / calls:.0f} ns per call ({1e9 * noop / calls:.0f} ns: empty call)")
    probe = (
        "import sys, tempfile, os\n"
        "from classy_hooks.core.files import atomic_write, ensure_writable_folder\n"
        "d = ensure_writable_folder('H', 'folder', tempfile.mkdtemp())\n"
        "with atomic_write(os.path.join(d, 'x')) as f: f.write(b'x')\n"
        "print('fsspec' in sys.modules)\n"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    print(f"fsspec imported by a local atomic_write: {imported}")
    for label, size in (("4 KiB", 4 << 10), (f"{args.large_mib} MiB", args.large_mib << 20)):
        medians = _bench(size, args.rounds if size < (1 << 20) else max(5, args.rounds // 4))
        floor = medians["floor (syscalls)"]
        print(f"\n{label} file, median of interleaved rounds:")
        for name, value in medians.items():
            print(f"  {name:24s} {1e3 * value:8.3f} ms  {value / floor:5.2f}x floor")


if __name__ == "__main__":
    main()
