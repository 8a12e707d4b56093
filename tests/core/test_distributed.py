"""Rank helpers with torch absent, present but not initialised, and initialised (2 gloo ranks under torchrun)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import subprocess_env, torchrun_command

BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


def test_helpers_work_without_torch() -> None:
    code = BLOCK_TORCH + (
        "from classy_hooks.core import all_reduce, barrier, get_rank, get_world_size, is_distributed, is_primary\n"
        "barrier()\n"
        "print(get_rank(), get_world_size(), is_primary(), is_distributed(), all_reduce(2.5, 'max'))\n"
        "assert 'torch' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["0", "1", "True", "False", "2.5"]


def test_helpers_with_torch_imported_but_no_process_group() -> None:
    import torch

    from classy_hooks.core import all_reduce, barrier, get_rank, get_world_size, is_distributed, is_primary

    barrier()
    tensor = torch.tensor([1.0, 2.0])
    assert (get_rank(), get_world_size(), is_primary(), is_distributed()) == (0, 1, True, False)
    assert all_reduce(tensor, "mean") is tensor and tensor.tolist() == [1.0, 2.0]


def test_all_reduce_rejects_unknown_ops() -> None:
    with pytest.raises(ValueError, match="op must be"):
        from classy_hooks.core import all_reduce

        all_reduce(1.0, "median")


WORKER = """
import torch, torch.distributed as dist
from classy_hooks.core import all_reduce, barrier, get_rank, get_world_size, is_distributed, is_primary
dist.init_process_group("gloo")
rank = get_rank()
assert get_world_size() == 2 and is_distributed() and is_primary() == (rank == 0)
t = torch.tensor([float(rank + 1), 10.0 * rank])
assert all_reduce(t) is t and t.tolist() == [3.0, 10.0]
m = torch.tensor([float(rank)])
all_reduce(m, "mean")
assert m.tolist() == [0.5]
assert all_reduce(float(rank + 1), "max") == 2.0 and all_reduce(float(rank + 1), "min") == 1.0
assert all_reduce(rank + 1) == 3.0
barrier()
print(f"rank {rank} ok")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_helpers_under_torchrun_with_two_gloo_ranks(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = torchrun_command(script)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 0 ok" in proc.stdout and "rank 1 ok" in proc.stdout
