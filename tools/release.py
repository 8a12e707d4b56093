#!/usr/bin/env python3
"""Release one classy-hooks package at a time: check sibling ranges, bump, build, check, commit and tag.

    tools/release check                          sibling ranges, changelogs, entry-point names, tags
    tools/release build [PACKAGE ...]            build sdist + wheel (python -m build) and check them
    tools/release bump PACKAGE HOW [--dry-run] [--coordinated]
    tools/release ci-build TAG [--outdir DIR]    what .github/workflows/release.yml runs for a pushed tag
    tools/release notes TAG                      the changelog section of a released version

HOW is major, minor, patch (hatchling's version scheme) or an explicit version; the version already in
the repo is accepted when it was never tagged (a package's first release). PACKAGE is a distribution
(`classy-hooks-logging`), a folder (`hooks-logging`) or an import name (`logging`). See RELEASING.md.

The standard tools do the standard work: `python -m build` (the wheel is built from the sdist),
`twine check --strict`, `check-wheel-contents`, `hatchling version` (what `hatch version` runs). This
file keeps only what no tool checks: ranges between our own packages, entry points that resolve to
a definition in the wheel, and a changelog section for the released version.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import datetime
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINT_GROUP = "classy_hooks.hooks"
VERSION_RE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)
UNRELEASED_RE = re.compile(r"^##[ \t]*\[?unreleased\]?[ \t]*$", re.IGNORECASE | re.MULTILINE)


class ReleaseError(Exception):
    """A problem the person releasing must fix; the message says what and how."""


@dataclass
class Package:
    """One distribution under packages/: what its pyproject.toml and version file say."""

    folder: Path
    dist: str
    import_name: str
    version_file: Path
    version: Version
    requirements: list[tuple[str, Requirement]]  # (requirement as written in pyproject.toml, parsed)

    @property
    def key(self) -> str:
        return canonicalize_name(self.dist)

    @property
    def changelog(self) -> Path:
        return self.folder / "CHANGELOG.md"

    def tag(self, version: Version | None = None) -> str:
        return f"{self.dist}-v{version or self.version}"


def load_package(folder: Path) -> Package:
    data = tomllib.loads((folder / "pyproject.toml").read_text())
    project = data["project"]
    version_path = data.get("tool", {}).get("hatch", {}).get("version", {}).get("path")
    if not version_path or "version" not in project.get("dynamic", []):
        raise ReleaseError(f"{folder}/pyproject.toml: the version must be dynamic, from [tool.hatch.version] path")
    texts = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        texts += extra
    version_file = folder / version_path
    found = VERSION_RE.findall(version_file.read_text())
    if len(found) != 1:
        raise ReleaseError(f'{version_file}: expected one line `__version__ = "X.Y.Z"`, found {len(found)}')
    return Package(
        folder=folder,
        dist=project["name"],
        import_name=Path(version_path).parts[2],
        version_file=version_file,
        version=Version(found[0]),
        requirements=[(text, Requirement(text)) for text in texts],
    )


def load_packages(root: Path) -> dict[str, Package]:
    packages = [load_package(p.parent) for p in sorted((root / "packages").glob("*/pyproject.toml"))]
    if not packages:
        raise ReleaseError(f"no packages/*/pyproject.toml under {root}")
    return {p.key: p for p in packages}


def find_package(packages: dict[str, Package], name: str) -> Package:
    for pkg in packages.values():
        if canonicalize_name(name) == pkg.key or name in (pkg.folder.name, pkg.import_name):
            return pkg
    known = ", ".join(f"{p.dist} ({p.folder.name})" for p in packages.values())
    raise ReleaseError(f"unknown package {name!r}; known: {known}")


def sibling_requirements(pkg: Package, packages: dict[str, Package]) -> Iterable[tuple[str, Requirement]]:
    """pkg's requirements on the other packages of this repo (self-references of extras excluded)."""
    for text, req in pkg.requirements:
        if canonicalize_name(req.name) in packages and canonicalize_name(req.name) != pkg.key:
            yield text, req


