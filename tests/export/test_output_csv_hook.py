"""OutputCSVHook: arguments, file content against an independent computation, one-hot targets, phases, warnings."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from bad_input import assert_reported, assert_warned, run_to_the_end_and_warnings
from classy_hooks.core import ClassyHook, HookConfigError, LastBatch, TaskContractError, build_hook
from classy_hooks.export import OutputCSVHook
from helpers import make_task


def read_rows(path: str | Path, delimiter: str = "\t") -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle, delimiter=delimiter))


def plain_task() -> SimpleNamespace:
    """The few attributes OutputCSVHook reads, as a plain loop would provide them."""
    return SimpleNamespace(train=False, phase_idx=-1, last_batch=None)


def run_phase(hook: OutputCSVHook, task: SimpleNamespace, batches: list[LastBatch], train: bool = False) -> None:
    task.phase_idx += 1
    task.train = train
    hook.on_phase_start(task)
    for batch in batches:
        task.last_batch = batch
        hook.on_step(task)
    hook.on_phase_end(task)


def batch(output: Any, target: Any, ids: Any, id_key: str = "id") -> LastBatch:
    sample = {"input": None, "target": target}
    if ids is not None:
        sample[id_key] = ids
    return LastBatch(loss=torch.tensor(0.0), output=output, target=target, sample=sample, step_data={})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"folder": 12}, r"OutputCSVHook: argument 'folder' must be a str"),
        ({"folder": ""}, r"argument 'folder' must not be empty"),
        ({"folder": "x", "id_key": None}, r"argument 'id_key' must be a str"),
        ({"folder": "x", "id_key": ""}, r"argument 'id_key' must not be empty"),
        ({"folder": "x", "delimiter": 5}, r"argument 'delimiter' must be a str"),
        ({"folder": "x", "delimiter": ""}, r"argument 'delimiter' must not be empty"),
        ({"folder": "x", "delimiter": "::"}, r"argument 'delimiter' must be a single character"),
        ({"folder": "x", "delimiter": "\n"}, r"argument 'delimiter' must be a single character other than"),
        ({"folder": "x", "delimiter": '"'}, r"argument 'delimiter' must be a single character other than a quote"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str):
    with pytest.raises(HookConfigError, match=match):
        OutputCSVHook(**kwargs)


def test_constructor_touches_no_file_and_on_start_checks(tmp_path: Path):
    folder = tmp_path / "predictions"
    hook = build_hook({"name": "output_csv", "folder": str(folder)})
    assert isinstance(hook, OutputCSVHook) and hook.delimiter == "\t" and hook.id_key == "id"
    assert not folder.exists()
    with pytest.raises(TaskContractError, match=r"phase_idx"):
        hook.on_start(SimpleNamespace(train=False, last_batch=None))
    hook.on_start(plain_task())
    assert folder.is_dir() and os.listdir(folder) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(HookConfigError, match=r"argument 'folder' .* is a file"):
        OutputCSVHook(str(tmp_path / "file")).on_start(plain_task())


def test_rows_match_an_independent_computation(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Reference loop, 2 test phases: predictions.csv holds the last one, one row per test sample, header once."""
    caplog.set_level(logging.INFO, logger="classy_hooks.export")
    hook = OutputCSVHook(str(tmp_path))
    task = make_task([hook])
    task.run()
    assert [p["train"] for p in task.phases] == [True, False, True, False]

    model = task.base_model.eval()
    data = task.test_dataset
    with torch.no_grad():
        predictions = model(data.inputs).argmax(dim=1)
    expected = [[str(int(i)), str(int(p)), str(int(t))] for i, p, t in zip(data.ids, predictions, data.targets)]

    rows = read_rows(hook.output_path)
    assert rows[0] == ["sample_id", "prediction", "target"]
    assert rows[1:] == sorted(expected, key=lambda r: int(r[0]))
    assert len(rows) == 1 + len(data)
    written = [r.getMessage() for r in caplog.records if "predictions of test phase" in r.getMessage()]
    assert len(written) == 2 and "test phase 3" in written[-1]
    assert sorted(os.listdir(tmp_path)) == ["predictions.csv", "predictions.phase00001.csv", "predictions.phase00003.csv"]


def test_one_hot_and_soft_targets_give_the_class_index(tmp_path: Path):
    hook = OutputCSVHook(str(tmp_path), delimiter=",")
    task = plain_task()
    hook.on_start(task)
    output = torch.tensor([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0]])
    one_hot = torch.nn.functional.one_hot(torch.tensor([1, 2]), 3).float()
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    run_phase(hook, task, [batch(output, one_hot, torch.tensor([10, 11])), batch(output, soft, torch.tensor([3, 4]))])
    assert read_rows(hook.output_path, ",") == [
        ["sample_id", "prediction", "target"],
        ["3", "1", "0"],
        ["4", "0", "2"],
        ["10", "1", "1"],
        ["11", "0", "2"],
    ]


