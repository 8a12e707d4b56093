"""use_in_classy_vision: Classy Vision 0.7.0's own set_hooks, registry and build_hook take classy-hooks hooks."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from classy_hooks.core import ClassyHook, HookConfigError, register_hook
from classy_hooks.core.classy_vision_bridge import use_in_classy_vision
from dev_dependencies import dev_dependency


def test_something_other_than_classy_vision_s_hooks_module_is_a_clear_error() -> None:
    with pytest.raises(HookConfigError, match=r"expected the module classy_vision\.hooks.*use_in_classy_vision\("):
        use_in_classy_vision(types.ModuleType("not_classy_vision"))


classy_hooks_module = dev_dependency(
    "classy_vision.hooks", reason="Classy Vision is a test-only dependency of the dev venv (not in the floors venvs)"
)


@pytest.fixture
def classy_registry() -> Iterator[dict[str, type]]:
    """Classy Vision's hook registry, restored after the test (it is process-wide)."""
    saved = dict(classy_hooks_module.HOOK_REGISTRY)
    yield classy_hooks_module.HOOK_REGISTRY
    classy_hooks_module.HOOK_REGISTRY.clear()
    classy_hooks_module.HOOK_REGISTRY.update(saved)


@register_hook("bridge_test_counter")
class BridgeTestCounterHook(ClassyHook):
    """A hook of the user's own: registered with classy-hooks, so it is bridged too."""

    on_start = on_phase_start = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, every: int = 1) -> None:
        super().__init__()
        self.every = every
        self.state.steps = 0

    def on_step(self, task: object) -> None:
        self.state.steps += 1


def test_classy_vision_set_hooks_accepts_classy_hooks_hooks_unwrapped(
    classy_registry: dict[str, type], tmp_path: Path
) -> None:
    from classy_vision.tasks import ClassificationTask

    from classy_hooks.core import build_hook

    use_in_classy_vision(classy_hooks_module)
    checkpoint = build_hook({"name": "checkpoint", "checkpoint_folder": str(tmp_path)})
    counter = BridgeTestCounterHook()
    task = ClassificationTask().set_hooks([checkpoint, counter])
    assert task.hooks == [checkpoint, counter]  # the same objects: hooks that look for each other find them
    assert isinstance(counter, classy_hooks_module.ClassyHook)
    assert issubclass(BridgeTestCounterHook, classy_hooks_module.ClassyHook)


def test_classy_vision_config_names_build_classy_hooks_hooks(classy_registry: dict[str, type], tmp_path: Path) -> None:
    from classy_hooks.model import CheckpointHook

    was = classy_registry["checkpoint"]
    registered = use_in_classy_vision(classy_hooks_module)
    assert registered["checkpoint"] is CheckpointHook and registered["bridge_test_counter"] is BridgeTestCounterHook
    assert {"ema_model_weights", "precise_bn", "tensorboard_plot", "torch_export", "output_csv"} <= set(registered)
    built = classy_hooks_module.build_hook({"name": "checkpoint", "checkpoint_folder": str(tmp_path)})
    assert type(built) is CheckpointHook and was is not CheckpointHook
    assert type(classy_hooks_module.build_hook({"name": "bridge_test_counter", "every": 2})) is BridgeTestCounterHook
    with pytest.raises(HookConfigError, match=r"CheckpointHook: config .*'checkpoint_f"):
        classy_hooks_module.build_hook({"name": "checkpoint", "checkpoint_fodler": str(tmp_path)})
    assert use_in_classy_vision(classy_hooks_module) == registered  # a second call changes nothing


def test_with_a_prefix_classy_vision_s_own_hooks_keep_their_names(classy_registry: dict[str, type]) -> None:
    from classy_hooks.model import ExponentialMovingAverageModelHook

    classy_own = classy_registry["ema_model_weights"]
    registered = use_in_classy_vision(classy_hooks_module, prefix="classy_hooks.")
    assert "ema_model_weights" not in registered and registered["classy_hooks.ema_model_weights"]
    assert classy_registry["ema_model_weights"] is classy_own
    ours = classy_hooks_module.build_hook({"name": "classy_hooks.ema_model_weights", "decay": 0.9})
    assert type(ours) is ExponentialMovingAverageModelHook
    assert type(classy_hooks_module.build_hook({"name": "ema_model_weights", "decay": 0.9})) is classy_own


def test_a_prefix_must_be_a_string(classy_registry: dict[str, type]) -> None:
    with pytest.raises(HookConfigError, match="prefix must be a string"):
        use_in_classy_vision(classy_hooks_module, prefix=None)  # type: ignore[arg-type]
