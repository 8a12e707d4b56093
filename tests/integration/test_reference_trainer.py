"""The reference trainer keeps Classy Vision's event order on 1 process and on 2 gloo ranks under torchrun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from recording_hook import RecordingHook

from dev_dependencies import dev_dependency
from helpers import make_task, run_training, tiny_config


def _phase_events(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if e["event"] == name]


def test_events_arrive_in_classy_vision_order_with_phase_advanced_first() -> None:
    hook = RecordingHook()
    task = make_task([hook], num_epochs=2)
    task.run()
    names = [e["event"] for e in hook.events]
    assert names[0] == "on_start" and names[-1] == "on_end"
    starts = _phase_events(hook.events, "on_phase_start")
    # train, test, train, test: the phase is advanced (index, train flag, fresh losses) before on_phase_start
    assert [(e["phase_idx"], e["train"], e["losses"]) for e in starts] == [
        (0, True, 0),
        (1, False, 0),
        (2, True, 0),
        (3, False, 0),
    ]
    assert [e["batches"] for e in starts] == [8, 4, 8, 4]
    ends = _phase_events(hook.events, "on_phase_end")
    assert [e["num_losses"] for e in ends] == [8, 4, 8, 4]
    assert all(e["all_floats"] for e in ends)  # losses are synced to floats before on_phase_end
    assert len(_phase_events(hook.events, "on_step")) == 24
    assert ends[-1]["accuracy"] > 0.5  # the synthetic classes are learnable


def test_hook_state_is_restored_before_on_start() -> None:
    first = make_task([RecordingHook()], num_epochs=1)
    first.run()
    state = first.get_classy_state()
    hook = RecordingHook()
    resumed = make_task([hook], num_epochs=2)
    resumed.set_classy_state(state)
    resumed.run()
    assert hook.events[0] == {
        "event": "on_start",
        "phase_idx": 1,
        "train": False,
        "restored_calls": first.hooks[0].state.calls,
    }
    assert [e["phase_idx"] for e in _phase_events(hook.events, "on_phase_start")] == [2, 3]


def test_gradient_accumulation_marks_micro_steps() -> None:
    flags: list[bool] = []

    class StepFlags(RecordingHook):
        def on_step(self, task):  # type: ignore[no-untyped-def]
            if task.train:
                flags.append(task.is_optimizer_step)

    make_task([StepFlags()], num_epochs=1, optimizer_period=2).run()
    assert flags == [False, True] * 4


def test_task_state_holds_only_weights_only_loadable_data(tmp_path: Path) -> None:
    task = make_task([RecordingHook()], num_epochs=1)
    task.run()
    path = tmp_path / "state.torch"
    torch.save(task.get_classy_state(), path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["phase_idx"] == 1 and loaded["hooks"]["RecordingHook"]["calls"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_trainer_end_to_end_from_the_command_line(tmp_path: Path, nproc: int) -> None:
    events_dir = tmp_path / "events"
    config = tiny_config(
        imports=["integration.recording_hook"], hooks=[{"name": "recording", "folder": "{run_dir}/events"}]
    )
    proc = run_training(tmp_path, config, nproc=nproc, run_dir=tmp_path)
    assert "Run finished" in proc.stdout
    for rank in range(nproc):
        events = json.loads((events_dir / f"events-rank{rank}.json").read_text())
        ends = _phase_events(events, "on_phase_end")
        # each rank trains on its shard (128 / nproc samples, batch 16) but sees every rank's losses
        assert [e["num_losses"] for e in ends] == [8, 4, 8, 4]
        assert [e["meter_total"] for e in ends] == [128.0, 64.0, 128.0, 64.0]  # meters summed over ranks
        assert len(_phase_events(events, "on_step")) == 24 // nproc


def test_torchvision_models_are_selectable_by_name() -> None:
    dev_dependency("torchvision", reason="torchvision is not installed: the floor run (torch 2.13.0) has none, as torchvision does not import beside torch 2.13")
    from reference_trainer.models import build_model

    model = build_model({"name": "resnet18"}, image_size=32, num_classes=4)
    assert model.input_shape == (3, 32, 32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match="unknown model 'resnet_nope'"):
        build_model({"name": "resnet_nope"}, image_size=32, num_classes=4)


def test_compiled_model_trains_like_the_eager_one_with_plain_checkpoint_keys() -> None:
    from classy_hooks.core import unwrap_model

    eager = make_task([RecordingHook()], num_epochs=1)
    eager.run()
    compiled = make_task([RecordingHook()], num_epochs=1, compile={"backend": "aot_eager"})
    compiled.run()
    assert type(compiled.model).__name__ == "OptimizedModule" and unwrap_model(compiled.model) is compiled.base_model
    state = compiled.get_classy_state()
    assert not any("_orig_mod" in key for key in state["base_model"])
    assert state["base_model"].keys() == eager.get_classy_state()["base_model"].keys()
    for key, value in eager.base_model.state_dict().items():  # aot_eager runs the same kernels as eager
        torch.testing.assert_close(state["base_model"][key], value, rtol=1e-4, atol=1e-5)
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4)


def test_compile_and_fsdp_options_are_checked() -> None:
    with pytest.raises(ValueError, match="'compile' must be null, true or a dict"):
        make_task([], compile="aot_eager")
    with pytest.raises(ValueError, match="'fsdp': true needs torch"):
        make_task([], fsdp=True)


@pytest.mark.slow
@pytest.mark.parametrize("compile_options", [None, {"backend": "aot_eager"}], ids=["eager", "compiled"])
def test_fsdp2_run_on_two_ranks_trains_like_ddp(tmp_path: Path, compile_options: dict | None) -> None:
    """`"fsdp": true` shards the model with fully_shard (gloo, CPU) and reaches DDP's weights (same averaged grads)."""
    imports = ["integration.recording_hook", "integration.full_model_dump_hook"]
    results = {}
    for mode in ("ddp", "fsdp"):
        hooks = [
            {"name": "recording", "folder": "{run_dir}/events"},
            {"name": "full_model_dump", "folder": "{run_dir}/dump"},
        ]
        config = tiny_config(imports=imports, hooks=hooks, fsdp=mode == "fsdp", compile=compile_options)
        (tmp_path / mode).mkdir()
        proc = run_training(tmp_path / mode, config, nproc=2, run_dir=tmp_path / mode)
        assert ("Model sharded with FSDP2 fully_shard over 2 ranks" in proc.stdout) == (mode == "fsdp")
        assert ("Model compiled with torch.compile" in proc.stdout) == (compile_options is not None)
        events = json.loads((tmp_path / mode / "events" / "events-rank1.json").read_text())
        assert [e["num_losses"] for e in _phase_events(events, "on_phase_end")] == [8, 4, 8, 4]
        results[mode] = torch.load(tmp_path / mode / "dump" / "model.pt", weights_only=True)
    assert results["fsdp"].keys() == results["ddp"].keys()
    assert not any("_orig_mod" in key or key.startswith("module.") for key in results["fsdp"])
    for key, value in results["ddp"].items():
        torch.testing.assert_close(results["fsdp"][key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_device_auto_is_cuda_when_available_else_cpu_and_cuda_without_one_is_an_error() -> None:
    from reference_trainer.config import ConfigError

    task = make_task([], num_epochs=1)
    assert task.device.type == ("cuda" if torch.cuda.is_available() else "cpu") and task.use_gpu == torch.cuda.is_available()
    assert next(task.base_model.parameters()).device.type == task.device.type
    if torch.cuda.is_available():
        assert make_task([], device="cuda").device == torch.device("cuda", 0)
    else:  # this machine: "cuda" is refused early, with the fix
        with pytest.raises(ConfigError, match="'device': 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'"):
            make_task([], device="cuda")
    with pytest.raises(ConfigError, match="'device' must be 'auto', 'cpu' or 'cuda', got 'gpu'"):
        make_task([], device="gpu")


def test_bfloat16_amp_trains_under_autocast_and_its_checkpoint_resumes(tmp_path: Path) -> None:
    from classy_hooks.model import resume_task
    from reference_trainer.config import ConfigError
    from reference_trainer.task import ReferenceTask

    dtypes: set[torch.dtype] = set()

    class OutputDtype(RecordingHook):
        def on_step(self, task):  # type: ignore[no-untyped-def]
            dtypes.add(task.last_batch.output.dtype)

    hooks = [{"name": "checkpoint", "checkpoint_folder": "{run_dir}/checkpoints"}]
    config = tiny_config(num_epochs=2, device="cpu", amp={"dtype": "bfloat16"}, hooks=hooks)
    task = ReferenceTask.from_config(config, run_dir=str(tmp_path))
    task.hooks = [*task.hooks, OutputDtype()]
    task.run()
    assert dtypes == {torch.bfloat16}  # the forward ran under autocast
    assert task.grad_scaler is None  # bfloat16 needs no loss scaling
    assert all(p.dtype == torch.float32 for p in task.base_model.parameters())  # weights stay float32
    assert task.meters[0].value["top_1"] > 0.5  # it still learns
    resumed = ReferenceTask(tiny_config(num_epochs=3, device="cpu", amp={"dtype": "bfloat16"}))
    resume_task(resumed, tmp_path / "checkpoints")
    assert resumed.phase_idx == 2
    for key, value in task.base_model.state_dict().items():
        assert torch.equal(resumed.base_model.state_dict()[key], value), key
    resumed.run()
    assert resumed.phase_idx == 5 and all(torch.isfinite(torch.tensor(resumed.losses)))
    with pytest.raises(ConfigError, match=r"'amp' must be null or \{\"dtype\": \"bfloat16\"\}"):
        make_task([], amp={"dtype": "int8"})
