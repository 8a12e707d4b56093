"""Independent releases: tools/release run for real on git clones of this repository.

Each test clones the committed tree (what a release manager has), so this checkout is never touched.
The end-to-end tests then upload what the tool built to a real local index (pypiserver, twine) and
`pip install -U` one package in a venv that holds the previous releases, as a user would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import release

ROOT = Path(__file__).resolve().parents[2]
DATE = "2026-11-25"
HOOK_PACKAGES = ("classy-hooks-model", "classy-hooks-logging", "classy-hooks-export")
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Release Manager",
    "GIT_AUTHOR_EMAIL": "rm@example.invalid",
    "GIT_COMMITTER_NAME": "Release Manager",
    "GIT_COMMITTER_EMAIL": "rm@example.invalid",
}


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env={**os.environ, **GIT_IDENTITY}, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def clone(source: Path, dest: Path) -> Path:
    """A clone of `source`'s committed tree and tags."""
    subprocess.run(["git", "clone", "--quiet", str(source), str(dest)], check=True)
    return dest


def release_py(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """tools/release.py of this checkout, on `repo`, with this interpreter (which has the release tools too)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "release.py"), "--root", str(repo), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_IDENTITY},
        check=False,
    )


def add_changelog_entry(repo: Path, folder: str, entry: str) -> None:
    """What a contributor does before a release: a line under `## Unreleased`, committed."""
    changelog = repo / "packages" / folder / "CHANGELOG.md"
    changelog.write_text(release.with_changelog_entry(changelog.read_text(), entry))
    git(repo, "commit", "--quiet", "-am", f"{folder}: {entry}")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return clone(ROOT, tmp_path / "repo")


# ----------------------------------------------------------------------------- check


def test_ranges_check_passes_on_this_checkout() -> None:
    proc = release_py(ROOT, "check")
    assert proc.returncode == 0, proc.stderr
    assert "ok: every inter-package range admits the versions in this repo" in proc.stdout
    assert re.search(r"^classy-hooks-core 1\.\d+\.\d+", proc.stdout, re.M)
    for dist in HOOK_PACKAGES:
        assert re.search(rf"^{dist} \d+\.\d+\.\d+  requires classy-hooks-core>=1\.\d+,<2", proc.stdout, re.M)


def test_ranges_check_fails_when_a_sibling_range_excludes_the_repo_version(repo: Path) -> None:
    version_file = repo / "packages/core/src/classy_hooks/core/_version.py"
    version_file.write_text(re.sub(r'"1\.\d+\.\d+"', '"2.0.0"', version_file.read_text()))
    proc = release_py(repo, "check")
    assert proc.returncode == 1
    for dist in HOOK_PACKAGES:
        assert f"error: {dist} requires 'classy-hooks-core>=1.0,<2', which does not admit classy-hooks-core 2.0.0" in (
            proc.stderr
        )


@pytest.mark.parametrize(
    ("spec", "problem"),
    [(">=1.0", "needs a lower and an upper bound"), (">=1.0,<3", "spans more than one compatible series: keep the upper bound at or below 2")],
)
def test_ranges_check_rejects_a_loose_sibling_range(repo: Path, spec: str, problem: str) -> None:
    pyproject = repo / "packages/hooks-export/pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"classy-hooks-core>=1.0,<2"', f'"classy-hooks-core{spec}"'))
    proc = release_py(repo, "check")
    assert proc.returncode == 1
    assert f"error: classy-hooks-export requires 'classy-hooks-core{spec}': the range {problem}" in proc.stderr


# ----------------------------------------------------------------------------- bump refusals (nothing changes)


def test_a_dirty_tree_is_refused(repo: Path) -> None:
    (repo / "packages/hooks-export/src/classy_hooks/export/stray.py").write_text("x = 1\n")
    proc = release_py(repo, "bump", "classy-hooks-core", "1.0.0")
    assert proc.returncode == 1
    assert "uncommitted changes" in proc.stderr and "stray.py" in proc.stderr
    assert git(repo, "tag") == ""


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("0.0.9", "is not higher than the original version"),
        ("banana", "cannot release 'banana'"),
        ("0.1.1+local", "local version label"),
    ],
)
def test_bad_versions_are_refused(repo: Path, how: str, message: str) -> None:
    proc = release_py(repo, "bump", "classy-hooks-export", how)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert git(repo, "status", "--porcelain") == ""


def test_unknown_package_lists_the_known_ones(repo: Path) -> None:
    proc = release_py(repo, "bump", "classy-hooks-nope", "patch")
    assert proc.returncode == 1
    assert "unknown package 'classy-hooks-nope'; known: classy-hooks-core (core)" in proc.stderr


def test_a_hook_package_is_not_released_before_a_core_it_admits(repo: Path) -> None:
    proc = release_py(repo, "bump", "classy-hooks-model", "0.1.0")
    assert proc.returncode == 1
    assert "requires 'classy-hooks-core>=1.0,<2', which no released classy-hooks-core admits" in proc.stderr
    assert "release classy-hooks-core first" in proc.stderr


def test_a_breaking_core_without_coordinated_is_refused(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    proc = release_py(repo, "bump", "core", "major")
    assert proc.returncode == 1
    assert "classy-hooks-core 2.0.0 is outside the range of 3 sibling(s)" in proc.stderr
    assert "add --coordinated" in proc.stderr
    assert git(repo, "status", "--porcelain") == "" and git(repo, "rev-parse", "HEAD") == head


# ----------------------------------------------------------------------------- build checks


@pytest.mark.slow
def test_build_checks_every_package_of_this_checkout(repo: Path, tmp_path: Path) -> None:
    proc = release_py(repo, "build", "--outdir", str(tmp_path / "dist"))
    assert proc.returncode == 0, proc.stderr
    for dist in ("core", *HOOK_PACKAGES):
        assert re.search(rf"classy-hooks-{dist.removeprefix('classy-hooks-')} \S+: built and checked", proc.stdout)
    assert len(list((tmp_path / "dist").glob("*.whl"))) == 4 and len(list((tmp_path / "dist").glob("*.tar.gz"))) == 4


@pytest.mark.slow
def test_build_rejects_an_entry_point_whose_target_is_not_in_the_wheel(repo: Path, tmp_path: Path) -> None:
    pyproject = repo / "packages/hooks-export/pyproject.toml"
    header = '[project.entry-points."classy_hooks.hooks"]\n'
    pyproject.write_text(pyproject.read_text().replace(header, header + 'ghost = "classy_hooks.export.ghost:Ghost"\n'))
    proc = release_py(repo, "build", "classy-hooks-export", "--outdir", str(tmp_path))
    assert proc.returncode == 1
    assert "entry point 'ghost' -> classy_hooks.export.ghost:Ghost: classy_hooks/export/ghost.py is not in" in (
        proc.stderr
    )


@pytest.mark.slow
def test_build_rejects_a_wheel_that_would_hide_the_other_packages(repo: Path, tmp_path: Path) -> None:
    (repo / "packages/hooks-export/src/classy_hooks/__init__.py").write_text("")
    proc = release_py(repo, "build", "hooks-export", "--outdir", str(tmp_path))
    assert proc.returncode == 1
    assert "ships classy_hooks/__init__.py, which hides the other classy-hooks packages" in proc.stderr


# ----------------------------------------------------------------------------- pure functions


def test_rolled_changelog_keeps_older_sections() -> None:
    text = "# C\n\n## Unreleased\n\n### Fixed\n- b\n\n## [0.1.0] - 2026-01-01\n\n- a\n"
    out = release.rolled_changelog(text, release.Version("0.1.1"), DATE, Path("CHANGELOG.md"))
    assert out == f"# C\n\n## Unreleased\n\n## [0.1.1] - {DATE}\n\n### Fixed\n- b\n\n## [0.1.0] - 2026-01-01\n\n- a\n"
    with pytest.raises(release.ReleaseError, match=r"already has a section for 0\.1\.0"):
        release.rolled_changelog(text, release.Version("0.1.0"), DATE, Path("CHANGELOG.md"))
    with pytest.raises(release.ReleaseError, match="'## Unreleased' is empty"):
        release.rolled_changelog(out, release.Version("0.1.2"), DATE, Path("CHANGELOG.md"))


def test_changelog_section_is_the_release_notes(tmp_path: Path) -> None:
    path = tmp_path / "CHANGELOG.md"
    path.write_text(f"# C\n\n## Unreleased\n\n## [0.1.1] - {DATE}\n\n### Fixed\n- b\n\n## [0.1.0] - 2026-01-01\n\n- a\n")
    assert release.changelog_section(path, release.Version("0.1.1")) == "### Fixed\n- b\n"
    with pytest.raises(release.ReleaseError, match=r"no '## \[0\.2\.0\]' section"):
        release.changelog_section(path, release.Version("0.2.0"))
