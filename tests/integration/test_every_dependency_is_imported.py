"""Every declared dependency is imported by the package that declares it, and every import is declared.

Read from the source (ast), not from a run: a dependency that no module imports (fvcore in classy-hooks-model was
one) fails here, and so does a third-party import that no requirement provides. Each extra's distributions must be
imported through `import_extra(module, hook, distribution, extra)` naming that extra, by a module of the package, so
the extra a hook's error message names is the extra that brings what the hook imports.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))


@dataclass
class SourceImports:
    """What a package's modules import: top-level module names, and (module, extra) pairs from import_extra."""

    modules: set[str] = field(default_factory=set)
    extras: set[tuple[str, str]] = field(default_factory=set)


def _first_party_module(name: str) -> str:
    """`classy_hooks.core.x` -> `classy_hooks.core` (each distribution owns one sub-package); others: top level."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "classy_hooks" else parts[0]


def _string_argument(call: ast.Call, position: int, keyword: str) -> str | None:
    values = [kw.value for kw in call.keywords if kw.arg == keyword]
    if len(call.args) > position:
        values.append(call.args[position])
    value = values[0] if values else None
    return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None


def source_imports(package: Path, skip: Path | None = None) -> SourceImports:
    """Parse every module under the package's src/ (but not under `skip`) and collect what it imports."""
    found = SourceImports()
    for path in (package / "src").rglob("*.py"):
        if skip is not None and path.is_relative_to(skip):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.modules.update(_first_party_module(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.modules.add(_first_party_module(node.module))
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in {
                "import_extra",
                "import_module",
            }:
                module = _string_argument(node, 0, "module" if getattr(node.func, "id", "") == "import_extra" else "name")
                if module is None:
                    continue
                found.modules.add(_first_party_module(module))
                extra = _string_argument(node, 3, "extra")
                if extra is not None:
                    found.extras.add((_first_party_module(module), extra))
    return found


def import_names(distribution: str) -> set[str]:
    """The modules a distribution provides: ours from the repo layout, others from the dev venv's metadata."""
    name = canonicalize_name(distribution)
    for package in PACKAGES:
        project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
        if canonicalize_name(project["name"]) == name:
            return {f"classy_hooks.{p.name}" for p in (package / "src" / "classy_hooks").iterdir() if p.is_dir()}
    modules = {module for module, dists in md.packages_distributions().items() if name in map(canonicalize_name, dists)}
    assert modules, f"{distribution} is not installed in the dev venv, so its import names are unknown"
    return {m for m in modules if not m.startswith("_")} or modules


def _requirements(package: Path) -> Iterator[tuple[str, Requirement]]:
    """(extra or "", requirement) for every requirement of the package, extras' self-references excluded."""
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    for line in project.get("dependencies", []):
        yield "", Requirement(line)
    for extra, lines in project.get("optional-dependencies", {}).items():
        for line in lines:
            req = Requirement(line)
            if canonicalize_name(req.name) != canonicalize_name(project["name"]):
                yield extra, req


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_required_dependency_is_imported(package: Path) -> None:
    imports = source_imports(package)
    unused = {
        str(req): sorted(import_names(req.name))
        for extra, req in _requirements(package)
        if not extra and not import_names(req.name) & imports.modules
    }
    assert not unused, f"{package.name} declares dependencies that none of its modules imports: {unused}"


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_extra_is_imported_by_the_hooks_that_name_it(package: Path) -> None:
    imports = source_imports(package)
    missing = {
        f"[{extra}] {req}": sorted(import_names(req.name))
        for extra, req in _requirements(package)
        if extra and not {(module, extra) for module in import_names(req.name)} & imports.extras
    }
    assert not missing, (
        f"{package.name}: these extras' distributions are never imported with import_extra(..., extra) naming that "
        f"extra: {missing}"
    )
    named = {extra for _, extra in imports.extras}
    declared = {extra for extra, _ in _requirements(package) if extra}
    assert named <= declared, f"{package.name}: import_extra names extras the package does not declare: {named - declared}"


#: Core's one subpackage that imports torch without declaring it: the torch code the hook packages (which require
#: torch) share. Only its modules may import torch; import-linter keeps the rest of core from importing it.
CORE = ROOT / "packages" / "core"
TORCH_SUPPORT = CORE / "src" / "classy_hooks" / "core" / "torch_support"


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_third_party_import_is_declared(package: Path) -> None:
    imports = source_imports(package, skip=TORCH_SUPPORT if package == CORE else None)
    provided = {m for _, req in _requirements(package) for m in import_names(req.name)}
    own = import_names(tomllib.loads((package / "pyproject.toml").read_text())["project"]["name"])
    third_party = {m for m in imports.modules if m not in sys.stdlib_module_names and m != "classy_hooks"}
    undeclared = third_party - provided - own
    assert not undeclared, f"{package.name} imports modules no declared requirement provides: {sorted(undeclared)}"


def test_the_all_extra_is_the_union_of_the_others() -> None:
    project = tomllib.loads((ROOT / "packages" / "hooks-logging" / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    (everything,) = (Requirement(line) for line in extras["all"])
    assert canonicalize_name(everything.name) == canonicalize_name(project["name"])
    assert everything.extras == set(extras) - {"all"}


def test_the_parser_sees_what_it_must() -> None:
    """The checks above are only as good as the parser: fvcore in model would have been caught."""
    logging_imports = source_imports(ROOT / "packages" / "hooks-logging")
    assert {"torch", "tqdm", "classy_hooks.core"} <= logging_imports.modules
    assert ("tensorboardX", "tensorboard") in logging_imports.extras
    assert ("fvcore", "complexity") in logging_imports.extras
    assert "fvcore" not in source_imports(ROOT / "packages" / "hooks-model").modules
    assert import_names("fvcore") == {"fvcore"}
    assert import_names("classy-hooks-model") == {"classy_hooks.model"}


def test_core_imports_torch_only_in_its_torch_support_subpackage() -> None:
    """The hook packages' shared torch code imports torch (and only torch); no other module of core does."""
    support = source_imports(CORE, skip=None).modules - source_imports(CORE, skip=TORCH_SUPPORT).modules
    assert support == {"torch"}
    assert "torch" not in source_imports(CORE, skip=TORCH_SUPPORT).modules
