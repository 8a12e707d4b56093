"""LoopTask: a plain loop's task keeps the counters, calls the events in order and resumes after finished phases."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from classy_hooks.core import (
    ClassyHook,
    HookConfigError,
    LoopTask,
    TaskContractError,
    get_hook_class,
    registered_hook_names,
)
from classy_hooks.core.task import DATA_POSITION_KEY, Task
from dev_dependencies import dev_dependency
from helpers import CountingDataset, subprocess_env, torchrun_command


class EventLog(ClassyHook):
    """Records each event with the counters the task shows at that moment."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[Any, ...]] = []

    def on_start(self, task: Any) -> None:
        self.events.append(("on_start", task.phase_idx))

    def on_phase_start(self, task: Any) -> None:
        self.events.append(("on_phase_start", task.phase_idx, task.train_phase_idx, task.phase_type, len(task.losses)))

    def on_step(self, task: Any) -> None:
        self.events.append(("on_step", task.phase_idx, task.is_optimizer_step, task.num_updates))

    def on_phase_end(self, task: Any) -> None:
        self.events.append(("on_phase_end", task.phase_idx, list(task.losses), round(task.where, 3)))

    def on_end(self, task: Any) -> None:
        self.events.append(("on_end", task.phase_idx))


class MeanMeter:
    """A meter with Classy Vision's API: the mean of the outputs it saw."""

    name = "mean"

    def __init__(self) -> None:
        self.total, self.count, self.synced = 0.0, 0, 0

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self.total += float(output.sum())
        self.count += output.numel()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def sync_state(self) -> None:
        self.synced += 1

    @property
    def value(self) -> dict[str, float]:
        return {"mean": self.total / max(self.count, 1)}

    def get_classy_state(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}

    def set_classy_state(self, state: dict[str, Any]) -> None:
        self.total, self.count = state["total"], state["count"]


def _batches(n: int, size: int = 4) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(n)
    return [{"input": torch.randn(size, 3, generator=generator), "target": torch.randint(0, 2, (size,))} for _ in range(n)]


def _run(task: LoopTask, plan: list[tuple[str, Any]], accumulate: int = 1) -> None:
    for _, data in task.run_phases(plan):
        for i, batch in enumerate(data):
            with torch.set_grad_enabled(task.train):
                output = task.model(batch["input"])
                loss = nn.functional.cross_entropy(output, batch["target"])
            step = (i + 1) % accumulate == 0
            if task.train:
                (loss / accumulate).backward()
                if step:
                    task.optimizer.step()
                    task.optimizer.zero_grad()
            task.step(batch, output, loss, optimizer_step=step)


def test_events_come_in_classy_order_with_counters_advanced_first() -> None:
    model = nn.Linear(3, 2)
    log = EventLog()
    task = LoopTask(model, torch.optim.SGD(model.parameters(), lr=0.1), [log])
    assert isinstance(task, Task)
    _run(task, [("train", _batches(2)), ("test", _batches(1)), ("train", _batches(2))])
    names = [event[0] for event in log.events]
    train_phase = ["on_phase_start", "on_step", "on_step", "on_phase_end"]
    assert names == ["on_start", *train_phase, "on_phase_start", "on_step", "on_phase_end", *train_phase, "on_end"]
    starts = [event for event in log.events if event[0] == "on_phase_start"]
    assert starts == [
        ("on_phase_start", 0, 0, "train", 0),
        ("on_phase_start", 1, 0, "test", 0),
        ("on_phase_start", 2, 1, "train", 0),
    ]
    steps = [event for event in log.events if event[0] == "on_step"]
    assert [event[3] for event in steps] == [4, 8, 8, 12, 16]  # num_updates grows on train batches only
    assert [event[2] for event in steps] == [True, True, False, True, True]  # test batches are no optimizer step
    ends = [event for event in log.events if event[0] == "on_phase_end"]
    assert all(isinstance(x, float) for event in ends for x in event[2])  # losses gathered as plain floats
    assert [event[3] for event in ends] == [0.5, 0.5, 1.0]  # where: fraction of train phases done
    assert model.training  # train mode again after the test phase


def test_model_mode_meters_and_batch_size_follow_the_phase() -> None:
    model = nn.Linear(3, 2)
    meter = MeanMeter()
    task = LoopTask(model, None, meters=[meter])
    modes = []
    for phase_type, data in task.run_phases([("test", _batches(2, size=5))]):
        modes.append((phase_type, model.training))
        _run_batch(task, data[0])
        assert task.get_batchsize_per_replica() == 5 == task.get_global_batchsize()
        _run_batch(task, data[1])
    assert modes == [("test", False)]
    assert meter.synced == 1 and meter.count == 20


