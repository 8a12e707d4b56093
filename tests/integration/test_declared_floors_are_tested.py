"""The floors the packages declare are the versions tools/test-floors runs the code on.

requires-python, the Python classifiers and every lower bound of a third-party requirement are read from the
packages' pyproject.toml and compared with what tools/test-floors installs (tools/floor-constraints.txt) and
which Pythons it runs core's tests on. Raising or lowering a floor without changing the run fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))
OURS = {"classy-hooks-core", "classy-hooks-model", "classy-hooks-logging", "classy-hooks-export"}
#: The one Python that has torch wheels on the test machines: the main suite and the floor suite run on it.
TORCH_PYTHON = "3.11"


def _project(package: Path) -> dict:
    return tomllib.loads((package / "pyproject.toml").read_text())["project"]


def floor_pins() -> dict[str, str]:
    """name -> version pinned in tools/floor-constraints.txt."""
    pins = {}
    for line in (ROOT / "tools" / "floor-constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def core_pythons() -> list[str]:
    """The Pythons tools/test-floors runs core's tests on, plus the one the main suite runs on."""
    match = re.search(r"^core_pythons=\(([^)]*)\)", (ROOT / "tools" / "test-floors").read_text(), re.M)
    assert match, "tools/test-floors no longer lists core_pythons=(...)"
    return sorted({*match.group(1).split(), TORCH_PYTHON}, key=lambda v: tuple(map(int, v.split("."))))


def _classifier_pythons(project: dict) -> list[str]:
    prefix = "Programming Language :: Python :: 3."
    return [c.rsplit(" ", 1)[1] for c in project["classifiers"] if c.startswith(prefix) and c[len(prefix):].isdigit()]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_lower_bound_is_a_pinned_floor(package: Path) -> None:
    project = _project(package)
    lines = [*project.get("dependencies", []), *(x for e in project.get("optional-dependencies", {}).values() for x in e)]
    pins = floor_pins()
    for req in map(Requirement, lines):
        name = canonicalize_name(req.name)
        if name in OURS:
            continue
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{package.name}: {req} needs exactly one lower bound (>=), the version tested"
        assert name in pins and Version(pins[name]) == Version(lower[0]), (
            f"{package.name} declares {req}, but tools/floor-constraints.txt runs the suite on "
            f"{name}=={pins.get(name)}: make them equal (and run ./tools/test-floors)"
        )


def test_every_pinned_floor_is_a_declared_lower_bound() -> None:
    declared = {
        canonicalize_name(Requirement(line).name)
        for package in PACKAGES
        for line in [*_project(package).get("dependencies", []),
                     *(x for e in _project(package).get("optional-dependencies", {}).values() for x in e)]
    }
    assert set(floor_pins()) <= declared


def test_core_declares_exactly_the_pythons_its_tests_run_on() -> None:
    project = _project(ROOT / "packages" / "core")
    tested = core_pythons()
    assert project["requires-python"] == f">={tested[0]}"
    assert _classifier_pythons(project) == tested
    assert project["dependencies"] == []


@pytest.mark.parametrize("package", [p for p in PACKAGES if p.name != "core"], ids=lambda p: p.name)
def test_hook_packages_declare_the_python_they_ran_on_with_torch(package: Path) -> None:
    project = _project(package)
    assert project["requires-python"] == f">={TORCH_PYTHON}"
    assert _classifier_pythons(project) == [TORCH_PYTHON]


def test_the_floor_run_installs_the_pins_exactly() -> None:
    script = (ROOT / "tools" / "test-floors").read_text()
    assert '-c "$root/tools/floor-constraints.txt"' in script
    for name in ("torch", "tqdm", "tensorboardX", "tensorboard", "fvcore", "visdom"):
        assert canonicalize_name(name) in floor_pins()
