"""build_hook finds hooks of other installed distributions through the `classy_hooks.hooks` entry points."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

from dev_dependencies import dev_dependency

HOOK_MODULE = """
from classy_hooks.core import ClassyHook, register_hook

@register_hook("third_party_counter")
class ThirdPartyCounterHook(ClassyHook):
    on_start = on_phase_start = on_phase_end = on_end = ClassyHook._noop

    def __init__(self, every: int = 1) -> None:
        super().__init__()
        self.state.every = every

    def on_step(self, task):
        pass
"""


def _install_fake_distribution(site: Path) -> None:
    """Lay out a distribution as pip installs it: modules plus a .dist-info with entry_points.txt."""
    (site / "thirdparty_hooks.py").write_text(HOOK_MODULE)
    (site / "thirdparty_other.py").write_text("raise RuntimeError('this module must not be imported')\n")
    info = site / "thirdparty_hooks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-hooks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[classy_hooks.hooks]\n"
        "third_party_counter = thirdparty_hooks:ThirdPartyCounterHook\n"
        "third_party_other = thirdparty_other:OtherHook\n"
    )


def test_build_hook_loads_only_the_requested_hook_from_another_distribution(tmp_path: Path) -> None:
    _install_fake_distribution(tmp_path)
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from classy_hooks.core import build_hook, registered_hook_names
        assert "thirdparty_hooks" not in sys.modules
        assert "third_party_counter" in registered_hook_names()
        hook = build_hook({{"name": "third_party_counter", "every": 4}})
        print(type(hook).__name__, hook.state.every)
        assert "thirdparty_hooks" in sys.modules and "thirdparty_other" not in sys.modules
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ThirdPartyCounterHook", "4"]


def test_entry_point_to_a_non_hook_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad_hooks.py").write_text("class NotAHook:\n    pass\n")
    info = tmp_path / "bad_hooks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-hooks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[classy_hooks.hooks]\nbad_hook = bad_hooks:NotAHook\n")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        "from classy_hooks.core import build_hook\n"
        "build_hook({'name': 'bad_hook'})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "UnknownHookError: build_hook: entry point 'bad_hook'" in proc.stderr
    assert "is not a ClassyHook subclass" in proc.stderr


def test_importing_core_never_imports_torch() -> None:
    code = "import sys, classy_hooks.core; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def _declared_hook_entry_points(pyproject: str) -> dict[str, str]:
    """The `name = "module:Class"` lines of a pyproject's `classy_hooks.hooks` table (tomllib is 3.11+)."""
    entries: dict[str, str] = {}
    in_table = False
    for line in pyproject.splitlines():
        line = line.strip()
        if line.startswith("["):
            in_table = line == '[project.entry-points."classy_hooks.hooks"]'
        elif in_table and "=" in line and not line.startswith("#"):
            name, target = (part.strip() for part in line.split("=", 1))
            entries[name] = target.strip('"')
    return entries


def test_every_declared_hook_entry_point_is_installed() -> None:
    """A hook whose `classy_hooks.hooks` entry point is declared in a pyproject but not installed is a defect.

    The dev environment installs all four packages (./tools/bootstrap), so nothing here is optional: a missing or
    different entry point fails (it means a stale install or a pyproject out of step with the installed metadata).
    """
    dev_dependency("classy_hooks.model", "the core-only floor venvs install classy-hooks-core alone")
    root = Path(__file__).resolve().parents[2]
    declared: dict[str, str] = {}
    for pyproject in sorted(root.glob("packages/*/pyproject.toml")):
        declared.update(_declared_hook_entry_points(pyproject.read_text()))
    assert declared, "no pyproject declares a classy_hooks.hooks entry point"
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="classy_hooks.hooks")}
    missing = {name: target for name, target in declared.items() if installed.get(name) != target}
    assert not missing, (
        f"declared but not installed (or installed with another target): {missing}; installed: {installed}. "
        "Reinstall the packages (./tools/bootstrap) or fix the pyproject."
    )


def test_known_hooks_lists_exactly_the_entry_points_of_the_pyprojects() -> None:
    """`KNOWN_HOOKS` (the install hint for a hook whose package is missing) re-lists the pyprojects' entry points:
    each name must be declared by exactly the distribution it names, and every declared name must be listed."""
    from classy_hooks.core import KNOWN_HOOKS

    root = Path(__file__).resolve().parents[2]
    declared: dict[str, str] = {}
    for pyproject in sorted(root.glob("packages/*/pyproject.toml")):
        text = pyproject.read_text()
        distribution = next(
            line.split("=", 1)[1].strip().strip('"') for line in text.splitlines() if line.startswith("name = ")
        )
        declared.update(dict.fromkeys(_declared_hook_entry_points(text), distribution))
    assert len(declared) == 13
    assert dict(KNOWN_HOOKS) == declared
