"""mypy --strict holds a hook to `classy_hooks.core.Task`: a read outside the contract is a type error, while
LoopTask, and a loop's own task with plain attributes or properties, type-check as a Task."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dev_dependencies import dev_dependency
from helpers import ROOT

SNIPPET = '''
from typing import Any

from classy_hooks.core import ClassyHook, LoopTask, Task, call_hooks


class ReadsTheContract(ClassyHook):
    on_start = on_phase_start = on_phase_end = on_end = ClassyHook._noop

    def on_step(self, task: Task) -> None:
        self.seen = (task.phase_idx, task.train, getattr(task, "use_gpu", False))


class ReadsOutsideIt(ClassyHook):
    on_start = on_phase_start = on_phase_end = on_end = ClassyHook._noop

    def on_step(self, task: Task) -> None:
        self.seen = task.batches_done


class OwnTask:
    base_model: Any = None
    train = True
    phase_idx = train_phase_idx = 0
    losses: list[float] = []
    meters: list[Any] = []
    optimizer: Any = None
    last_batch = None
    num_batches_per_phase = 0
    dataloader: Any = None

    @property
    def phase_type(self) -> str:
        return "train"

    def get_batchsize_per_replica(self) -> int:
        return 1

    def get_classy_state(self, deep_copy: bool = False) -> dict[str, Any]:
        return {}

    def set_classy_state(self, state: Any) -> None: ...


call_hooks([ReadsTheContract()], "on_step", LoopTask(None, batch_size=1))
call_hooks([ReadsTheContract()], "on_step", OwnTask())
'''


def _mypy_errors(path: Path) -> list[str]:
    dev_dependency("mypy", "mypy is a dev tool (tools/requirements-dev.txt)")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file", str(ROOT / "pyproject.toml"),
         str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=path.parent,
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 2 would be a mypy usage or crash
    return [line for line in proc.stdout.splitlines() if ": error:" in line]


def test_mypy_flags_a_hook_reading_outside_the_contract_and_accepts_tasks_that_keep_it(tmp_path: Path) -> None:
    snippet = tmp_path / "hooks_snippet.py"
    snippet.write_text(SNIPPET)
    errors = _mypy_errors(snippet)
    assert len(errors) == 1, errors
    assert 'hooks_snippet.py:18: error: "Task" has no attribute "batches_done"' in errors[0], errors


def test_the_readme_hook_example_passes_mypy_strict(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text().split("## Writing a hook", 1)[1]
    block = tmp_path / "readme_hook.py"
    block.write_text(text.split("```python\n", 1)[1].split("```", 1)[0])
    assert _mypy_errors(block) == []