def _run_batch(task: LoopTask, batch: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        output = task.model(batch["input"])
    task.step(batch, output, nn.functional.cross_entropy(output, batch["target"]))


def test_gradient_accumulation_marks_micro_steps() -> None:
    model = nn.Linear(3, 2)
    log = EventLog()
    task = LoopTask(model, torch.optim.SGD(model.parameters(), lr=0.1), [log])
    _run(task, [("train", _batches(4))], accumulate=2)
    assert [event[2] for event in log.events if event[0] == "on_step"] == [False, True, False, True]


def test_resume_skips_finished_phases_and_is_bit_identical() -> None:
    def fresh() -> LoopTask:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
        return LoopTask(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), [EventLog()])

    plan = [("train", _batches(3)), ("test", _batches(1)), ("train", _batches(3)), ("test", _batches(1))]
    straight = fresh()
    _run(straight, plan)

    first = fresh()
    _run(first, plan[:1])
    state = first.get_classy_state(deep_copy=True)
    resumed = fresh()
    resumed.set_classy_state(state)
    _run(resumed, plan)
    phases = [event[1] for event in resumed.hooks[0].events if event[0] == "on_phase_start"]
    assert phases == [1, 2, 3]
    for name, value in straight.base_model.state_dict().items():
        assert torch.equal(value, resumed.base_model.state_dict()[name]), name
    assert straight.num_updates == resumed.num_updates == 24
    assert straight.optimizer.state_dict()["state"][0]["momentum_buffer"].equal(
        resumed.optimizer.state_dict()["state"][0]["momentum_buffer"]
    )


class PositionAt(ClassyHook):
    """Takes what a mid-phase checkpoint holds (task state plus data position) after a chosen step of a phase."""

    on_start = on_phase_start = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, phase_idx: int, batches: int) -> None:
        super().__init__()
        self.at, self.saved, self.seen = (phase_idx, batches), None, []

    def on_step(self, task: Any) -> None:
        self.seen.append((task.phase_idx, task.batches_done))
        if (task.phase_idx, task.batches_done) == self.at:
            self.saved = {**task.get_classy_state(deep_copy=True), DATA_POSITION_KEY: task.get_data_position()}


def _shuffling_task(hook: PositionAt) -> LoopTask:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    return LoopTask(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), [hook], meters=[MeanMeter()])


def test_a_mid_phase_state_continues_its_phase_after_the_batches_done() -> None:
    dataset = TensorDataset(torch.randn(24, 3), torch.randint(0, 2, (24,)))
    loader = DataLoader(dataset, batch_size=4, shuffle=True)  # its order is drawn from the global generator
    plan = [("train", loader), ("train", loader)]
    straight = _shuffling_task(PositionAt(1, 4))
    _run_loader(straight, plan)
    rng_at_end = torch.get_rng_state()
    state = straight.hooks[0].saved
    assert state is not None and state[DATA_POSITION_KEY]["batches"] == 4

    resumed = _shuffling_task(PositionAt(-1, -1))
    resumed.set_classy_state(state)
    _run_loader(resumed, plan)
    assert resumed.hooks[0].seen == [(1, 5), (1, 6)]  # phase 1 again, after its 4 batches
    for name, value in straight.base_model.state_dict().items():
        assert torch.equal(value, resumed.base_model.state_dict()[name]), name
    assert resumed.losses == straight.losses and len(resumed.losses) == 6
    assert resumed.meters[0].get_classy_state() == straight.meters[0].get_classy_state()
    assert torch.equal(torch.get_rng_state(), rng_at_end)  # dropout drew the same numbers after the resume


