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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import package_index
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


@pytest.mark.slow
def test_dry_run_releases_in_a_temporary_clone_and_changes_nothing(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    proc = release_py(repo, "bump", "classy-hooks-core", "1.0.0", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "would release classy-hooks-core 1.0.0 -> 1.0.0 (tag classy-hooks-core-v1.0.0)" in proc.stdout
    assert "classy_hooks_core-1.0.0-py3-none-any.whl" in proc.stdout
    assert (git(repo, "rev-parse", "HEAD"), git(repo, "tag"), git(repo, "status", "--porcelain")) == (head, "", "")


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


@pytest.mark.slow
def test_tools_release_runs_in_its_own_small_venv_without_torch() -> None:
    proc = subprocess.run([ROOT / "tools" / "release", "check"], capture_output=True, text=True, check=False,
                          env=package_index.clean_environment())  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    python = ROOT / ".venv-release" / "bin" / "python"
    code = (
        "import importlib.util as u, sys; sys.exit(0 if all(u.find_spec(m) for m in "
        "('build', 'twine', 'check_wheel_contents', 'hatchling', 'packaging')) and not u.find_spec('torch') else 1)"
    )
    assert subprocess.run([python, "-I", "-c", code], check=False).returncode == 0
    size = sum(p.stat().st_size for p in (ROOT / ".venv-release").rglob("*") if p.is_file() and not p.is_symlink())
    print(f".venv-release: {size / 2**20:.0f} MiB")
    assert size < 200 * 2**20


# ----------------------------------------------------------------------------- end to end: release, upload, pip -U
#
# One clone ("origin") gets the first release of every package, made by tools/release itself (the versions in the
# repo, untagged so far). Each test clones origin, serves origin's files from its own local index and resets one
# shared user venv to exactly those releases; then it releases more, uploads with twine and upgrades as a user.
# torch is pinned to the machine's local CPU wheel (torch==2.13.0, within the packages' torch>=2.13) so that pip
# takes it from disk; the venv is made once per module and only classy-hooks packages move in it afterwards.

FIRST = {"classy-hooks-core": "1.0.0", "classy-hooks-model": "0.1.0", "classy-hooks-logging": "0.1.0",
         "classy-hooks-export": "0.1.0"}  # fmt: skip
TORCH_PIN = "torch==2.13.0\n"


def tools_release(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command a release manager runs: tools/release (its own .venv-release), on `repo`."""
    proc = subprocess.run(
        [str(ROOT / "tools" / "release"), "--root", str(repo), *args],
        capture_output=True,
        text=True,
        env={**package_index.clean_environment(), **GIT_IDENTITY},
        check=False,
        timeout=900,
    )
    print(f"$ tools/release {' '.join(args)}  -> rc {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


def released_files(proc: subprocess.CompletedProcess[str], outdir: Path) -> list[Path]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sorted(p for p in outdir.iterdir() if p.name.endswith((".whl", ".tar.gz")))


@dataclass
class Upgrade:
    """What one pip command did to the venv: {name: (before, after)} and what `pip check` says afterwards."""

    command: str
    returncode: int
    output: str
    changed: dict[str, tuple[str | None, str | None]]
    consistent: bool
    check_output: str


def pip_upgrade(venv: package_index.FreshVenv, line: str) -> Upgrade:
    """Run a pip command line in the activated venv, as a user types it; record what changed."""
    before = venv.distributions()
    proc = venv.shell(line, check=False)
    after = venv.distributions()
    check = venv.pip("check", check=False)
    changed = {k: (before.get(k), after.get(k)) for k in sorted({*before, *after}) if before.get(k) != after.get(k)}
    result = Upgrade(line, proc.returncode, proc.stdout + proc.stderr, changed, check.returncode == 0, check.stdout)
    print(f"$ {line}\n  rc {result.returncode}; changed {changed}; pip check: {check.stdout.strip()}")
    return result


def assert_hooks_load(venv: package_index.FreshVenv) -> int:
    """Every installed `classy_hooks.hooks` entry point imports and is a hook class."""
    code = (
        "import importlib.metadata as m\nfrom classy_hooks.core import ClassyHook\n"
        "eps = m.entry_points(group='classy_hooks.hooks')\n"
        "assert all(issubclass(ep.load(), ClassyHook) for ep in eps)\nprint(len(eps))"
    )
    return int(venv.python_code(code).stdout)


@dataclass
class Origin:
    repo: Path
    files: list[Path]
    first_release_output: list[str]


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Origin:
    start = time.monotonic()
    repo = clone(ROOT, tmp_path_factory.mktemp("origin") / "repo")
    dist = repo.parent / "dist"
    outputs = []
    for dist_name, version in FIRST.items():  # core first: a hook package needs a released core
        proc = tools_release(repo, "bump", dist_name, version, "--outdir", str(dist), "--date", DATE)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs.append(proc.stdout)
    print(f"first release of the four packages: {time.monotonic() - start:.1f} s")
    return Origin(repo, released_files(proc, dist), outputs)


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory: pytest.TempPathFactory) -> package_index.FreshVenv:
    venv = package_index.FreshVenv(tmp_path_factory.mktemp("user") / "venv")
    venv.pip_env["PIP_NO_COMPILE"] = "1"  # no .pyc for torch's thousands of files at install: the test's biggest cost
    return venv


@dataclass
class World:
    repo: Path
    index: package_index.LocalIndex
    venv: package_index.FreshVenv
    dist: Path

    def release(self, *args: str) -> list[Path]:
        """tools/release bump ... into a fresh folder, then twine upload of what it built."""
        outdir = self.dist / str(len(list(self.dist.iterdir())) if self.dist.exists() else 0)
        files = released_files(tools_release(self.repo, "bump", *args, "--outdir", str(outdir), "--date", DATE), outdir)
        self.index.upload(files)
        return files


@pytest.fixture
def world(origin: Origin, user_venv: package_index.FreshVenv, tmp_path: Path) -> Iterator[World]:
    """origin's releases on a fresh local index, and the user venv holding exactly those releases."""
    repo = clone(origin.repo, tmp_path / "repo")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(TORCH_PIN)
    with package_index.LocalIndex().start(tmp_path / "index") as index:
        index.upload(origin.files)
        user_venv.use_index(index, constraints)
        start = time.monotonic()
        user_venv.pip("install", *(f"{name}=={version}" for name, version in FIRST.items()))
        print(f"user venv reset to the first releases: {time.monotonic() - start:.1f} s")
        installed = user_venv.distributions()
        assert {name: installed[name] for name in FIRST} == FIRST
        user_venv.check()
        yield World(repo, index, user_venv, tmp_path / "dist")


@pytest.mark.slow
def test_first_release_of_each_package_is_the_version_in_the_repo(origin: Origin, world: World) -> None:
    """bump PACKAGE <its version> releases the untagged version as is: tag, changelog section, no version change."""
    assert sorted(git(origin.repo, "tag").split()) == sorted(f"{d}-v{v}" for d, v in FIRST.items())
    assert [p.name for p in origin.files] == sorted(
        f"{d.replace('-', '_')}-{v}{ext}" for d, v in FIRST.items() for ext in ("-py3-none-any.whl", ".tar.gz")
    )
    for folder, (dist_name, version) in zip(("core", "hooks-model", "hooks-logging", "hooks-export"), FIRST.items()):
        changed = git(origin.repo, "show", "--name-only", "--format=", f"{dist_name}-v{version}^{{commit}}").split()
        assert changed == [f"packages/{folder}/CHANGELOG.md"], changed  # the version file already held it
        assert release.changelog_section(origin.repo / "packages" / folder / "CHANGELOG.md", release.Version(version))
    assert "git push origin classy-hooks-core-v1.0.0" in origin.first_release_output[0]
    assert tools_release(origin.repo, "check").returncode == 0
    assert world.index.projects().keys() == {"classy-hooks-core", *HOOK_PACKAGES}
    assert assert_hooks_load(world.venv) == 13  # 3 model + 7 logging + 3 export hooks


@pytest.mark.slow
def test_patch_then_minor_release_of_one_hook_package_upgrades_only_it(world: World) -> None:
    add_changelog_entry(world.repo, "hooks-model", "### Fixed\n- A fix.")
    world.release("classy-hooks-model", "patch")
    version_file = world.repo / "packages/hooks-model/src/classy_hooks/model/_version.py"
    assert version_file.read_text().endswith('__version__ = "0.1.1"\n')  # hatchling version keeps the file's format
    ruff = subprocess.run([Path(sys.executable).with_name("ruff"), "check", version_file], capture_output=True)
    assert ruff.returncode == 0, ruff.stdout  # the release commit keeps ./tools/test green (W292 and all)
    assert git(world.repo, "status", "--porcelain") == ""
    assert git(world.repo, "describe", "--exact-match", "HEAD").strip() == "classy-hooks-model-v0.1.1"

    up = pip_upgrade(world.venv, "pip install -U classy-hooks-model")
    assert (up.returncode, up.changed, up.consistent) == (0, {"classy-hooks-model": ("0.1.0", "0.1.1")}, True)

    # What the publish workflow runs on the pushed tag: build + checks, and the forge release's notes.
    ci = tools_release(world.repo, "ci-build", "classy-hooks-model-v0.1.1", "--outdir", str(world.dist / "ci"))
    assert ci.returncode == 0 and sorted(p.name for p in (world.dist / "ci").iterdir()) == [
        "classy_hooks_model-0.1.1-py3-none-any.whl", "classy_hooks_model-0.1.1.tar.gz"
    ]  # fmt: skip
    assert tools_release(world.repo, "notes", "classy-hooks-model-v0.1.1").stdout == "### Fixed\n- A fix.\n"
    wrong = tools_release(world.repo, "ci-build", "classy-hooks-model-v0.1.2")
    assert wrong.returncode == 1 and "but the tagged commit holds 0.1.1" in wrong.stderr

    add_changelog_entry(world.repo, "hooks-logging", "### Added\n- A feature.")
    world.release("logging", "minor")
    up = pip_upgrade(world.venv, "pip install -U classy-hooks-logging")
    assert (up.returncode, up.changed, up.consistent) == (0, {"classy-hooks-logging": ("0.1.0", "0.2.0")}, True)
    assert tools_release(world.repo, "check").returncode == 0
    assert assert_hooks_load(world.venv) == 13


@pytest.mark.slow
def test_core_minor_release_keeps_every_installed_sibling_consistent(world: World) -> None:
    add_changelog_entry(world.repo, "core", "### Added\n- A new helper for hooks.")
    world.release("classy-hooks-core", "minor")
    assert git(world.repo, "show", "--name-only", "--format=", "HEAD").split() == [
        "packages/core/CHANGELOG.md",
        "packages/core/src/classy_hooks/core/_version.py",
    ]  # siblings untouched: >=1.0,<2 admits 1.1.0

    up = pip_upgrade(world.venv, "pip install -U classy-hooks-core")
    assert (up.returncode, up.changed, up.consistent) == (0, {"classy-hooks-core": ("1.0.0", "1.1.0")}, True)

    # A sibling that uses the new API raises its own floor in its own release.
    pyproject = world.repo / "packages/hooks-export/pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"classy-hooks-core>=1.0,<2"', '"classy-hooks-core>=1.1,<2"'))
    add_changelog_entry(world.repo, "hooks-export", "### Changed\n- Uses the new core helper: core>=1.1.")
    world.release("export", "minor")

    world.venv.pip("install", "classy-hooks-core==1.0.0")  # back to a user who never upgraded core
    up = pip_upgrade(world.venv, "pip install -U classy-hooks-export")
    assert up.returncode == 0 and up.consistent
    assert up.changed == {"classy-hooks-core": ("1.0.0", "1.1.0"), "classy-hooks-export": ("0.1.0", "0.2.0")}

    # A user who holds core back keeps the export release that admits it; one who asks for both gets pip's
    # resolver error. Either way the venv stays consistent.
    world.venv.pip("install", "classy-hooks-core==1.0.0", "classy-hooks-export==0.1.0")
    up = pip_upgrade(world.venv, "pip install -U classy-hooks-export classy-hooks-core==1.0.0")
    assert (up.returncode, up.changed, up.consistent) == (0, {}, True)
    up = pip_upgrade(world.venv, "pip install -U 'classy-hooks-export>=0.2' classy-hooks-core==1.0.0")
    assert up.returncode == 1 and "ResolutionImpossible" in up.output
    assert (up.changed, up.consistent) == ({}, True)
    assert assert_hooks_load(world.venv) == 13


@pytest.mark.slow
def test_breaking_core_is_one_coordinated_release_and_pip_cannot_protect_a_partial_upgrade(world: World) -> None:
    """The policy's reason, shown: pip -U of one package ignores the installed siblings' ranges."""
    add_changelog_entry(world.repo, "core", "### Removed\n- A breaking removal.")
    head = git(world.repo, "rev-parse", "HEAD")
    refused = tools_release(world.repo, "bump", "classy-hooks-core", "major")
    assert refused.returncode == 1 and "add --coordinated" in refused.stderr
    assert git(world.repo, "rev-parse", "HEAD") == head and git(world.repo, "status", "--porcelain") == ""

    files = world.release("classy-hooks-core", "major", "--coordinated")
    assert len(files) == 8
    assert git(world.repo, "tag", "--points-at", "HEAD").split() == sorted(
        ["classy-hooks-core-v2.0.0"] + [f"{d}-v0.2.0" for d in HOOK_PACKAGES]
    )
    assert tools_release(world.repo, "check").returncode == 0
    old = " ".join(f"{name}=={version}" for name, version in FIRST.items())

    outcomes = {}
    for name in FIRST:
        world.venv.shell(f"pip install {old}")
        outcomes[name] = up = pip_upgrade(world.venv, f"pip install -U {name}")
        assert up.returncode == 0 and not up.consistent  # pip says so itself, and exits 0:
        assert "pip's dependency resolver does not currently take into account all the packages" in up.output
        left_behind = [d for d in HOOK_PACKAGES if d != name]
        for sibling in left_behind:
            assert f"{sibling} 0.1.0 has requirement classy-hooks-core<2,>=1.0, but you have classy-hooks-core 2.0.0" in (
                up.check_output
            )
    assert outcomes["classy-hooks-core"].changed == {"classy-hooks-core": ("1.0.0", "2.0.0")}
    assert outcomes["classy-hooks-model"].changed == {
        "classy-hooks-core": ("1.0.0", "2.0.0"),
        "classy-hooks-model": ("0.1.0", "0.2.0"),
    }

    # What RELEASING.md tells users to run across a breaking core: every classy-hooks package at once.
    world.venv.shell(f"pip install {old}")
    up = pip_upgrade(world.venv, "pip install -U $(pip list --format=freeze | grep -o '^classy-hooks-[a-z]*')")
    assert up.returncode == 0 and up.consistent
    assert up.changed == {"classy-hooks-core": ("1.0.0", "2.0.0"), **{d: ("0.1.0", "0.2.0") for d in HOOK_PACKAGES}}
    assert assert_hooks_load(world.venv) == 13
