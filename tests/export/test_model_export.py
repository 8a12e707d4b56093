"""Behaviour shared by TorchscriptHook and TorchExportHook: eval mode, parity, atomic writes, inputs, on_start."""

from __future__ import annotations

import copy
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from export_models import BatchBranch, CallCounter, FrozenBackbone
from torch import nn

from classy_hooks.core import HookConfigError, TaskContractError
from classy_hooks.core.deprecations import quiet_jit_deprecations
from classy_hooks.export import ExportError, TorchExportHook, TorchscriptHook
from helpers import ROOT, make_task, subprocess_env, torchrun_command
from reference_trainer.task import ReferenceTask

HookFactory = Callable[[Path], Any]


def load_exported(path: str) -> Callable[..., Any]:
    if path.endswith(".pt2"):
        return torch.export.load(path).module()
    with quiet_jit_deprecations():
        return torch.jit.load(path)


HOOKS = {
    "torchscript": lambda folder: TorchscriptHook(str(folder)),
    "torch_export": lambda folder: TorchExportHook(str(folder)),
}


@pytest.fixture(params=sorted(HOOKS))
def hook_factory(request: pytest.FixtureRequest) -> HookFactory:
    return HOOKS[request.param]


def bare_task(model: nn.Module) -> ReferenceTask:
    """A reference task that has not run (no last batch) holding `model`."""
    task = make_task()
    task.base_model = model
    return task


@pytest.mark.slow  # trains a tiny model in process; the first torch.export call also pays its one-time set-up
def test_export_after_train_phase_is_eval_mode_and_restores_train_mode(tmp_path: Path, hook_factory: HookFactory):
    """The last phase is a train phase (dropout on, BN on batch stats): the file must hold the eval model."""
    hook = hook_factory(tmp_path / "export")
    task = make_task([hook], num_epochs=1, test_phase_period=0)
    task.run()
    model = task.base_model
    assert task.train and model.training
    assert all(m.training for m in model.modules()), "every module's train mode must be restored"
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    hook.on_end(task)  # exporting again must not touch the BN statistics (no forward in train mode)
    for key, value in stats.items():
        assert torch.equal(model.state_dict()[key], value), key

    exported = load_exported(hook.output_path)
    x = torch.randn(6, *model.input_shape, generator=torch.Generator().manual_seed(1))
    train_copy = copy.deepcopy(model)
    with torch.no_grad():
        out = exported(x)
        model.eval()
        eval_out = model(x)
        train_out = train_copy(x)
    torch.testing.assert_close(out, eval_out, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out, train_out, atol=1e-3), "the export must not bake in train mode"


def test_each_module_keeps_its_own_mode(tmp_path: Path, hook_factory: HookFactory):
    model = FrozenBackbone()
    model.train()
    model.backbone.eval()  # frozen backbone inside a training model
    hook = hook_factory(tmp_path)
    task = bare_task(model)
    hook.on_start(task)
    hook.on_end(task)
    assert model.training and model.head.training and model.head[0].training
    assert not model.backbone.training and not model.backbone[1].training
    x = torch.randn(5, 3, 8, 8)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(load_exported(hook.output_path)(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize(
    ("name", "model_cls"),
    # Tracing's own sanity check already catches CallCounter; BatchBranch passes it (same input)
    # and only the hook's second parity input (half the batch) shows the frozen branch.
    [("torchscript", BatchBranch), ("torch_export", CallCounter)],
)
def test_parity_failure_keeps_previous_file_and_leaves_no_temp(tmp_path: Path, name: str, model_cls: type):
    """A file whose outputs differ from the eager model never replaces the existing one."""
    hook = HOOKS[name](tmp_path)
    os.makedirs(tmp_path, exist_ok=True)
    Path(hook.output_path).write_bytes(b"previous good export")
    task = bare_task(model_cls())
    hook.on_start(task)
    with pytest.raises(ExportError, match=r"differs from the eager model.*The file was not replaced"):
        hook.on_end(task)
    assert Path(hook.output_path).read_bytes() == b"previous good export"
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(hook.output_path)]


def test_example_input_from_last_batch_keeps_dtype(tmp_path: Path, hook_factory: HookFactory):
    """The last batch is the example input: an embedding model gets integer token ids, not randn."""

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.embed(ids).mean(1))

    task = make_task()
    task.base_model = Tokens()
    ids = torch.randint(0, 10, (3, 5))
    from classy_hooks.core import LastBatch

    task.last_batch = LastBatch(None, None, None, {"input": ids, "target": torch.zeros(3)}, {})
    hook = hook_factory(tmp_path)
    hook.on_start(task)
    hook.on_end(task)
    with torch.no_grad():
        torch.testing.assert_close(load_exported(hook.output_path)(ids), task.base_model(ids))