def test_string_ids_and_missing_targets(tmp_path: Path):
    hook = OutputCSVHook(str(tmp_path), id_key="path")
    task = plain_task()
    hook.on_start(task)
    output = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    run_phase(hook, task, [batch(output, None, ["b.jpg", "a\tb.jpg"], id_key="path")])
    assert read_rows(hook.output_path) == [
        ["sample_id", "prediction", "target"],
        ["a\tb.jpg", "0", ""],
        ["b.jpg", "1", ""],
    ]


def test_batches_without_ids_warn_once(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="classy_hooks.export")
    hook = OutputCSVHook(str(tmp_path))
    task = plain_task()
    hook.on_start(task)
    output, target = torch.randn(2, 3), torch.tensor([0, 1])
    for _ in range(2):  # two test phases of 5 batches, 3 without ids
        run_phase(hook, task, [batch(output, target, None)] * 3 + [batch(output, target, torch.tensor([7, 8]))] * 2)
    step_warnings = [r for r in caplog.records if "has no 'id' key (its keys: ['input', 'target'])" in r.getMessage()]
    assert len(step_warnings) == 1
    summaries = [r.getMessage() for r in caplog.records if "test batch(es) of phase" in r.getMessage()]
    assert summaries == [
        f"OutputCSVHook: 3 test batch(es) of phase {p} had no 'id' key and are missing from {hook.output_path}."
        for p in (0, 1)
    ]


def test_duplicate_ids_are_written_once(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="classy_hooks.export")
    hook = OutputCSVHook(str(tmp_path))
    task = plain_task()
    hook.on_start(task)
    output, target = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    run_phase(hook, task, [batch(output, target, torch.tensor([1, 2])), batch(output, target, torch.tensor([2, 3]))])
    assert [r[0] for r in read_rows(hook.output_path)[1:]] == ["1", "2", "3"]
    assert any("1 sample id(s) appeared more than once" in r.getMessage() for r in caplog.records)


def test_train_phases_write_nothing_and_a_rerun_replaces_the_file(tmp_path: Path):
    hook = OutputCSVHook(str(tmp_path))
    task = plain_task()
    hook.on_start(task)
    output, target = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    run_phase(hook, task, [batch(output, target, torch.tensor([5]))], train=True)
    assert not os.path.exists(hook.output_path)
    run_phase(hook, task, [batch(output, target, torch.tensor([5]))])
    stale = tmp_path / ".predictions.csv.phase9.rank00001.part"
    stale.write_text("999\t0\t0\n")
    rerun = OutputCSVHook(str(tmp_path))  # e.g. a resumed run in the same folder
    task = plain_task()
    rerun.on_start(task)
    assert not stale.exists()
    run_phase(rerun, task, [batch(output, target, torch.tensor([5]))])
    assert read_rows(hook.output_path) == [["sample_id", "prediction", "target"], ["5", "0", "0"]]


@pytest.mark.parametrize(
    ("output", "target", "ids", "match"),
    [
        (torch.randn(2), torch.tensor([0, 1]), torch.tensor([0, 1]), r"output must be a \(batch, classes\) tensor"),
        (torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 1, 2]), r"holds 3 ids for a batch of 2 outputs"),
        (torch.randn(2, 3), torch.zeros(2, 3, 1), torch.tensor([0, 1]), r"target must be a tensor of class indices"),
        (torch.randn(2, 3), torch.tensor([0, 1]), 7, r"must be a tensor or a list of ids, got int"),
    ],
)
def test_bad_batches_are_clear_errors(tmp_path: Path, output: Any, target: Any, ids: Any, match: str):
    hook = OutputCSVHook(str(tmp_path))
    task = plain_task()
    hook.on_start(task)
    task.last_batch = batch(output, target, ids)
    with pytest.raises(TaskContractError, match=match):
        hook.on_step(task)


def _phase_files(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("predictions.phase"))


def test_every_test_phase_is_kept_and_predictions_csv_is_the_latest(tmp_path: Path):
    """As Classy Vision (which appended every test phase to one file), no phase is lost; the latest has its name."""
    hook = OutputCSVHook(str(tmp_path))
    task = plain_task()
    hook.on_start(task)
    ids = torch.tensor([1, 2])
    for classes in [[0, 0], [1, 0], [1, 1]]:
        output = torch.nn.functional.one_hot(torch.tensor(classes), 2).float()
        run_phase(hook, task, [batch(output, torch.tensor([0, 1]), ids)], train=False)
        run_phase(hook, task, [batch(output, torch.tensor([0, 1]), ids)], train=True)  # train phases write nothing
    assert _phase_files(tmp_path) == ["predictions.phase00000.csv", "predictions.phase00002.csv", "predictions.phase00004.csv"]
    predicted = [[row[1] for row in read_rows(tmp_path / name)[1:]] for name in _phase_files(tmp_path)]
    assert predicted == [["0", "0"], ["1", "0"], ["1", "1"]]
    assert read_rows(hook.output_path) == read_rows(tmp_path / "predictions.phase00004.csv")


