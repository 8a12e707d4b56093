"""register_hook / build_hook / build_hooks: registration checks and every build error."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bad_input import assert_reported
from classy_hooks.core import (
    ClassyHook,
    HookConfigError,
    UnknownHookError,
    build_hook,
    build_hooks,
    register_hook,
    registered_hook_names,
)
from classy_hooks.core import registry as registry_module


class _Base(ClassyHook):
    on_start = on_phase_start = on_step = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, a: int = 1, b: str = "x") -> None:
        super().__init__()
        self.state.a = a
        self.state.b = b


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Undo registrations made by a test so tests stay independent."""
    saved = (
        dict(registry_module.HOOK_REGISTRY),
        dict(registry_module._REGISTERED_AT),
        dict(registry_module._CLASS_NAMES),
    )
    yield
    for live, old in zip(
        (registry_module.HOOK_REGISTRY, registry_module._REGISTERED_AT, registry_module._CLASS_NAMES), saved
    ):
        live.clear()
        live.update(old)  # type: ignore[attr-defined]


def _new_hook_class(name: str) -> type[ClassyHook]:
    return type(name, (_Base,), {})


def test_register_and_build_by_name(clean_registry: None) -> None:
    cls = register_hook("test_registry_hook")(_new_hook_class("RegistryHookA"))
    hook = build_hook({"name": "test_registry_hook", "a": 3, "b": "y"})
    assert type(hook) is cls
    assert hook.get_classy_state() == {"a": 3, "b": "y"}
    assert "test_registry_hook" in registered_hook_names()


def test_build_hooks_builds_each_config_in_order(clean_registry: None) -> None:
    register_hook("first_hook")(_new_hook_class("FirstHook"))
    register_hook("second_hook")(_new_hook_class("SecondHook"))
    hooks = build_hooks([{"name": "second_hook"}, {"name": "first_hook", "a": 5}])
    assert [h.name() for h in hooks] == ["SecondHook", "FirstHook"]
    assert hooks[1].state.a == 5


def test_build_hook_does_not_modify_the_config(clean_registry: None) -> None:
    register_hook("keep_config_hook")(_new_hook_class("KeepConfigHook"))
    config = {"name": "keep_config_hook", "a": 2}
    build_hook(config)
    assert config == {"name": "keep_config_hook", "a": 2}


def test_duplicate_name_says_where_the_first_registration_was(clean_registry: None) -> None:
    register_hook("dup_hook")(_new_hook_class("DupHookOne"))
    with pytest.raises(
        ValueError,
        match=r"(?s)'dup_hook' is already registered to DupHookOne, first registered at:\n.*test_registry.py",
    ):
        register_hook("dup_hook")(_new_hook_class("DupHookTwo"))


def test_non_hook_class_is_rejected(clean_registry: None) -> None:
    with pytest.raises(ValueError, match="is not a subclass of ClassyHook"):
        register_hook("not_a_hook")(type("NotAHook", (), {}))


def test_duplicate_class_name_is_rejected(clean_registry: None) -> None:
    register_hook("class_name_one")(_new_hook_class("SameClassName"))
    with pytest.raises(ValueError, match=r"a class named SameClassName is already registered as 'class_name_one'"):
        register_hook("class_name_two")(_new_hook_class("SameClassName"))


def test_bypass_checks_overwrites_for_module_reloads(clean_registry: None) -> None:
    register_hook("reloaded_hook")(_new_hook_class("ReloadedHook"))
    newer = register_hook("reloaded_hook", bypass_checks=True)(_new_hook_class("ReloadedHook"))
    assert type(build_hook({"name": "reloaded_hook"})) is newer


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(
        UnknownHookError, match=r"no hook is registered under the name 'chekpoint'.*Did you mean 'checkpoint'"
    ):
        build_hook({"name": "chekpoint"})


def test_unknown_name_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        build_hook({"name": f"nothing_{uuid.uuid4().hex}"})


def test_first_party_name_of_a_missing_package_gives_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_entry_points", dict)
    monkeypatch.setattr(registry_module, "HOOK_REGISTRY", {})
    with pytest.raises(UnknownHookError, match=r"provided by classy-hooks-export.*pip install classy-hooks-export"):
        build_hook({"name": "torch_export"})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("checkpoint", "must be a dict"),
        (None, "must be a dict"),
        ({"a": 1}, "has no 'name' key"),
        ({"name": 3}, "'name' must be a string"),
    ],
)
def test_malformed_configs_get_clear_errors(config: object, message: str) -> None:
    with pytest.raises(HookConfigError, match=message):
        build_hook(config)  # type: ignore[arg-type]


def test_build_hooks_rejects_a_single_dict() -> None:
    with pytest.raises(HookConfigError, match="expected a list of hook configs"):
        build_hooks({"name": "checkpoint"})  # type: ignore[arg-type]


def test_unknown_config_key_through_build_hook(clean_registry: None) -> None:
    register_hook("strict_hook")(_new_hook_class("StrictHook"))
    with pytest.raises(HookConfigError, match=r"StrictHook: config has unknown key 'c'"):
        build_hook({"name": "strict_hook", "c": 1})


def test_registry_never_uses_bare_asserts() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(registry_module))
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Assert)]


# ---- bad input: reported early, as a documented error naming the hook, the argument and the fix ----

@pytest.mark.parametrize(
    ("config", "error", "mentions"),
    [
        pytest.param({"name": "chekpoint"}, UnknownHookError, ("build_hook", "chekpoint", "Did you mean 'checkpoint'"), id="name-typo"),
        pytest.param({"checkpoint_folder": "x"}, HookConfigError, ("build_hook", "'name'", "Add the registered hook name"), id="name-missing"),
        pytest.param({"name": 3}, HookConfigError, ("build_hook", "'name'", "Pass the registered hook name"), id="name-not-a-string"),
        pytest.param(["checkpoint"], HookConfigError, ("build_hook", "dict", "Pass one dict per hook"), id="config-not-a-dict"),
    ],
)
def test_build_hook_reports_bad_config(config: Any, error: type[Exception], mentions: tuple[str, ...]) -> None:
    with pytest.raises(error) as info:
        build_hook(config)
    assert_reported(info.value, error, mentions)
