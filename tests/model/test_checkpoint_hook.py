"""CheckpointHook: construction, folder checks, layout, period state, weights-only check, non-blocking saves."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from bad_input import assert_reported
from classy_hooks.core import ClassyHook, HookConfigError, TaskContractError, build_hook, call_hooks
from classy_hooks.core.hook_list import ordered_hooks
from classy_hooks.model import CheckpointError, CheckpointHook, load_checkpoint
from classy_hooks.model.checkpoint_io import CHECKPOINT_FORMAT_VERSION, FORMAT_VERSION_KEY
from helpers import make_task


def test_constructor_from_config_and_build_hook(tmp_path: Path) -> None:
    folder = str(tmp_path / "ckpt")
    direct = CheckpointHook(folder, input_args={"lr": 0.1}, phase_types=["train", "test"], checkpoint_period=2)
    assert direct.phase_types == ["train", "test"] and direct.checkpoint_period == 2 and not direct.non_blocking
    assert isinstance(CheckpointHook.from_config({"checkpoint_folder": folder}), CheckpointHook)
    built = build_hook({"name": "checkpoint", "checkpoint_folder": folder, "non_blocking": True})
    assert isinstance(built, CheckpointHook) and built.non_blocking
    assert CheckpointHook(folder).phase_types == ["train"]


@pytest.mark.parametrize(
    ("config", "argument"),
    [
        ({"checkpoint_folder": 12}, "checkpoint_folder"),
        ({"checkpoint_folder": ""}, "checkpoint_folder"),
        ({"checkpoint_folder": "x", "phase_types": []}, "phase_types"),
        ({"checkpoint_folder": "x", "phase_types": ["val"]}, "phase_types"),
        ({"checkpoint_folder": "x", "phase_types": "train"}, "phase_types"),
        ({"checkpoint_folder": "x", "checkpoint_period": 0}, "checkpoint_period"),
        ({"checkpoint_folder": "x", "checkpoint_period": 1.5}, "checkpoint_period"),
        ({"checkpoint_folder": "x", "checkpoint_period": True}, "checkpoint_period"),
        ({"checkpoint_folder": "x", "input_args": [1, 2]}, "input_args"),
        ({"checkpoint_folder": "x", "input_args": {"f": object()}}, "input_args"),
        ({"checkpoint_folder": "x", "non_blocking": "yes"}, "non_blocking"),
        ({"checkpoint_folder": "x", "sharded": "auto"}, "sharded"),
        ({"checkpoint_folder": "x", "period": 2}, "period"),
        ({}, "checkpoint_folder"),
    ],
)
def test_bad_config_is_a_clear_error(config: dict[str, Any], argument: str) -> None:
    with pytest.raises(HookConfigError, match=rf"CheckpointHook.*'{argument}"):
        build_hook({"name": "checkpoint", **config})


def test_on_start_creates_the_folder_and_rejects_unusable_ones(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "ckpt"
    CheckpointHook(str(folder)).on_start(make_task())
    assert folder.is_dir()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for bad in (a_file, a_file / "sub"):
        with pytest.raises(HookConfigError, match="checkpoint_folder"):
            CheckpointHook(str(bad)).on_start(make_task())


def test_on_start_checks_the_task(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"CheckpointHook.*phase_idx"):
        CheckpointHook(str(tmp_path)).on_start(object())


def test_layout_format_version_and_weights_only_load(tmp_path: Path) -> None:
    hook = CheckpointHook(str(tmp_path), input_args={"config": "x.json", "n": [1, 2]}, phase_types=["train", "test"])
    task = make_task([hook])
    task.run()
    names = sorted(os.listdir(tmp_path))
    assert names == ["checkpoint.torch"] + [f"model_phase-{i}_end.torch" for i in range(4)]
    for name in names:
        checkpoint = torch.load(tmp_path / name, weights_only=True)
        assert set(checkpoint) == {"input_args", "classy_state_dict", FORMAT_VERSION_KEY}
        assert checkpoint[FORMAT_VERSION_KEY] == CHECKPOINT_FORMAT_VERSION
        assert checkpoint["input_args"] == {"config": "x.json", "n": [1, 2]}
    latest = load_checkpoint(tmp_path)["classy_state_dict"]
    assert latest["phase_idx"] == 3
    for key, value in task.base_model.state_dict().items():
        assert torch.equal(latest["base_model"][key], value)
    assert load_checkpoint(tmp_path / "model_phase-1_end.torch")["classy_state_dict"]["phase_idx"] == 1


def test_per_phase_files_are_replaced_not_left_stale(tmp_path: Path) -> None:
    make_task([CheckpointHook(str(tmp_path))], seed=1).run()
    second = make_task([CheckpointHook(str(tmp_path))], seed=2)
    second.run()
    saved = load_checkpoint(tmp_path / "model_phase-2_end.torch")["classy_state_dict"]["base_model"]
    for key, value in second.base_model.state_dict().items():
        assert torch.equal(saved[key], value), key


def test_period_counter_is_state_and_survives_a_resume(tmp_path: Path) -> None:
    hook = CheckpointHook(str(tmp_path), checkpoint_period=2)
    make_task([hook], num_epochs=3).run()  # train phases 0, 2, 4: the second one saves
    expected = {"phase_counter": 3, "optimizer_steps": 0, "written": ["model_phase-2_end.torch"], "to_remove": []}
    assert hook.get_classy_state() == expected
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.torch", "model_phase-2_end.torch"]
    saved = load_checkpoint(tmp_path)["classy_state_dict"]["hooks"]["CheckpointHook"]
    assert saved == {**expected, "phase_counter": 2}
    resumed = CheckpointHook(str(tmp_path / "resumed"), checkpoint_period=2)
    resumed.set_classy_state({"phase_counter": 3})
    task = make_task([resumed], num_epochs=3)
    task.phase_idx, task.train = 5, True  # the 4th train phase
    resumed.on_start(task)
    resumed.on_phase_end(task)
    assert os.path.exists(tmp_path / "resumed" / "model_phase-5_end.torch")


class _ObjectStateHook(ClassyHook):
    on_start = on_phase_start = on_step = on_phase_end = on_end = ClassyHook._noop

    def __init__(self) -> None:
        super().__init__()
        self.state.history = {"best": torch.zeros(1), "when": object()}


def test_state_that_would_not_load_weights_only_is_rejected_naming_the_key(tmp_path: Path) -> None:
    hook = CheckpointHook(str(tmp_path))
    task = make_task([_ObjectStateHook(), hook], num_epochs=1, test_phase_period=0)
    with pytest.raises(CheckpointError, match=r"\['hooks'\]\['_ObjectStateHook'\]\['history'\]\['when'\]"):
        task.run()
    assert [n for n in os.listdir(tmp_path) if n.endswith(".torch") or n.endswith(".tmp")] == []


def test_hook_declares_it_runs_last_and_never_reorders_task_hooks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook = CheckpointHook(str(tmp_path))
    other = _ObjectStateHook.__new__(_ObjectStateHook)
    ClassyHook.__init__(other)
    assert ordered_hooks([hook, other]) == [other, hook]  # what call_hooks and build_hooks apply
    task = make_task([hook, other])
    with caplog.at_level(logging.WARNING):
        hook.on_start(task)  # as a loop iterating task.hooks itself would call it: warned, not reordered
    assert task.hooks == [hook, other]
    assert "CheckpointHook: the loop calls task.hooks in the order ['CheckpointHook', '_ObjectStateHook']" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        call_hooks(task.hooks, "on_start", task)  # call_hooks applies the order: nothing to warn about
    assert "ClassyHook.order" not in caplog.text and task.hooks == [hook, other]


def test_test_only_runs_write_nothing(tmp_path: Path) -> None:
    hook = CheckpointHook(str(tmp_path / "c"), phase_types=["test"])
    make_task([hook], test_only=True).run()
    assert not (tmp_path / "c").exists()


def test_non_blocking_save_writes_a_snapshot_and_waits_at_on_end(tmp_path: Path) -> None:
    sync_dir, async_dir = tmp_path / "sync", tmp_path / "async"
    make_task([CheckpointHook(str(sync_dir), phase_types=["train", "test"])]).run()
    hook = CheckpointHook(str(async_dir), phase_types=["train", "test"], non_blocking=True)
    make_task([hook]).run()
    assert hook._thread is None  # on_end waited
    assert sorted(os.listdir(sync_dir)) == sorted(os.listdir(async_dir))
    a = load_checkpoint(sync_dir)["classy_state_dict"]
    b = load_checkpoint(async_dir)["classy_state_dict"]
    for key in a["base_model"]:
        assert torch.equal(a["base_model"][key], b["base_model"][key])
    assert a["phase_idx"] == b["phase_idx"] == 3


def test_non_blocking_snapshot_is_isolated_from_later_training(tmp_path: Path) -> None:
    hook = CheckpointHook(str(tmp_path), non_blocking=True)
    task = make_task([hook])
    hook.on_start(task)
    task.phase_idx, task.train = 0, True
    before = {k: v.clone() for k, v in task.base_model.state_dict().items()}
    hook.on_phase_end(task)
    with torch.no_grad():
        for p in task.base_model.parameters():
            p.add_(1.0)  # training goes on while the thread writes
    hook.on_end(task)
    saved = load_checkpoint(tmp_path)["classy_state_dict"]["base_model"]
    for key, value in before.items():
        assert torch.equal(saved[key], value), key


def test_failed_background_save_is_raised_at_on_end(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    hook = CheckpointHook(str(tmp_path / "ok"), non_blocking=True)
    task = make_task([hook])
    hook.on_start(task)
    hook.checkpoint_folder = str(blocker / "sub")  # the folder becomes unusable mid-run
    task.phase_idx, task.train = 0, True
    hook.on_phase_end(task)
    with pytest.raises(RuntimeError, match="background checkpoint save"):
        hook.on_end(task)


def test_checkpoint_content_does_not_depend_on_where_the_hook_is_listed(tmp_path: Path) -> None:
    from classy_hooks.model import ExponentialMovingAverageModelHook, PreciseBatchNormHook

    saved = []
    for order, folder in (("first", tmp_path / "a"), ("last", tmp_path / "b")):
        checkpoint = CheckpointHook(str(folder))
        others: list[ClassyHook] = [ExponentialMovingAverageModelHook(0.8), PreciseBatchNormHook(32)]
        make_task([checkpoint, *others] if order == "first" else [*others, checkpoint]).run()
        saved.append(load_checkpoint(folder / "model_phase-0_end.torch")["classy_state_dict"])
    first, last = saved
    for key, value in first["base_model"].items():
        assert torch.equal(value, last["base_model"][key]), key  # precise-BN statistics included either way
    ema_first = first["hooks"]["ExponentialMovingAverageModelHook"]["ema_state"]
    ema_last = last["hooks"]["ExponentialMovingAverageModelHook"]["ema_state"]
    for key, value in ema_first.items():
        assert torch.equal(value, ema_last[key]), key


def test_single_process_default_stays_one_file_and_sharded_is_built_from_config(tmp_path: Path) -> None:
    make_task([CheckpointHook(str(tmp_path / "plain"))], num_epochs=1).run()  # no DTensor: today's single file
    assert sorted(os.listdir(tmp_path / "plain")) == ["checkpoint.torch", "model_phase-0_end.torch"]
    hook = build_hook({"name": "checkpoint", "checkpoint_folder": str(tmp_path / "dcp"), "sharded": True})
    make_task([hook], num_epochs=1).run()
    assert sorted(os.listdir(tmp_path / "dcp")) == ["checkpoint.latest", "model_phase-0_end.dcp"]


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----

@pytest.mark.parametrize(
    ("config", "mentions"),
    [
        pytest.param({}, ("checkpoint_folder", "Add it to the hook's config"), id="folder-key-missing"),
        pytest.param({"checkpoint_folder": "x", "checkpoint_perod": 2}, ("checkpoint_perod", "Did you mean 'checkpoint_period'"), id="unknown-key-typo"),
        pytest.param({"checkpoint_folder": "x", "checkpoint_period": 0}, ("checkpoint_period", "Pass an int of at least 1"), id="period-zero"),
        pytest.param({"checkpoint_folder": "x", "checkpoint_period": "2"}, ("checkpoint_period", "Pass a whole number"), id="period-string"),
        pytest.param({"checkpoint_folder": "x", "phase_types": ["val"]}, ("phase_types", "Use a non-empty subset"), id="phase-types-unknown"),
        pytest.param({"checkpoint_folder": 7}, ("checkpoint_folder", "Pass a string"), id="folder-not-a-string"),
    ],
)
def test_bad_config_is_reported_by_the_constructor(config: dict[str, Any], mentions: tuple[str, ...]) -> None:
    with pytest.raises(HookConfigError) as info:
        build_hook({"name": "checkpoint", **config})
    assert_reported(info.value, HookConfigError, ("CheckpointHook", *mentions))


@pytest.mark.parametrize(
    ("folder", "mentions"),
    [
        pytest.param("afile", ("afile", "is a file", "Pass a folder path"), id="folder-is-a-file"),
        pytest.param("afile/sub", ("afile/sub", "Pass a folder you can write to"), id="folder-parent-is-a-file"),
    ],
)
def test_unusable_folder_is_reported_at_on_start(tmp_path: Path, folder: str, mentions: tuple[str, ...]) -> None:
    (tmp_path / "afile").write_text("not a folder")
    task = make_task([build_hook({"name": "checkpoint", "checkpoint_folder": str(tmp_path / folder)})])
    with pytest.raises(HookConfigError) as info:
        task.run()
    assert_reported(info.value, HookConfigError, ("CheckpointHook", "checkpoint_folder", *mentions))
    assert task.num_updates == 0


def test_task_without_get_classy_state_is_reported_at_on_start(tmp_path: Path) -> None:
    hook = build_hook({"name": "checkpoint", "checkpoint_folder": str(tmp_path)})
    with pytest.raises(TaskContractError) as info:
        hook.on_start(SimpleNamespace(phase_type="train", phase_idx=0))
    assert_reported(info.value, TaskContractError, ("CheckpointHook", "get_classy_state", "Add them to your task"))
