"""Independent releases: tools/release.py run for real on a temporary copy of the repository.

The copy is `git archive HEAD` (what a clean clone holds), so the tests never touch this checkout.
"""

from __future__ import annotations

import email.parser
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import release

ROOT = Path(__file__).resolve().parents[2]
DATE = "2026-11-25"


def _copy_repo(dest: Path) -> Path:
    """The committed tree of this checkout (a clean clone's content), or the working tree outside git."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=False)
    if archive.returncode == 0:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tf:
            tf.extractall(dest, filter="data")
    else:
        ignore = shutil.ignore_patterns(".git", ".venv", "dist", "runs", "__pycache__", "*_cache")
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The copy the bump tests start from.

    These tests exercise the release mechanics, so a package README that is still a stub without
    an install line gets one here (the release refuses such a README); the real READMEs are held
    to that rule by test_build_checks_every_package_of_this_checkout.
    """
    repo = _copy_repo(tmp_path_factory.mktemp("pristine") / "repo")
    for pyproject in (repo / "packages").glob("*/pyproject.toml"):
        pkg = release.load_package(pyproject.parent)
        text = pkg.readme.read_text()
        if f"pip install {pkg.dist}" not in text:
            pkg.readme.write_text(text.rstrip("\n") + f"\n\nInstall it with\n\n    pip install {pkg.dist}\n")
    return repo


@pytest.fixture
def repo(tmp_path: Path, pristine: Path) -> Path:
    dest = tmp_path / "repo"
    shutil.copytree(pristine, dest)
    return dest


def _release(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This checkout's release tool, pointed at `repo`."""
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "release.py"), "--root", str(repo), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(name).decode())


# ----------------------------------------------------------------------------- the ranges check


def test_ranges_check_passes_on_this_checkout() -> None:
    proc = _release(ROOT, "check")
    assert proc.returncode == 0, proc.stderr
    assert "ok: every inter-package range admits the versions in this repo" in proc.stdout
    for dist in ("classy-hooks-core", "classy-hooks-model", "classy-hooks-logging", "classy-hooks-export"):
        assert re.search(rf"^{dist} \d+\.\d+\.\d+", proc.stdout, re.M)


def test_ranges_check_fails_when_a_sibling_range_excludes_the_repo_version(repo: Path) -> None:
    version_file = repo / "packages/core/src/classy_hooks/core/_version.py"
    version_file.write_text(version_file.read_text().replace('"0.1.0"', '"0.2.0"'))
    proc = _release(repo, "check")
    assert proc.returncode == 1
    for dist in ("classy-hooks-model", "classy-hooks-logging", "classy-hooks-export"):
        assert (
            f"error: {dist} requires 'classy-hooks-core>=0.1,<0.2', which does not admit classy-hooks-core 0.2.0"
            in (proc.stderr)
        )


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (">=0.1", "is not a tight range: it needs a lower and an upper bound"),
        (">=0.1,<1", "spans more than one compatible series: keep the upper bound at or below 0.2"),
    ],
)
def test_ranges_check_rejects_a_loose_sibling_range(repo: Path, spec: str, problem: str) -> None:
    pyproject = repo / "packages/hooks-export/pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"classy-hooks-core>=0.1,<0.2"', f'"classy-hooks-core{spec}"'))
    proc = _release(repo, "check")
    assert proc.returncode == 1
    assert f"error: classy-hooks-export requires 'classy-hooks-core{spec}': the range {problem}" in proc.stderr


# ----------------------------------------------------------------------------- bump