def test_keep_phases_false_writes_only_the_latest(tmp_path: Path):
    hook = build_hook({"name": "output_csv", "folder": str(tmp_path), "keep_phases": False})
    assert isinstance(hook, OutputCSVHook) and not hook.keep_phases
    task = plain_task()
    hook.on_start(task)
    output, target = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    run_phase(hook, task, [batch(output, target, torch.tensor([5]))])
    run_phase(hook, task, [batch(output, target, torch.tensor([6]))])
    assert os.listdir(tmp_path) == ["predictions.csv"]
    assert read_rows(hook.output_path)[1:] == [["6", "0", "0"]]
    with pytest.raises(HookConfigError, match="OutputCSVHook: argument 'keep_phases' must be a bool"):
        OutputCSVHook(str(tmp_path), keep_phases="yes")


class _Crash(Exception):
    pass


class _CrashAtPhase(ClassyHook):
    """Stops the run (an exception) when phase `phase_idx` starts, after the earlier phases were written."""

    on_start = on_step = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, phase_idx: int) -> None:
        super().__init__()
        self.phase_idx = phase_idx

    def on_phase_start(self, task: Any) -> None:
        if task.phase_idx == self.phase_idx:
            raise _Crash


def test_a_run_resumed_from_a_checkpoint_keeps_each_test_phase_once(tmp_path: Path):
    """A run crashes after test phase 3 was written; it resumes from the checkpoint of phase 1 (test phase 3's rows
    are the crashed run's, not the checkpoint's). The folder ends exactly as an uninterrupted run leaves it."""
    from classy_hooks.model import CheckpointHook, resume_task

    straight = tmp_path / "straight"
    make_task([OutputCSVHook(str(straight))], num_epochs=3).run()

    folder, checkpoints = tmp_path / "resumed", tmp_path / "checkpoints"
    crashing = make_task(
        [OutputCSVHook(str(folder)), CheckpointHook(str(checkpoints), phase_types=["test"]), _CrashAtPhase(4)],
        num_epochs=3,
    )
    with pytest.raises(_Crash):
        crashing.run()
    assert _phase_files(folder) == ["predictions.phase00001.csv", "predictions.phase00003.csv"]
    phase1 = os.path.join(str(checkpoints), "model_phase-1_end.torch")

    seen_at_start: list[Any] = []

    class LookAtStart(ClassyHook):
        on_phase_start = on_step = on_phase_end = on_end = ClassyHook._noop

        def on_start(self, task: Any) -> None:
            seen_at_start.extend([_phase_files(folder), read_rows(folder / "predictions.csv")])

    resumed = make_task([OutputCSVHook(str(folder)), LookAtStart()], num_epochs=3)
    resume_task(resumed, phase1)
    assert resumed.phase_idx == 1
    resumed.run()
    # at on_start, test phase 3 (after the checkpoint) was gone and predictions.csv was test phase 1 again
    assert seen_at_start == [["predictions.phase00001.csv"], read_rows(folder / "predictions.phase00001.csv")]
    assert _phase_files(folder) == _phase_files(straight) == [
        "predictions.phase00001.csv",
        "predictions.phase00003.csv",
        "predictions.phase00005.csv",
    ]
    for name in [*_phase_files(straight), "predictions.csv"]:
        rows = read_rows(folder / name)
        assert rows == read_rows(straight / name), name
        ids = [row[0] for row in rows[1:]]
        assert len(ids) == len(set(ids)) == 64, name  # every test sample once


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----

@pytest.mark.parametrize(
    ("config", "argument", "fix"),
    [
        pytest.param({"delimiter": ", "}, "delimiter", 'Pass e.g. "\\t"', id="delimiter-two-chars"),
        pytest.param({"id_key": ""}, "id_key", "Pass a non-empty string", id="id-key-empty"),
    ],
)
def test_bad_config_is_reported_by_the_constructor(config: dict[str, Any], argument: str, fix: str) -> None:
    with pytest.raises(HookConfigError) as info:
        build_hook({"name": "output_csv", "folder": "x", **config})
    assert_reported(info.value, HookConfigError, ("OutputCSVHook", argument, fix))


def test_folder_that_is_a_file_is_reported_at_on_start(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    task = make_task([build_hook({"name": "output_csv", "folder": str(tmp_path / "afile")})])
    with pytest.raises(HookConfigError) as info:
        task.run()
    assert_reported(info.value, HookConfigError, ("OutputCSVHook", "folder", "afile", "Pass a folder path"))
    assert task.num_updates == 0


def test_task_without_last_batch_is_reported_at_on_start(tmp_path: Path) -> None:
    task = make_task([build_hook({"name": "output_csv", "folder": str(tmp_path / "csv")})])
    del task.last_batch
    with pytest.raises(TaskContractError) as info:
        task.run()
    assert_reported(info.value, TaskContractError, ("OutputCSVHook", "last_batch", "Add them to your task"))
    assert task.num_updates == 0


def test_batch_without_the_id_key_is_a_warning_and_training_continues(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    task = make_task([build_hook({"name": "output_csv", "folder": str(tmp_path / "csv"), "id_key": "uid"})], num_epochs=1)
    warnings = run_to_the_end_and_warnings(task, caplog)
    assert_warned(warnings, ("OutputCSVHook", "a test batch has no 'uid' key", "Add a unique id"))
