"""The built sdists and wheels hold what a user and PyPI need, and nothing from the repository root they do not.

Built fresh by `python -m build` (tests/package_index.py). Each sdist holds exactly its package's pyproject.toml,
README.md, CHANGELOG.md, LICENSE, .gitignore (the package's own: hatchling always ships the nearest one) and src/;
every wheel and sdist carries the repository's MIT LICENSE and metadata with the project URLs; `twine check
--strict` and `check-wheel-contents` pass.
"""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import tomllib

from package_index import PACKAGE_FOLDERS, ROOT, run

REPOSITORY = "https://github.com/classy-hooks/classy-hooks"
SDIST_FILES = {"PKG-INFO", "pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE", ".gitignore"}


def _tracked_source_files(folder: Path) -> set[str]:
    """The package's files under src/ that git tracks or would add (what an sdist of a clean checkout holds)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "src"], cwd=folder,
                         capture_output=True, text=True, check=True).stdout
    return {line for line in out.splitlines() if line}


def _sdist(files: list[Path], name: str) -> Path:
    return next(p for p in files if p.name.endswith(".tar.gz") and p.name.startswith(name.replace("-", "_") + "-"))


def _wheel(files: list[Path], name: str) -> Path:
    return next(p for p in files if p.name.endswith(".whl") and p.name.startswith(name.replace("-", "_") + "-"))


def test_every_package_folder_has_the_repository_license() -> None:
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    for folder in PACKAGE_FOLDERS.values():
        assert (folder / "LICENSE").read_text() == license_text, f"{folder}/LICENSE differs from the root LICENSE"


@pytest.mark.slow
@pytest.mark.parametrize("name", PACKAGE_FOLDERS)
def test_sdist_holds_only_what_building_and_reading_the_package_need(name: str, built_distributions: list[Path]) -> None:
    sdist = _sdist(built_distributions, name)
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name and m.isfile()}
        assert all(not m.issym() for m in tar.getmembers()), "the sdist contains a symlink"
        license_text = tar.extractfile(members["LICENSE"]).read().decode()  # type: ignore[union-attr]
        gitignore = tar.extractfile(members[".gitignore"]).read().decode()  # type: ignore[union-attr]
    folder = PACKAGE_FOLDERS[name]
    assert set(members) == SDIST_FILES | _tracked_source_files(folder)
    assert license_text == (ROOT / "LICENSE").read_text()
    assert gitignore == (folder / ".gitignore").read_text(), "the sdist ships another .gitignore than the package's"


@pytest.mark.slow
@pytest.mark.parametrize("name", PACKAGE_FOLDERS)
def test_wheel_metadata_has_license_urls_and_the_tested_pythons(name: str, built_distributions: list[Path]) -> None:
    wheel = _wheel(built_distributions, name)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(zf.read(f"{info}/METADATA"))
        assert zf.read(f"{info}/licenses/LICENSE").decode() == (ROOT / "LICENSE").read_text()
    assert not [n for n in names if n.startswith("classy_hooks/") and n.count("/") == 1], (
        "a wheel ships classy_hooks/__init__.py or another file of the shared namespace"
    )
    folder = PACKAGE_FOLDERS[name].relative_to(ROOT).as_posix()
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert sorted(metadata.get_all("Project-URL")) == sorted([
        f"Source, {REPOSITORY}/tree/main/{folder}",
        f"Changelog, {REPOSITORY}/blob/main/{folder}/CHANGELOG.md",
        f"Issues, {REPOSITORY}/issues",
    ])
    project = tomllib.loads((PACKAGE_FOLDERS[name] / "pyproject.toml").read_text())["project"]
    assert metadata["Requires-Python"] == project["requires-python"]
    assert sorted(metadata.get_all("Classifier")) == sorted(project["classifiers"])


@pytest.mark.slow
def test_twine_and_check_wheel_contents_accept_every_artifact(built_distributions: list[Path]) -> None:
    bin_dir = Path(sys.executable).parent
    twine = run([bin_dir / "twine", "check", "--strict", *built_distributions])
    assert twine.stdout.count("PASSED") == len(built_distributions), twine.stdout
    wheels = [p for p in built_distributions if p.suffix == ".whl"]
    contents = run([bin_dir / "check-wheel-contents", *wheels])
    assert contents.stdout.count(": OK") == len(wheels), contents.stdout