# ----------------------------------------------------------------------------- ranges between our packages


def series_problem(spec: SpecifierSet) -> str | None:
    """None when `spec` has a lower bound and stays within one compatible series (0.X.* below 1.0, X.* after)."""
    lowers = [Version(s.version) for s in spec if s.operator in {">=", ">", "~=", "=="}]
    uppers = [Version(s.version) for s in spec if s.operator in {"<", "<=", "=="}]
    for s in spec:
        if s.operator == "~=":  # ~=1.2 is >=1.2,<2 and ~=0.1.2 is >=0.1.2,<0.2
            release = Version(s.version).release
            uppers.append(Version(".".join(map(str, [*release[:-2], release[-2] + 1]))))
    if not lowers or not uppers:
        return "needs a lower and an upper bound, e.g. >=1.0,<2"
    major, minor = ([*max(lowers).release, 0])[:2]
    limit = Version(f"0.{minor + 1}") if major == 0 else Version(f"{major + 1}")
    if min(uppers) > limit:
        return f"spans more than one compatible series: keep the upper bound at or below {limit}"
    return None


def range_problems(packages: dict[str, Package]) -> list[str]:
    """Each requirement on a sibling is one series and admits the sibling's version in the repo."""
    problems = []
    for pkg in packages.values():
        for text, req in sibling_requirements(pkg, packages):
            where = f"{pkg.dist} requires '{text}'"
            if problem := series_problem(req.specifier):
                problems.append(f"{where}: the range {problem}")
            wanted = packages[canonicalize_name(req.name)].version
            if not req.specifier.contains(wanted, prereleases=True):
                problems.append(f"{where}, which does not admit {req.name} {wanted}")
    return problems


def convention_problems(packages: dict[str, Package], root: Path) -> list[str]:
    """A changelog with `## Unreleased` per package, hook names unique across packages, no tag ahead of the repo."""
    problems = []
    owners: dict[str, str] = {}
    for pkg in packages.values():
        if not pkg.changelog.is_file() or not UNRELEASED_RE.search(pkg.changelog.read_text()):
            problems.append(f"{pkg.dist}: {pkg.changelog} needs a '## Unreleased' section")
        pyproject = tomllib.loads((pkg.folder / "pyproject.toml").read_text())
        for hook in pyproject["project"].get("entry-points", {}).get(ENTRY_POINT_GROUP, {}):
            if hook in owners:
                problems.append(f"hook name {hook!r} is declared by both {owners[hook]} and {pkg.dist}")
            owners[hook] = pkg.dist
        released = released_versions(root, pkg)
        if released and max(released) > pkg.version:
            problems.append(f"{pkg.dist}: tag {pkg.tag(max(released))} is newer than the repo's {pkg.version}")
    return problems


# ----------------------------------------------------------------------------- git


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def released_versions(root: Path, pkg: Package) -> list[Version]:
    """Versions of pkg tagged `<dist>-v<version>` in git (none outside a git checkout)."""
    if not (root / ".git").exists():
        return []
    versions = []
    for tag in git(root, "tag", "--list", f"{pkg.dist}-v*").split():
        try:
            versions.append(Version(tag[len(pkg.dist) + 2 :]))
        except InvalidVersion:
            continue
    return versions


def refuse_dirty_tree(root: Path) -> None:
    status = git(root, "status", "--porcelain", "--untracked-files=all")
    if status.strip():
        raise ReleaseError(
            "the working tree has uncommitted changes; a release builds exactly what is committed. "
            f"Commit or remove them first:\n{status.rstrip()}"
        )


# ----------------------------------------------------------------------------- changelog


