"""Every first-party hook, run on a task that records what it touches, reads only the documented contract,
and every attribute it declares in `task_attributes` (what `check_task` demands) is one it really reads."""

from __future__ import annotations

import ast
import inspect
import json
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from classy_hooks.core import (
    OPTIONAL_TASK_ATTRIBUTES,
    ClassyHookFunctions,
    build_hooks,
    get_hook_class,
    registered_hook_names,
)
from classy_hooks.core.task import Task
from helpers import ROOT, make_task
from reference_trainer.task import ReferenceTask
from visdom_server import VisdomServer

REQUIRED = {name for name, member in vars(Task).items() if not name.startswith("_") and callable(member)} | {
    name for name, member in vars(Task).items() if isinstance(member, property)
}
CONTRACT = REQUIRED
OPTIONAL = set(OPTIONAL_TASK_ATTRIBUTES)


class RecordingTask(ReferenceTask):
    """A reference task that notes, per hook, every public attribute a hook reads or writes on it.

    Only the hook's own accesses count: while a task method the hook called runs (e.g. `get_classy_state`),
    the task's reads of itself are not recorded.
    """

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        reads = object.__getattribute__(self, "__dict__").get("_current_reads")
        if reads is None or name.startswith("_"):
            return value
        reads.add(name)
        if callable(value) and getattr(value, "__self__", None) is self:
            return _paused(self, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        reads = self.__dict__.get("_current_reads")
        if reads is not None and not name.startswith("_"):
            reads.add(name)
        object.__setattr__(self, name, value)


def _paused(task: RecordingTask, method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        reads = task.__dict__.pop("_current_reads")
        try:
            return method(*args, **kwargs)
        finally:
            task.__dict__["_current_reads"] = reads

    return call


def _record_each_hook(task: RecordingTask) -> dict[str, set[str]]:
    """Wrap every event of every hook so that the task records into that hook's set while it runs."""
    reads: dict[str, set[str]] = {}
    for hook in task.hooks:
        seen = reads.setdefault(hook.name(), set())
        for event in ClassyHookFunctions:
            original = getattr(hook, event.value)

            def recorded(t: Any, original: Callable[[Any], None] = original, seen: set[str] = seen) -> None:
                t.__dict__["_current_reads"] = seen
                try:
                    original(t)
                finally:
                    t.__dict__.pop("_current_reads", None)

            setattr(hook, event.value, recorded)
    return reads


def _demo_hooks(run_dir: Path, visdom_port: int, other_paths: bool) -> list[dict[str, Any]]:
    hooks = json.loads((ROOT / "tools" / "configs" / "demo.json").read_text())["hooks"]
    text = json.dumps(hooks).replace("{run_dir}", str(run_dir)).replace("$VISDOM_PORT", str(visdom_port))
    configs = json.loads(text)
    for config in configs:
        if config["name"] == "precise_bn":
            config.update(num_samples=32, cache_samples=other_paths)
        if config["name"] == "checkpoint" and other_paths:
            config["checkpoint_every_n_steps"] = 3
    return configs


def _run_recorded(run_dir: Path, visdom_port: int, other_paths: bool) -> tuple[list[Any], dict[str, set[str]]]:
    """Run the demo's 13 hooks; `other_paths`: no `input_shape`, cached precise-BN samples, step checkpoints."""
    hooks = build_hooks(_demo_hooks(run_dir, visdom_port, other_paths))
    assert len(hooks) == 13
    task = make_task(hooks, num_epochs=2)
    if other_paths:  # the example input then comes from the first batch
        del task.base_model.input_shape
    task.__class__ = RecordingTask
    reads = _record_each_hook(task)
    task.run()
    return hooks, reads


@pytest.mark.slow
def test_every_hook_reads_only_the_contract_and_reads_what_it_declares(
    tmp_path: Path, shared_visdom_server: VisdomServer
) -> None:
    hooks, reads = _run_recorded(tmp_path / "demo", shared_visdom_server.port, other_paths=False)
    _, other_reads = _run_recorded(tmp_path / "other", shared_visdom_server.port, other_paths=True)
    for name, seen in other_reads.items():
        reads[name] |= seen

    outside = {name: sorted(seen - CONTRACT - OPTIONAL) for name, seen in reads.items() if seen - CONTRACT - OPTIONAL}
    assert not outside, f"hooks touch task attributes the contract (classy_hooks.core.Task) does not document: {outside}"
    unread_declared = {
        hook.name(): sorted(set(type(hook).task_attributes) - reads[hook.name()])
        for hook in hooks
        if set(type(hook).task_attributes) - reads[hook.name()]
    }
    assert not unread_declared, f"hooks demand (task_attributes) what they never read: {unread_declared}"
    every_read = set().union(*reads.values())
    unread = sorted(REQUIRED - every_read - {"set_classy_state"})  # read by resume_task, not by a hook
    assert not unread, f"the contract requires attributes no first-party hook reads: {unread}"

    registered = {get_hook_class(name).__name__: name for name in registered_hook_names()}
    documented = _documented_readers(set(registered.values()))
    for attribute in sorted(REQUIRED - {"set_classy_state"}):
        actual = {registered[hook] for hook, seen in reads.items() if attribute in seen}
        assert documented[attribute] == actual, (attribute, "documented:", sorted(documented[attribute]), sorted(actual))


def _documented_readers(hook_names: set[str]) -> dict[str, set[str]]:
    """The hook names in each attribute's and method's "Read by:" note of `classy_hooks.core.Task`."""
    body = ast.parse(textwrap.dedent(inspect.getsource(Task))).body[0].body  # type: ignore[attr-defined]
    notes = {node.name: ast.get_docstring(node) or "" for node in body if isinstance(node, ast.FunctionDef)}
    readers = {}
    for name, note in notes.items():
        text = note.split("Read by:", 1)[1] if "Read by:" in note else ""
        readers[name] = {word for word in re.findall(r"[a-z_]+", text) if word in hook_names}
    return readers