@pytest.mark.slow
def test_patch_release_of_logging_end_to_end(repo: Path, tmp_path: Path) -> None:
    before = _snapshot(repo / "packages")
    changelog = repo / "packages/hooks-logging/CHANGELOG.md"
    old_changelog = changelog.read_text()
    dist = tmp_path / "dist"

    proc = _release(repo, "bump", "classy-hooks-logging", "patch", "--date", DATE, "--outdir", str(dist))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "tag: classy-hooks-logging-v0.1.1"
    assert "git tag -a classy-hooks-logging-v0.1.1" in proc.stdout
    version_file = repo / "packages/hooks-logging/src/classy_hooks/logging/_version.py"
    assert '__version__ = "0.1.1"' in version_file.read_text()
    # The Unreleased entries now sit under the new version, below a fresh empty Unreleased section.
    new_changelog = changelog.read_text()
    assert f"## Unreleased\n\n## [0.1.1] - {DATE}\n" in new_changelog
    old_entries = old_changelog.split("## Unreleased", 1)[1]
    assert new_changelog.split(f"## [0.1.1] - {DATE}", 1)[1] == old_entries
    # Only the released package's version file and changelog changed.
    after = _snapshot(repo / "packages")
    assert {k for k in before if before[k] != after.get(k)} == {
        "hooks-logging/CHANGELOG.md",
        "hooks-logging/src/classy_hooks/logging/_version.py",
    }
    wheel = dist / "classy_hooks_logging-0.1.1-py3-none-any.whl"
    sdist = dist / "classy_hooks_logging-0.1.1.tar.gz"
    assert sorted(p.name for p in dist.iterdir()) == sorted([wheel.name, sdist.name])
    meta = _wheel_metadata(wheel)
    assert (meta["Name"], meta["Version"]) == ("classy-hooks-logging", "0.1.1")
    assert "classy-hooks-core<0.2,>=0.1" in meta.get_all("Requires-Dist")
    assert meta["Description-Content-Type"].startswith("text/markdown")
    with tarfile.open(sdist) as tf:
        assert "classy_hooks_logging-0.1.1/CHANGELOG.md" in tf.getnames()
    assert _release(repo, "check").returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize(("how", "version"), [("minor", "0.2.0"), ("major", "1.0.0"), ("0.2.0", "0.2.0")])
def test_core_bump_outside_the_sibling_ranges_fails_and_changes_nothing(
    repo: Path, tmp_path: Path, how: str, version: str
) -> None:
    before = _snapshot(repo)
    proc = _release(repo, "bump", "classy-hooks-core", how, "--outdir", str(tmp_path / "dist"))

    assert proc.returncode == 1
    assert f"classy-hooks-core {version} would break the range of 3 sibling package(s)" in proc.stderr
    for dist in ("classy-hooks-model", "classy-hooks-logging", "classy-hooks-export"):
        assert f"- {dist} requires 'classy-hooks-core>=0.1,<0.2'" in proc.stderr
    assert "widen the range" in proc.stderr
    assert "tag:" not in proc.stdout
    assert _snapshot(repo) == before
    assert not (tmp_path / "dist").exists()


@pytest.mark.slow
def test_dry_run_builds_and_checks_but_changes_nothing(repo: Path) -> None:
    before = _snapshot(repo)
    proc = _release(repo, "bump", "hooks-model", "minor", "--dry-run", "--date", DATE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "built and checked classy_hooks_model-0.2.0-py3-none-any.whl" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "tag: classy-hooks-model-v0.2.0"
    assert _snapshot(repo) == before


@pytest.mark.slow
def test_explicit_version_inside_the_ranges_releases_core(repo: Path, tmp_path: Path) -> None:
    proc = _release(repo, "bump", "core", "0.1.5", "--date", DATE, "--outdir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "tag: classy-hooks-core-v0.1.5"
    assert _wheel_metadata(tmp_path / "classy_hooks_core-0.1.5-py3-none-any.whl")["Version"] == "0.1.5"
    assert _release(repo, "check").returncode == 0


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("0.0.9", "must be greater than the current version 0.1.0"),
        ("0.1.0", "must be greater than the current version 0.1.0"),
        ("banana", "neither major, minor, patch nor a valid version"),
        ("0.1.1+local", "local version label"),
    ],
)
def test_bad_versions_are_refused(repo: Path, how: str, message: str) -> None:
    proc = _release(repo, "bump", "classy-hooks-export", how, "--dry-run")
    assert proc.returncode == 1
    assert message in proc.stderr