def rolled_changelog(text: str, version: Version, date: str, path: Path) -> str:
    """`## Unreleased` becomes `## [version] - date` under a fresh, empty `## Unreleased`."""
    match = UNRELEASED_RE.search(text)
    if not match:
        raise ReleaseError(f"{path}: no '## Unreleased' section to turn into the {version} section")
    if re.search(rf"^##\s*\[?{re.escape(str(version))}\]?(\s|$)", text, re.MULTILINE):
        raise ReleaseError(f"{path}: already has a section for {version}")
    rest = text[match.end() :]
    following = re.search(r"^##\s", rest, re.MULTILINE)
    body = rest[: following.start()] if following else rest
    if not any(line.strip() and not line.lstrip().startswith("#") for line in body.splitlines()):
        raise ReleaseError(f"{path}: '## Unreleased' is empty; list this release's changes under it first")
    return text[: match.start()] + f"## Unreleased\n\n## [{version}] - {date}" + rest


def changelog_section(path: Path, version: Version) -> str:
    """The text under `## [version]` (release notes), or a ReleaseError when it is missing or empty."""
    text = path.read_text()
    match = re.search(rf"^##\s*\[?{re.escape(str(version))}\]?(\s.*)?$", text, re.MULTILINE)
    if not match:
        raise ReleaseError(f"{path}: no '## [{version}]' section; release with tools/release bump")
    rest = text[match.end() :]
    following = re.search(r"^##\s", rest, re.MULTILINE)
    section = (rest[: following.start()] if following else rest).strip()
    if not section:
        raise ReleaseError(f"{path}: the '## [{version}]' section is empty")
    return section + "\n"


def with_changelog_entry(text: str, entry: str) -> str:
    """`entry` (a `### ...` block) inserted at the top of the `## Unreleased` section."""
    match = UNRELEASED_RE.search(text)
    if not match:
        raise ReleaseError(f"no '## Unreleased' section to record {entry!r} in")
    return text[: match.end()] + f"\n\n{entry.strip()}" + text[match.end() :]


# ----------------------------------------------------------------------------- build and check