def _run_loader(task: LoopTask, plan: list[tuple[str, Any]]) -> None:
    for _, data in task.run_phases(plan):
        for x, y in data:
            output = task.model(x)
            loss = nn.functional.cross_entropy(output, y)
            loss.backward()
            task.optimizer.step()
            task.optimizer.zero_grad()
            task.step({"input": x, "target": y}, output, loss)


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")  # torchdata 0.11 on torch 2.14
def test_a_stateful_loader_continues_its_phase_without_loading_the_batches_done() -> None:
    """torchdata's StatefulDataLoader keeps its own position: the resumed phase loads only what is left."""
    stateful = dev_dependency("torchdata.stateful_dataloader", reason="torchdata is a test-only dev dependency")
    dataset = CountingDataset(torch.randn(24, 3), torch.randint(0, 2, (24,)))
    plan = [("train", stateful.StatefulDataLoader(dataset, batch_size=4, shuffle=True))] * 2
    straight = _shuffling_task(PositionAt(1, 4))
    _run_loader(straight, plan)
    rng_at_end = torch.get_rng_state()
    state = straight.hooks[0].saved
    assert state is not None and "loader_state" in state[DATA_POSITION_KEY]["ranks"][0]

    dataset.loaded = 0
    resumed = _shuffling_task(PositionAt(-1, -1))
    resumed.set_classy_state(state)
    _run_loader(resumed, [("train", stateful.StatefulDataLoader(dataset, batch_size=4, shuffle=True))] * 2)
    assert resumed.hooks[0].seen == [(1, 5), (1, 6)]
    assert dataset.loaded == 8  # the phase's last two batches; the four done were not loaded again
    for name, value in straight.base_model.state_dict().items():
        assert torch.equal(value, resumed.base_model.state_dict()[name]), name
    assert resumed.losses == straight.losses
    assert resumed.meters[0].get_classy_state() == straight.meters[0].get_classy_state()
    assert torch.equal(torch.get_rng_state(), rng_at_end)


def test_a_mid_phase_state_from_another_number_of_ranks_is_refused() -> None:
    task = LoopTask(nn.Linear(3, 2), batch_size=4)
    state = task.get_classy_state()
    state[DATA_POSITION_KEY] = {"batches": 2, "phase_idx": 0, "ranks": [{}, {}]}
    state["phase_idx"] = 5
    with pytest.raises(HookConfigError, match=r"inside phase 0 on 2 rank\(s\); resume it on as many ranks \(now 1\)"):
        task.set_classy_state(state)
    assert task.phase_idx == -1  # refused before anything was restored


def test_data_shorter_than_the_batches_done_is_named() -> None:
    saver = PositionAt(0, 3)
    task = _shuffling_task(saver)
    _run(task, [("train", _batches(4))])
    resumed = _shuffling_task(PositionAt(-1, -1))
    resumed.set_classy_state(saver.saved)  # type: ignore[arg-type]
    with pytest.raises(TaskContractError, match="after 3 batches of this phase, but its data now has only 2"):
        _run(resumed, [("train", _batches(2))])


def test_bad_input_is_named() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(HookConfigError, match="LoopTask: batch_size must be a positive int"):
        LoopTask(model, batch_size=0)
    with pytest.raises(HookConfigError, match=r"hooks\[0\] is a str"):
        LoopTask(model, hooks=["checkpoint"])
    task = LoopTask(model)
    with pytest.raises(HookConfigError, match=r"plan\[1\] must be a \('train' or 'test', dataloader\) pair"):
        next(task.run_phases([("train", []), ("validate", [])]))
    with pytest.raises(TaskContractError, match="pass batch_size="):
        task.get_batchsize_per_replica()
    with pytest.raises(TaskContractError, match="'input' and 'target'"):
        task.step({"x": torch.zeros(1)}, torch.zeros(1), torch.zeros(()))


def test_a_fresh_task_has_every_attribute_a_first_party_hook_reads() -> None:
    task = LoopTask(nn.Linear(3, 2), batch_size=4)
    names = registered_hook_names()
    assert len(names) >= 12
    for name in names:
        missing = [a for a in get_hook_class(name).task_attributes if not hasattr(task, a)]
        assert not missing, (name, missing)


WORKER = '''
import sys
import torch
import torch.distributed as dist
from torch import nn
from classy_hooks.core import LoopTask

dist.init_process_group("gloo")
rank = dist.get_rank()
task = LoopTask(nn.Linear(3, 2), None, batch_size=2)
for _, data in task.run_phases([("test", [0, 1, 2])]):
    for i in data:
        batch = {"input": torch.zeros(2, 3), "target": torch.zeros(2, dtype=torch.long)}
        task.step(batch, torch.zeros(2, 2), torch.tensor(float(10 * rank + i)))
assert task.losses == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0], task.losses
assert task.get_global_batchsize() == 4
dist.destroy_process_group()
open(f"ok-{rank}", "w").close()  # one file a rank: their stdout lines can interleave
'''


@pytest.mark.slow
def test_losses_are_gathered_from_every_rank(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.run(
        torchrun_command(script), env=subprocess_env(), capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(path.name for path in tmp_path.glob("ok-*")) == ["ok-0", "ok-1"]