def test_input_key_passes_a_dict(tmp_path: Path, hook_factory: HookFactory):
    class KeyedModel(nn.Module):
        input_key = "image"
        input_shape = (4,)

        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.linear(batch["image"])

    hook = hook_factory(tmp_path)
    task = bare_task(KeyedModel())
    hook.on_start(task)
    hook.on_end(task)
    x = torch.randn(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(load_exported(hook.output_path)({"image": x}), task.base_model({"image": x}))


def test_no_input_shape_and_no_batch_is_a_clear_error(tmp_path: Path, hook_factory: HookFactory):
    hook = hook_factory(tmp_path)
    task = bare_task(nn.Linear(4, 2))
    hook.on_start(task)
    with pytest.raises(TaskContractError, match=r"input_shape.*per-sample shape"):
        hook.on_end(task)
    assert not os.path.exists(hook.output_path)


def test_on_start_creates_folder_and_rejects_a_file(tmp_path: Path, hook_factory: HookFactory):
    folder = tmp_path / "a" / "b"
    hook = hook_factory(folder)
    assert not folder.exists(), "the constructor must not touch the disk"
    hook.on_start(make_task())
    assert folder.is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HookConfigError, match=r"is a file, not a folder"):
        hook_factory(blocker).on_start(make_task())


def test_on_start_requires_base_model(tmp_path: Path, hook_factory: HookFactory):
    class NoModel:
        last_batch = None

    with pytest.raises(TaskContractError, match=r"base_model"):
        hook_factory(tmp_path).on_start(NoModel())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("cls", [TorchscriptHook, TorchExportHook])
def test_unavailable_cuda_device_fails_in_on_start(tmp_path: Path, cls: type):
    hook = cls(str(tmp_path), device="cuda")
    with pytest.raises(HookConfigError, match=r"argument 'device'.*CUDA is not available"):
        hook.on_start(make_task())


def plain_names(loaded: Any) -> set[str]:
    """Parameter and buffer names of a loaded export (TorchScript module or torch.export program)."""
    if isinstance(loaded, torch.export.ExportedProgram):
        return set(loaded.state_dict)
    return set(loaded.state_dict())


WRAPPERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "compiled": lambda m: torch.compile(m, backend="aot_eager"),
    "data_parallel": nn.DataParallel,
    "compiled_data_parallel": lambda m: torch.compile(nn.DataParallel(m), backend="aot_eager"),
}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_wrapped_model_exports_the_plain_module(tmp_path: Path, hook_factory: HookFactory, wrapper: str):
    """A compiled / DataParallel base_model: the file holds the module inside, with its plain names."""
    from reference_trainer.models import SmallCNN

    plain = SmallCNN(num_classes=3, image_size=8, width=4)
    plain.train()
    wrapped = WRAPPERS[wrapper](plain)
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    wrapped(x)  # compile and run once in train mode, as a training run would
    hook = hook_factory(tmp_path)
    task = bare_task(wrapped)
    hook.on_start(task)
    hook.on_end(task)
    assert plain.training and all(m.training for m in plain.modules()), "train mode restored"
    exported = load_exported(hook.output_path)
    loaded = torch.export.load(hook.output_path) if hook.output_path.endswith(".pt2") else exported
    assert plain_names(loaded) >= {k for k, _ in plain.named_parameters()}
    assert not [k for k in plain_names(loaded) if "_orig_mod" in k or k.startswith("module.")]
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(x), plain(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(exported(x[:3]), plain(x[:3]), rtol=1e-5, atol=1e-6)


def test_module_compiled_in_place_names_the_fix(tmp_path: Path):
    """`model.compile()` leaves no wrapper to see through: TorchScript's error says what to do instead."""
    from reference_trainer.models import SmallCNN

    model = SmallCNN(num_classes=3, image_size=8, width=4)
    model.compile(backend="aot_eager")
    hook = TorchscriptHook(str(tmp_path))
    task = bare_task(model)
    hook.on_start(task)
    with pytest.raises(ExportError, match=r"compiled in place.*torch.compile\(model\) instead, or use the torch_export"):
        hook.on_end(task)
    assert not os.path.exists(hook.output_path)


def run_distributed_job(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`distributed_export_job.py` on 2 gloo ranks under torchrun; fails the test unless every rank finished."""
    job = Path(__file__).with_name("distributed_export_job.py")
    command = torchrun_command(job, args)
    proc = subprocess.run(command, env=subprocess_env(), text=True, capture_output=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


EXPORT_FILES = {"torchscript": "torchscript.pt", "torch_export": "exported_program.pt2"}


def job_lines(stdout: str, name: str) -> list[str]:
    """The job's lines about the export hook `name` (the job runs "torchscript" first, then "torch_export")."""
    current: dict[str, str] = {}
    lines = []
    for line in stdout.splitlines():
        rank, _, rest = line.partition(": ")
        if rest in EXPORT_FILES:
            current[rank] = rest
        elif current.get(rank) == name:
            lines.append(line)
    return lines


@pytest.mark.slow  # a 2-rank torchrun job
def test_fsdp2_model_is_refused_on_every_rank_in_on_start(tmp_path: Path):
    """FSDP2 (`fully_shard`, gloo, 2 ranks): every rank refuses in on_start, naming the fix, and the fix works."""
    proc = run_distributed_job(tmp_path, "fsdp", str(tmp_path / "out"))
    for name, file_name in EXPORT_FILES.items():
        lines = job_lines(proc.stdout, name)
        refusals = sorted(line for line in lines if ": refused: " in line or ": accepted" in line)
        assert [line.split(":")[0] for line in refusals] == ["rank 0", "rank 1"], proc.stdout
        for line in refusals:
            assert f"{'TorchscriptHook' if name == 'torchscript' else 'TorchExportHook'}: task.base_model" in line
            assert ": refused: " in line and "is sharded with FSDP2 fully_shard (parameter" in line, line
            assert "Export an unsharded copy instead" in line and "get_model_state_dict" in line, line
        # the fix the error names works: full weights gathered on every rank, an unsharded copy exported on rank 0
        assert "rank 0: exported unsharded copy matches the sharded model: True" in lines, proc.stdout
        assert sorted(p.name for p in (tmp_path / "out" / name).iterdir()) == [file_name]


@pytest.mark.slow  # a 2-rank torchrun job
def test_compiled_ddp_model_is_exported_once_by_the_primary_without_a_hang(tmp_path: Path):
    """`torch.compile(DDP(model))` under torchrun: the primary exports the plain module; every rank reads it back."""
    proc = run_distributed_job(tmp_path, "ddp", str(tmp_path / "out"))
    for name, file_name in EXPORT_FILES.items():
        lines = job_lines(proc.stdout, name)
        for rank in (0, 1):
            assert f"rank {rank}: export of the compiled DDP model matches the plain model: True" in lines, proc.stdout
        assert sorted(p.name for p in (tmp_path / "out" / name).iterdir()) == [file_name]


def _classy_order_run(hook: Any, model: nn.Module, inputs: torch.Tensor) -> None:
    """on_start, one step that sees `inputs`, then `on_end` with `last_batch` cleared, as ClassificationTask leaves it."""
    from classy_hooks.core import LastBatch

    task = bare_task(model)
    hook.on_start(task)
    task.last_batch = LastBatch(None, None, None, {"input": inputs, "target": torch.zeros(len(inputs))}, {})
    hook.on_step(task)
    inputs.zero_()  # the loop reuses its buffers: the hook kept a copy
    task.last_batch = None
    hook.on_end(task)


def test_without_a_last_batch_at_on_end_the_batch_seen_in_on_step_is_the_example(
    tmp_path: Path, hook_factory: HookFactory, caplog: pytest.LogCaptureFixture
):
    """No input_shape, and no last batch at on_end (ClassificationTask): the real batch an earlier step saw."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(24, 2)).eval()  # takes (N, 2, 3, 4), nothing else
    hook = hook_factory(tmp_path)
    caplog.set_level(logging.INFO, logger="classy_hooks.export")
    _classy_order_run(hook, model, torch.randn(5, 2, 3, 4))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    x = torch.randn(5, 2, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(load_exported(hook.output_path)(x), model(x))


def test_a_declared_input_shape_example_is_logged(
    tmp_path: Path, hook_factory: HookFactory, caplog: pytest.LogCaptureFixture
):
    model = nn.Linear(4, 2)
    model.input_shape = (4,)
    hook = hook_factory(tmp_path)
    caplog.set_level(logging.INFO, logger="classy_hooks.export")
    task = bare_task(model)
    hook.on_start(task)
    hook.on_end(task)
    records = [r for r in caplog.records if "no batch was seen" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    message = records[0].getMessage()
    assert message.startswith(f"{type(hook).__name__}: ") and "seeded random batch of 4 samples" in message
    assert "input_shape (4,)" in message
