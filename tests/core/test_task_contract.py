"""The Task protocol: the reference task conforms, and the contract documents every attribute hooks read."""

from __future__ import annotations

from classy_hooks.core import OPTIONAL_TASK_ATTRIBUTES, LastBatch, Task, is_optimizer_step
from classy_hooks.core.task import Task as TaskClass
from helpers import make_task


def test_reference_task_satisfies_the_protocol() -> None:
    task = make_task()
    assert isinstance(task, Task)


def test_an_object_missing_an_attribute_does_not_satisfy_it() -> None:
    class Partial:
        train = True

    assert not isinstance(Partial(), Task)


def test_every_required_attribute_has_a_docstring() -> None:
    import ast
    import inspect

    source = inspect.getsource(TaskClass)
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    documented = set()
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            documented.add(node.target.id)  # type: ignore[union-attr]
    documented |= {node.name for node in body if isinstance(node, ast.FunctionDef) and ast.get_docstring(node)}
    expected = {
        "base_model",
        "train",
        "phase_type",
        "phase_idx",
        "train_phase_idx",
        "losses",
        "meters",
        "optimizer",
        "last_batch",
        "num_batches_per_phase",
        "dataloader",
        "get_batchsize_per_replica",
        "get_classy_state",
        "set_classy_state",
    }
    assert expected <= documented
    assert {"use_gpu", "test_only", "ema", "is_optimizer_step"} <= set(OPTIONAL_TASK_ATTRIBUTES)
    assert {"model", "num_updates", "where", "get_global_batchsize"} <= set(OPTIONAL_TASK_ATTRIBUTES)


def test_last_batch_fields_and_optimizer_step_flag() -> None:
    assert LastBatch._fields == ("loss", "output", "target", "sample", "step_data")

    class Plain:
        pass

    class MicroStep:
        is_optimizer_step = False

    assert is_optimizer_step(Plain()) and not is_optimizer_step(MicroStep())