def test_empty_unreleased_section_is_refused(repo: Path) -> None:
    changelog = repo / "packages/hooks-export/CHANGELOG.md"
    changelog.write_text("# Changelog\n\n## Unreleased\n\n## [0.1.0] - 2026-01-01\n\n- First.\n")
    proc = _release(repo, "bump", "classy-hooks-export", "patch", "--dry-run")
    assert proc.returncode == 1
    assert "'## Unreleased' is empty" in proc.stderr


def test_unknown_package_lists_the_known_ones(repo: Path) -> None:
    proc = _release(repo, "bump", "classy-hooks-nope", "patch")
    assert proc.returncode == 1
    assert "unknown package 'classy-hooks-nope'; known: classy-hooks-core (core)" in proc.stderr


# ----------------------------------------------------------------------------- built-metadata checks


@pytest.mark.slow
def test_build_checks_every_package_of_this_checkout(tmp_path: Path) -> None:
    proc = _release(ROOT, "build", "--outdir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for dist in ("core", "model", "logging", "export"):
        assert f"classy-hooks-{dist} " in proc.stdout
    assert len(list(tmp_path.glob("*.whl"))) == 4
    assert len(list(tmp_path.glob("*.tar.gz"))) == 4


@pytest.mark.slow
def test_build_rejects_a_readme_that_would_break_on_the_index_page(repo: Path, tmp_path: Path) -> None:
    readme = repo / "packages/hooks-export/README.md"
    readme.write_text("Export hooks. See [the docs](../../README.md) and ![diagram](docs/flow.png).\n")
    proc = _release(repo, "build", "hooks-export", "--outdir", str(tmp_path))
    assert proc.returncode == 1
    assert "has no top-level '# ' heading" in proc.stderr
    assert "link '../../README.md' is relative" in proc.stderr
    assert "link 'docs/flow.png' is relative" in proc.stderr
    assert "no `pip install classy-hooks-export` line" in proc.stderr


@pytest.mark.slow
def test_build_rejects_an_entry_point_whose_target_is_not_in_the_wheel(repo: Path, tmp_path: Path) -> None:
    pyproject = repo / "packages/hooks-export/pyproject.toml"
    text = pyproject.read_text()
    header = '[project.entry-points."classy_hooks.hooks"]\n'
    assert header in text
    pyproject.write_text(text.replace(header, header + 'ghost = "classy_hooks.export.ghost_hook:GhostHook"\n'))
    proc = _release(repo, "build", "classy-hooks-export", "--outdir", str(tmp_path))
    assert proc.returncode == 1
    assert "entry point 'ghost' -> classy_hooks.export.ghost_hook:GhostHook" in proc.stderr
    assert "module file classy_hooks/export/ghost_hook.py is not in the wheel" in proc.stderr


# ----------------------------------------------------------------------------- pure functions


def test_next_version() -> None:
    v = release.Version("0.1.3")
    assert str(release.next_version(v, "patch")) == "0.1.4"
    assert str(release.next_version(v, "minor")) == "0.2.0"
    assert str(release.next_version(v, "major")) == "1.0.0"
    assert str(release.next_version(release.Version("0.2.0rc1"), "patch")) == "0.2.0"
    assert str(release.next_version(v, "0.1.10")) == "0.1.10"


def test_rolled_changelog_keeps_older_sections() -> None:
    text = "# C\n\n## Unreleased\n\n### Fixed\n- b\n\n## [0.1.0] - 2026-01-01\n\n- a\n"
    out = release.rolled_changelog(text, release.Version("0.1.1"), DATE, Path("CHANGELOG.md"))
    assert out == f"# C\n\n## Unreleased\n\n## [0.1.1] - {DATE}\n\n### Fixed\n- b\n\n## [0.1.0] - 2026-01-01\n\n- a\n"
    with pytest.raises(release.ReleaseError, match=r"already has a section for 0\.1\.0"):
        release.rolled_changelog(text, release.Version("0.1.0"), DATE, Path("CHANGELOG.md"))


def test_tag_scheme() -> None:
    assert release.tag_name("classy-hooks-core", release.Version("0.1.1")) == "classy-hooks-core-v0.1.1"