def run_tool(cmd: Sequence[str | Path], cwd: Path | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ReleaseError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def wheel_problems(wheel: Path) -> list[str]:
    """No `classy_hooks/__init__.py` (the namespace the four packages share); every `classy_hooks.hooks` entry
    point names a module in the wheel that defines the attribute."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        problems = []
        if "classy_hooks/__init__.py" in names:
            hidden = "which hides the other classy-hooks packages"
            problems.append(f"{wheel.name}: ships classy_hooks/__init__.py, {hidden}")
        ep_file = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
        parser = configparser.ConfigParser(delimiters=("=",))
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep hook names as written
        if ep_file:
            parser.read_string(zf.read(ep_file).decode())
        targets = dict(parser.items(ENTRY_POINT_GROUP)) if parser.has_section(ENTRY_POINT_GROUP) else {}
        for hook, target in sorted(targets.items()):
            module, _, attr = target.partition(":")
            path = module.replace(".", "/") + ".py"
            if path not in names:
                problems.append(f"{wheel.name}: entry point {hook!r} -> {target}: {path} is not in the wheel")
                continue
            tree = ast.parse(zf.read(path))
            defined = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
            assigned = (t for n in tree.body if isinstance(n, ast.Assign) for t in n.targets)
            defined |= {t.id for t in assigned if isinstance(t, ast.Name)}
            if attr not in defined:
                problems.append(f"{wheel.name}: entry point {hook!r} -> {target}: {path} does not define {attr!r}")
    return problems


def build_and_check(pkg: Package, outdir: Path) -> tuple[Path, Path]:
    """sdist, then the wheel from it (`python -m build`); twine check --strict, check-wheel-contents, entry points.

    `--no-isolation` builds with the pinned hatchling of the release venv: reproducible and offline.
    """
    with tempfile.TemporaryDirectory(prefix="classy-hooks-build-") as tmp:
        run_tool([sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp, pkg.folder])
        stem = f"{pkg.dist.replace('-', '_')}-{pkg.version}"
        sdist, wheel = Path(tmp) / f"{stem}.tar.gz", Path(tmp) / f"{stem}-py3-none-any.whl"
        if sorted(Path(tmp).iterdir()) != sorted([sdist, wheel]):
            got = sorted(p.name for p in Path(tmp).iterdir())
            raise ReleaseError(f"{pkg.dist}: expected {sdist.name} and {wheel.name}, built {got}")
        run_tool([sys.executable, "-m", "twine", "check", "--strict", sdist, wheel])
        run_tool([sys.executable, "-m", "check_wheel_contents", "--toplevel", "classy_hooks",
                  "--package", pkg.folder / "src" / "classy_hooks", wheel])  # fmt: skip
        if problems := wheel_problems(wheel):
            raise ReleaseError("\n".join(problems))
        outdir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(sdist, outdir)), Path(shutil.copy2(wheel, outdir))


# ----------------------------------------------------------------------------- commands


def cmd_check(root: Path) -> int:
    packages = load_packages(root)
    for pkg in packages.values():
        sibs = [text for text, _ in sibling_requirements(pkg, packages)]
        line = f"{pkg.dist} {pkg.version}" + (f"  requires {', '.join(sibs)}" if sibs else "")
        if (root / ".git").exists() and pkg.version not in released_versions(root, pkg):
            line += f"  (untagged: `tools/release bump {pkg.dist} {pkg.version}` releases it as is)"
        print(line)
    problems = range_problems(packages) + convention_problems(packages, root)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print("ok: every inter-package range admits the versions in this repo")
    return 1 if problems else 0


def cmd_build(root: Path, names: Sequence[str], outdir: Path) -> int:
    packages = load_packages(root)
    for pkg in [find_package(packages, n) for n in names] or list(packages.values()):
        sdist, wheel = build_and_check(pkg, outdir)
        print(f"{pkg.dist} {pkg.version}: built and checked {sdist} and {wheel.name}")
    return 0


def cmd_ci_build(root: Path, tag: str, outdir: Path) -> int:
    """For the publish workflow: the tag names a package and its in-repo version; build and check it."""
    pkg, version = package_of_tag(root, tag)
    if version != pkg.version:
        raise ReleaseError(f"tag {tag} is {pkg.dist} {version}, but the tagged commit holds {pkg.version}")
    changelog_section(pkg.changelog, version)
    if problems := range_problems(load_packages(root)):
        raise ReleaseError("\n".join(problems))
    sdist, wheel = build_and_check(pkg, outdir)
    print(f"{pkg.dist} {version}: built and checked {sdist.name} and {wheel.name}")
    return 0


def package_of_tag(root: Path, tag: str) -> tuple[Package, Version]:
    for pkg in load_packages(root).values():
        if tag.startswith(f"{pkg.dist}-v"):
            try:
                return pkg, Version(tag[len(pkg.dist) + 2 :])
            except InvalidVersion as exc:
                raise ReleaseError(f"tag {tag}: {exc}") from exc
    raise ReleaseError(f"tag {tag} is not <distribution>-v<version> of a package in {root}/packages")


def next_version(pkg: Package, how: str, released: list[Version]) -> Version:
    """hatchling's answer to `hatch version HOW`; the in-repo version itself when it was never released."""
    from hatchling.version.scheme.standard import StandardScheme

    if how == str(pkg.version) and pkg.version not in released:
        return pkg.version
    try:
        new = Version(StandardScheme(str(pkg.folder), {}).update(how, str(pkg.version), {}))
    except (ValueError, InvalidVersion) as exc:
        raise ReleaseError(f"{pkg.dist} {pkg.version}: cannot release {how!r}: {exc}") from exc
    if new.local:
        raise ReleaseError(f"{new} has a local version label (+...), which package indexes refuse")
    return new


@dataclass
class Step:
    """One package of a release: its new version and, for a coordinated release, its rewritten core range."""

    pkg: Package
    version: Version
    new_requirement: tuple[str, str] | None = None  # (old text, new text) in pyproject.toml


def plan(root: Path, name: str, how: str, coordinated: bool) -> list[Step]:
    """What `bump` will release, refused early (before any file changes) when it would break a user."""
    packages = load_packages(root)
    pkg = find_package(packages, name)
    released = {key: released_versions(root, p) for key, p in packages.items()}
    new = next_version(pkg, how, released[pkg.key])
    if new in released[pkg.key]:
        raise ReleaseError(f"tag {pkg.tag(new)} exists: {pkg.dist} {new} was released before")
    steps = [Step(pkg, new)]
    outside = [
        (other, text) for other in packages.values() for text, req in sibling_requirements(other, packages)
        if canonicalize_name(req.name) == pkg.key and not req.specifier.contains(new, prereleases=True)
    ]  # fmt: skip
    if outside and not coordinated:
        lines = "\n".join(f"  - {other.dist} requires '{text}'" for other, text in outside)
        raise ReleaseError(
            f"{pkg.dist} {new} is outside the range of {len(outside)} sibling(s):\n{lines}\n"
            f"Under the policy (RELEASING.md) {pkg.dist} changes within {pkg.version.major}.x by additions only, "
            f"so release a minor or patch. A breaking {new} is a coordinated release of every sibling with "
            f"'{pkg.dist}>={new.major}.0,<{new.major + 1}': add --coordinated. pip cannot keep a user who then "
            f"upgrades only one package consistent; RELEASING.md says what users must run."
        )
    for other, text in outside:
        new_text = f"{pkg.dist}>={new.major}.{new.minor},<{new.major + 1}"
        steps.append(Step(other, next_version(other, "minor", released[other.key]), (text, new_text)))
    versions = {s.pkg.key: s.version for s in steps}
    new_ranges = {s.pkg.key: s.new_requirement for s in steps if s.new_requirement}
    for step in steps:  # every sibling range must admit a version users can actually get
        for text, req in sibling_requirements(step.pkg, packages):
            dep = canonicalize_name(req.name)
            rewritten = new_ranges.get(step.pkg.key)
            spec = Requirement(rewritten[1]).specifier if rewritten else req.specifier
            available = [*released[dep], *([versions[dep]] if dep in versions else [])]
            if not any(spec.contains(v, prereleases=True) for v in available):
                have = ", ".join(map(str, sorted(released[dep]))) or "none"
                raise ReleaseError(
                    f"{step.pkg.dist} requires '{text}', which no released {packages[dep].dist} admits "
                    f"(released: {have}): release {packages[dep].dist} first"
                )
    return steps


def apply(root: Path, steps: list[Step], date: str, outdir: Path) -> list[Path]:
    """Write versions, ranges and changelogs, build and check every package; restore the files on failure."""
    originals = {}
    try:
        for step in steps:
            for path in (step.pkg.version_file, step.pkg.changelog, step.pkg.folder / "pyproject.toml"):
                originals[path] = path.read_text()
            if step.new_requirement:
                old, new = step.new_requirement
                pyproject = step.pkg.folder / "pyproject.toml"
                pyproject.write_text(pyproject.read_text().replace(f'"{old}"', f'"{new}"'))
                lead = steps[0]
                entry = f"### Changed\n- Requires `{new}`: released together with {lead.pkg.dist} {lead.version}."
                step.pkg.changelog.write_text(with_changelog_entry(step.pkg.changelog.read_text(), entry))
            if step.version != step.pkg.version:
                run_tool([sys.executable, "-m", "hatchling", "version", str(step.version)], cwd=step.pkg.folder)
            changelog = step.pkg.changelog
            changelog.write_text(rolled_changelog(changelog.read_text(), step.version, date, changelog))
        packages = load_packages(root)
        if problems := range_problems(packages):
            raise ReleaseError("\n".join(problems))
        built: list[Path] = []
        for step in steps:
            built += build_and_check(packages[step.pkg.key], outdir)
        return built
    except BaseException:
        for path, text in originals.items():
            path.write_text(text)
        raise


def commit_and_tag(root: Path, steps: list[Step]) -> list[str]:
    files = [(s.pkg.version_file, s.pkg.changelog, s.pkg.folder / "pyproject.toml") for s in steps]
    paths = [str(path.relative_to(root)) for group in files for path in group]
    names = ", ".join(f"{s.pkg.dist} {s.version}" for s in steps)
    git(root, "add", "--", *paths)
    git(root, "commit", "--quiet", "-m", f"Release {names}", "--", *paths)
    tags = []
    for step in steps:
        tags.append(step.pkg.tag(step.version))
        git(root, "tag", "-a", tags[-1], "-m", f"{step.pkg.dist} {step.version}")
    return tags


def cmd_bump(
    root: Path, name: str, how: str, *, coordinated: bool, dry_run: bool, outdir: Path | None, date: str
) -> int:
    refuse_dirty_tree(root)
    if dry_run:
        with tempfile.TemporaryDirectory(prefix="classy-hooks-release-") as tmp:
            copy = Path(tmp) / "repo"
            git(root, "clone", "--quiet", str(root), str(copy))
            steps = plan(copy, name, how, coordinated)
            built = apply(copy, steps, date, outdir or Path(tmp) / "dist")
            for step in steps:
                tag = step.pkg.tag(step.version)
                print(f"would release {step.pkg.dist} {step.pkg.version} -> {step.version} (tag {tag})")
            print(f"built and checked {', '.join(p.name for p in built)}; nothing in {root} was changed")
        return 0
    steps = plan(root, name, how, coordinated)
    apply(root, steps, date, outdir or root / "dist")
    tags = commit_and_tag(root, steps)
    for step in steps:
        print(f"released {step.pkg.dist} {step.pkg.version} -> {step.version}")
    print(f"committed and tagged: {' '.join(tags)}")
    print("publish (one push per tag: GitHub starts no workflow for a push of more than three tags):")
    print("  git push origin HEAD")
    for tag in tags:
        print(f"  git push origin {tag}")
    if len(steps) > 1:
        print(
            f"users must upgrade every classy-hooks package at once across {steps[0].pkg.dist} {steps[0].version}: "
            "pip install -U $(pip list --format=freeze | grep -o '^classy-hooks-[a-z]*')  (see RELEASING.md)"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/release", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="sibling ranges, changelogs, hook names, tags")
    b = sub.add_parser("build", help="build and check the sdist and wheel of some or all packages")
    b.add_argument("packages", nargs="*", help="default: all")
    u = sub.add_parser("bump", help="release one package: version, changelog, build, check, commit, tag")
    u.add_argument("package")
    u.add_argument("how", help="major, minor, patch, or an explicit version (the repo's own when never released)")
    u.add_argument("--coordinated", action="store_true", help="a breaking core: also release every sibling")
    u.add_argument("--dry-run", action="store_true", help="do it all in a temporary clone; change nothing here")
    u.add_argument("--date", default=datetime.date.today().isoformat(), help="date of the changelog section")
    c = sub.add_parser("ci-build", help="build and check the package a pushed tag names")
    c.add_argument("tag")
    n = sub.add_parser("notes", help="print the changelog section of a tag's version")
    n.add_argument("tag")
    for p in (b, u, c):
        p.add_argument("--outdir", type=Path, help="where the sdist and wheel go (default: <root>/dist)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    outdir = args.outdir.resolve() if getattr(args, "outdir", None) else None
    try:
        if args.command == "check":
            return cmd_check(root)
        if args.command == "build":
            return cmd_build(root, args.packages, outdir or root / "dist")
        if args.command == "ci-build":
            return cmd_ci_build(root, args.tag, outdir or root / "dist")
        if args.command == "notes":
            pkg, version = package_of_tag(root, args.tag)
            print(changelog_section(pkg.changelog, version), end="")
            return 0
        return cmd_bump(root, args.package, args.how, coordinated=args.coordinated, dry_run=args.dry_run,
                        outdir=outdir, date=args.date)  # fmt: skip
    except ReleaseError as exc:
        print(f"release: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
