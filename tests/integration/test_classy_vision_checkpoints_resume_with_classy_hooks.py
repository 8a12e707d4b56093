"""Story: a Classy Vision 0.7.0 run with Classy's OWN CheckpointHook and ExponentialMovingAverageModelHook writes
its checkpoints (during this test); a Classy Vision user switches to classy-hooks and resumes from one of them, with
Classy's own `task.set_checkpoint` under `LocalTrainer`. The run continues exactly as Classy Vision's straight run:
the training weights are bit-identical and the EMA (converted from Classy's `model_state` / `ema_model_state`,
buffer keys `{module}_buffer_{name}`) matches to float32 rounding; no Classy key is saved again."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from classy_vision_runs import (
    build_classification_task,
    classification_config,
    classy_hooks_in_classy_vision,
    max_difference,
    train,
)

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

DECAY = 0.9
#: Classy Vision averages with `ema * decay + weight * (1 - decay)`, classy-hooks with one fused lerp: the two
#: round differently in float32 (about one ulp per update), so the EMA agrees to this absolute tolerance.
EMA_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def classy_straight_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Classy Vision's own hooks, three epochs, a checkpoint after every phase (train and test)."""
    folder = tmp_path_factory.mktemp("classy_vision_checkpoints")
    config = classification_config(
        [
            {"name": "checkpoint", "checkpoint_folder": str(folder), "phase_types": ["train", "test"]},
            {"name": "ema_model_weights", "decay": DECAY, "device": "cpu"},
        ]
    )
    torch.set_num_threads(1)  # as conftest sets for each test (this module-scoped run starts before that fixture)
    task = build_classification_task(config)
    assert {type(h).__module__.split(".")[0] for h in task.hooks} == {"classy_vision"}
    train(task)
    ema_hook = next(h for h in task.hooks if h.name() == "ExponentialMovingAverageModelHook")
    return {
        "folder": folder,
        "training_weights": {k: v.clone() for k, v in ema_hook.state.model_state.items()},
        "ema": {k: v.clone() for k, v in ema_hook.state.ema_model_state.items()},
    }


def classy_vision_named(state_dict: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` renamed to Classy Vision's EMA keys (`{module}_buffer_{name}` for BatchNorm buffers)."""
    out = {}
    for classy_name in like:
        module, sep, buffer = classy_name.rpartition("_buffer_")
        out[classy_name] = state_dict[f"{module}.{buffer}" if sep else classy_name]
    return out


@pytest.mark.parametrize(
    ("phase", "model_holds"), [(2, "training weights"), (3, "EMA weights")], ids=["after_train_phase", "after_test_phase"]
)
def test_classy_vision_checkpoint_resumes_with_classy_hooks_as_classy_vision_continues(
    classy_straight_run: dict[str, Any], tmp_path: Path, phase: int, model_holds: str
) -> None:
    source = classy_straight_run["folder"] / f"model_phase-{phase}_end.torch"
    written = torch.load(source, weights_only=True)["classy_state_dict"]
    assert set(written["hooks"]["ExponentialMovingAverageModelHook"]) == {"model_state", "ema_model_state"}
    assert any("_buffer_running_mean" in k for k in written["hooks"]["ExponentialMovingAverageModelHook"]["model_state"])

    config = classification_config(
        [
            {"name": "ema_model_weights", "decay": DECAY, "device": "cpu"},
            {"name": "checkpoint", "checkpoint_folder": str(tmp_path / "classy_hooks")},
        ]
    )
    with classy_hooks_in_classy_vision():
        task = build_classification_task(config, seed=321)
        task.set_checkpoint(str(source))  # Classy Vision's own resume
        train(task)
    ema_hook = next(h for h in task.hooks if h.name() == "ExponentialMovingAverageModelHook")
    assert type(ema_hook).__module__.startswith("classy_hooks.")
    assert ema_hook.state.swapped  # after the last test phase the model holds the EMA (as in Classy Vision)

    like = classy_straight_run["training_weights"]
    training = classy_vision_named(dict(ema_hook.state.ema_state), like)  # set aside while the EMA is swapped in
    different = [name for name, expected in like.items() if not torch.equal(training[name], expected)]
    assert not different, f"training weights differ from Classy Vision's straight run: {different}"
    ema = classy_vision_named(task.base_model.state_dict(), like)
    floating = {k for k, v in classy_straight_run["ema"].items() if v.is_floating_point()}
    ema_difference = max_difference({k: ema[k] for k in floating}, {k: classy_straight_run["ema"][k] for k in floating})
    logger.info("EMA resumed from Classy Vision's phase %d: max |difference| %.3g", phase, ema_difference)
    assert ema_difference <= EMA_TOLERANCE, ema_difference

    later = torch.load(tmp_path / "classy_hooks" / "checkpoint.torch", weights_only=True)["classy_state_dict"]
    ema_saved = later["hooks"]["ExponentialMovingAverageModelHook"]
    assert not {"model_state", "ema_model_state"} & set(ema_saved), sorted(ema_saved)  # nothing stray carried on
    assert "ema_state" in ema_saved and not any("_buffer_" in k for k in ema_saved["ema_state"])


def test_without_the_conversion_the_ema_would_restart(classy_straight_run: dict[str, Any]) -> None:
    """The size of what the conversion preserves: Classy's EMA at phase 2 is far from the training weights."""
    written = torch.load(classy_straight_run["folder"] / "model_phase-2_end.torch", weights_only=True)
    classy = written["classy_state_dict"]["hooks"]["ExponentialMovingAverageModelHook"]
    floating = {k for k, v in classy["ema_model_state"].items() if v.is_floating_point()}
    gap = max_difference(
        {k: classy["ema_model_state"][k] for k in floating}, {k: classy["model_state"][k] for k in floating}
    )
    assert gap > 100 * EMA_TOLERANCE, gap


def test_the_remaining_ema_difference_is_the_update_formula_not_the_conversion(
    classy_straight_run: dict[str, Any],
) -> None:
    """classy-hooks from scratch (no Classy checkpoint at all) differs from Classy's EMA by the same rounding."""
    config = classification_config([{"name": "ema_model_weights", "decay": DECAY, "device": "cpu"}])
    with classy_hooks_in_classy_vision():
        task = train(build_classification_task(config))
    like = classy_straight_run["ema"]
    ema = classy_vision_named(task.base_model.state_dict(), like)  # the model holds the EMA after the test phase
    floating = {k for k, v in like.items() if v.is_floating_point()}
    difference = max_difference({k: ema[k] for k in floating}, {k: like[k] for k in floating})
    assert difference <= EMA_TOLERANCE, difference
