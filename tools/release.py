#!/usr/bin/env python3
"""Release one classy-hooks package, build and check wheels, and check inter-package ranges.

Each package under `packages/` is released on its own. Its version lives only in
`src/classy_hooks/<name>/_version.py` (hatch reads it), its changelog in its folder, and its tag is
`<distribution>-v<version>`.

    tools/release.py check                                # every sibling range admits the in-repo versions
    tools/release.py build [PACKAGE ...] [--outdir DIR]   # build wheel + sdist and check their metadata
    tools/release.py bump PACKAGE {major,minor,patch,X.Y.Z} [--dry-run] [--outdir DIR]

PACKAGE is a distribution name (`classy-hooks-logging`), a folder (`hooks-logging`) or an import
name (`logging`). `bump` refuses a version that a sibling's range (`classy-hooks-core>=0.1,<0.2`)
does not admit, rolls the version and the changelog (`## Unreleased` becomes `## [X.Y.Z] - date`
under a fresh `## Unreleased`), builds the wheel and the sdist, checks what was built and prints
the tag to create. `--dry-run` does all of that on a temporary copy and leaves the repo untouched.

Builds run `python -m hatchling build` with the hatchling of the running interpreter (no build
environment, nothing downloaded); `--builder hatch` runs `hatch build` instead, which creates its
own build environment.
"""

from __future__ import annotations

import argparse
import datetime
import email.message
import email.parser
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomllib
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINT_GROUP = "classy_hooks.hooks"
VERSION_RE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']\s*$""", re.MULTILINE)
UNRELEASED_RE = re.compile(r"^##[ \t]*\[?unreleased\]?[ \t]*$", re.IGNORECASE | re.MULTILINE)
PARTS = ("major", "minor", "patch")


class Req(Requirement):
    """A requirement that remembers how pyproject.toml spells it (packaging reorders specifiers)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text.strip()

    def __str__(self) -> str:
        return self.text


class ReleaseError(Exception):
    """A problem the person releasing must fix; the message says what and how."""


@dataclass
class Package:
    folder: Path
    dist: str
    import_name: str
    version_file: Path
    version: Version
    requires_python: str
    dependencies: list[Requirement]
    extras: dict[str, list[Requirement]]
    entry_points: dict[str, str]
    project: dict[str, object] = field(repr=False)

    @property
    def tag(self) -> str:
        return tag_name(self.dist, self.version)

    @property
    def changelog(self) -> Path:
        return self.folder / "CHANGELOG.md"

    @property
    def readme(self) -> Path:
        return self.folder / "README.md"

    def all_requirements(self) -> Iterable[tuple[str | None, Requirement]]:
        for req in self.dependencies:
            yield None, req
        for extra, reqs in self.extras.items():
            for req in reqs:
                yield extra, req


def tag_name(dist: str, version: Version | str) -> str:
    return f"{dist}-v{version}"


def _parse_requirements(where: str, items: object) -> list[Requirement]:
    if not isinstance(items, list):
        raise ReleaseError(f"{where}: expected a list of requirement strings")
    out: list[Requirement] = []
    for item in items:
        try:
            out.append(Req(str(item)))
        except InvalidRequirement as exc:
            raise ReleaseError(f"{where}: invalid requirement {item!r}: {exc}") from exc
    return out


def read_version(version_file: Path) -> Version:
    if not version_file.is_file():
        raise ReleaseError(f"{version_file}: the version file named by [tool.hatch.version] path does not exist")
    found = VERSION_RE.findall(version_file.read_text())
    if len(found) != 1:
        raise ReleaseError(f'{version_file}: expected exactly one line `__version__ = "X.Y.Z"`, found {len(found)}')
    try:
        return Version(found[0])
    except InvalidVersion as exc:
        raise ReleaseError(f"{version_file}: {found[0]!r} is not a valid version") from exc


def load_package(folder: Path) -> Package:
    pyproject = folder / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())
    project = data.get("project", {})
    dist = project.get("name")
    if not dist:
        raise ReleaseError(f"{pyproject}: [project] name is missing")
    if "version" in project or "version" not in project.get("dynamic", []):
        raise ReleaseError(
            f'{pyproject}: the version must come from one place: set dynamic = ["version"] and no version'
        )
    version_path = data.get("tool", {}).get("hatch", {}).get("version", {}).get("path")
    if not version_path:
        raise ReleaseError(f"{pyproject}: [tool.hatch.version] path is missing (the single version source)")
    version_file = folder / version_path
    parts = Path(version_path).parts
    if len(parts) < 4 or parts[:2] != ("src", "classy_hooks"):
        raise ReleaseError(f"{pyproject}: version path {version_path!r} is not src/classy_hooks/<name>/_version.py")
    extras = {
        str(name): _parse_requirements(f"{pyproject} [project.optional-dependencies] {name}", reqs)
        for name, reqs in project.get("optional-dependencies", {}).items()
    }
    entry_points = dict(project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {}))
    return Package(
        folder=folder,
        dist=str(dist),
        import_name=parts[2],
        version_file=version_file,
        version=read_version(version_file),
        requires_python=str(project.get("requires-python", "")),
        dependencies=_parse_requirements(f"{pyproject} [project] dependencies", project.get("dependencies", [])),
        extras=extras,
        entry_points={str(k): str(v) for k, v in entry_points.items()},
        project=project,
    )


def load_packages(root: Path) -> dict[str, Package]:
    folders = sorted(p.parent for p in (root / "packages").glob("*/pyproject.toml"))
    if not folders:
        raise ReleaseError(f"no packages/*/pyproject.toml under {root}")
    packages: dict[str, Package] = {}
    for folder in folders:
        pkg = load_package(folder)
        packages[canonicalize_name(pkg.dist)] = pkg
    return packages


def find_package(packages: dict[str, Package], name: str) -> Package:
    for pkg in packages.values():
        if canonicalize_name(name) == canonicalize_name(pkg.dist) or name in (pkg.folder.name, pkg.import_name):
            return pkg
    known = ", ".join(f"{p.dist} ({p.folder.name})" for p in packages.values())
    raise ReleaseError(f"unknown package {name!r}; known: {known}")


# ----------------------------------------------------------------------------- ranges


def _bounds_problem(spec: SpecifierSet) -> str | None:
    """None for a tight range: a lower bound and an upper bound within one compatible series.

    Compatible series follow SemVer as pip reads it: 0.1.x for 0.x versions, 1.x for 1.0 and later.
    So `>=0.1,<0.2` and `>=1.2,<2` are tight; `>=0.1`, `<0.2` and `>=0.1,<1` are not.
    """
    lowers = [Version(s.version) for s in spec if s.operator in {">=", ">", "~=", "==", "==="}]
    uppers = [Version(s.version) for s in spec if s.operator in {"<", "<="}]
    for s in spec:
        if s.operator == "~=":  # ~=0.1.2 means >=0.1.2,<0.2 ; ~=1.2 means >=1.2,<2
            release = Version(s.version).release
            uppers.append(Version(".".join(map(str, [*release[:-2], release[-2] + 1]))))
        elif s.operator in {"==", "==="} and "*" not in s.version:
            uppers.append(Version(s.version))
    if not lowers or not uppers:
        return "is not a tight range: it needs a lower and an upper bound, e.g. >=0.1,<0.2"
    low, high = max(lowers), min(uppers)
    major, minor = ([*low.release, 0])[:2]
    limit = Version(f"0.{minor + 1}") if major == 0 else Version(f"{major + 1}")
    if high > limit:
        return f"spans more than one compatible series: keep the upper bound at or below {limit}"
    return None


def range_problems(packages: dict[str, Package], versions: dict[str, Version] | None = None) -> list[str]:
    """Every requirement of a package on a sibling must be bounded and admit the sibling's version.

    `versions` overrides in-repo versions (used to ask "would this bump break a sibling?").
    """
    versions = {**{k: p.version for k, p in packages.items()}, **(versions or {})}
    problems = []
    for pkg in packages.values():
        for extra, req in pkg.all_requirements():
            key = canonicalize_name(req.name)
            if key not in packages or key == canonicalize_name(pkg.dist):
                continue
            where = f"{pkg.dist} requires '{req}'" + (f" (extra '{extra}')" if extra else "")
            bound = _bounds_problem(req.specifier)
            if bound:
                problems.append(f"{where}: the range {bound}")
            sibling_version = versions[key]
            if not req.specifier.contains(sibling_version, prereleases=True):
                problems.append(
                    f"{where}, which does not admit {packages[key].dist} {sibling_version} (the version in this repo)"
                )
    return problems


def package_problems(packages: dict[str, Package], root: Path) -> list[str]:
    """Per-package release conventions: changelog, entry-point names unique across packages, tags."""
    problems = []
    owners: dict[str, str] = {}
    for pkg in packages.values():
        if not pkg.changelog.is_file():
            problems.append(f"{pkg.dist}: {pkg.changelog} is missing")
        elif not UNRELEASED_RE.search(pkg.changelog.read_text()):
            problems.append(f"{pkg.dist}: {pkg.changelog} has no '## Unreleased' section")
        for hook in pkg.entry_points:
            if hook in owners:
                problems.append(f"hook name {hook!r} is declared by both {owners[hook]} and {pkg.dist}")
            owners[hook] = pkg.dist
        released = released_versions(root, pkg.dist)
        if released and max(released) > pkg.version:
            problems.append(
                f"{pkg.dist}: tag {tag_name(pkg.dist, max(released))} is newer than the version in the repo "
                f"({pkg.version})"
            )
    return problems


def released_versions(root: Path, dist: str) -> list[Version]:
    """Versions of `dist` tagged in git (`<dist>-v<version>`); empty outside a git checkout."""
    if not (root / ".git").exists():
        return []
    out = subprocess.run(
        ["git", "-C", str(root), "tag", "--list", f"{dist}-v*"], capture_output=True, text=True, check=False
    )
    versions = []
    for line in out.stdout.split():
        try:
            versions.append(Version(line[len(dist) + 2 :]))
        except InvalidVersion:
            continue
    return versions


def cmd_check(root: Path) -> int:
    packages = load_packages(root)
    problems = range_problems(packages) + package_problems(packages, root)
    for pkg in packages.values():
        sib = [
            f"{r}"
            for _, r in pkg.all_requirements()
            if canonicalize_name(r.name) in packages and canonicalize_name(r.name) != canonicalize_name(pkg.dist)
        ]
        print(f"{pkg.dist} {pkg.version}" + (f"  requires {', '.join(sib)}" if sib else ""))
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 1
    print("ok: every inter-package range admits the versions in this repo")
    return 0


# ----------------------------------------------------------------------------- version + changelog


def next_version(current: Version, how: str) -> Version:
    if how in PARTS:
        major, minor, patch = ([*list(current.release), 0, 0])[:3]
        if current.is_prerelease and how == "patch":
            return Version(f"{major}.{minor}.{patch}")
        if how == "major":
            return Version(f"{major + 1}.0.0")
        if how == "minor":
            return Version(f"{major}.{minor + 1}.0")
        return Version(f"{major}.{minor}.{patch + 1}")
    try:
        new = Version(how)
    except InvalidVersion as exc:
        raise ReleaseError(f"{how!r} is neither major, minor, patch nor a valid version") from exc
    if new <= current:
        raise ReleaseError(f"the new version {new} must be greater than the current version {current}")
    if new.local:
        raise ReleaseError(f"{new} has a local version label (+...), which package indexes refuse")
    return new


def rolled_changelog(text: str, version: Version, date: str, path: Path) -> str:
    match = UNRELEASED_RE.search(text)
    if not match:
        raise ReleaseError(f"{path}: no '## Unreleased' section to turn into the {version} section")
    if re.search(rf"^##\s*\[?{re.escape(str(version))}\]?(\s|$)", text, re.MULTILINE):
        raise ReleaseError(f"{path}: already has a section for {version}")
    rest = text[match.end() :]
    nxt = re.search(r"^##\s", rest, re.MULTILINE)
    body = rest[: nxt.start()] if nxt else rest
    if not any(line.strip() and not line.lstrip().startswith("#") for line in body.splitlines()):
        raise ReleaseError(
            f"{path}: '## Unreleased' is empty; list the changes of this release under it before releasing"
        )
    return text[: match.start()] + f"## Unreleased\n\n## [{version}] - {date}" + rest


def write_version(pkg: Package, version: Version) -> None:
    text = pkg.version_file.read_text()
    pkg.version_file.write_text(VERSION_RE.sub(f'__version__ = "{version}"', text, count=1))


# ----------------------------------------------------------------------------- build


def build(pkg: Package, outdir: Path, builder: str = "hatchling") -> tuple[Path, Path]:
    """Build the wheel and the sdist of `pkg` into `outdir`; returns (wheel, sdist)."""
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="classy-hooks-build-") as tmp:
        if builder == "hatch":
            hatch = shutil.which("hatch", path=str(Path(sys.executable).parent)) or shutil.which("hatch")
            if not hatch:
                raise ReleaseError("--builder hatch: no `hatch` executable found")
            cmd = [hatch, "build", "-t", "wheel", "-t", "sdist", tmp]
        else:
            cmd = [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-t", "sdist", "-d", tmp]
        proc = subprocess.run(cmd, cwd=pkg.folder, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ReleaseError(f"building {pkg.dist} failed ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")
        wheels = list(Path(tmp).glob("*.whl"))
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if len(wheels) != 1 or len(sdists) != 1:
            raise ReleaseError(f"building {pkg.dist}: expected one wheel and one sdist, got {wheels + sdists}")
        moved = []
        for artifact in (wheels[0], sdists[0]):
            target = outdir / artifact.name
            if target.exists():
                target.unlink()
            moved.append(Path(shutil.move(str(artifact), target)))
    return moved[0], moved[1]


# ----------------------------------------------------------------------------- metadata checks


def _req_key(req: Requirement) -> tuple[str, tuple[str, ...], str, str]:
    return (canonicalize_name(req.name), tuple(sorted(req.extras)), str(req.specifier), str(req.marker or ""))


_EXTRA_CLAUSE = re.compile(r"""\s*(?:and\s+)?\(?\s*extra\s*==\s*["']([^"']+)["']\s*\)?\s*(?:and\s+)?""")


def _split_extra(req: Requirement) -> tuple[str | None, Requirement]:
    """('tensorboard', tensorboardX>=2.6) for `tensorboardX>=2.6; extra == "tensorboard"`."""
    if req.marker is None:
        return None, req
    marker = str(req.marker)
    found = _EXTRA_CLAUSE.search(marker)
    if not found:
        return None, req
    rest = (marker[: found.start()] + " " + marker[found.end() :]).strip()
    rest = re.sub(r"^\(\s*(.*)\s*\)$", r"\1", rest).strip()
    plain = Requirement(str(req).split(";", 1)[0] + (f"; {rest}" if rest else ""))
    return canonicalize_name(found.group(1)), plain


def _markdown_problems(text: str, what: str) -> list[str]:
    """The README is the PyPI page: it must render and its links must work there (no relative links)."""
    problems = []
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # the regex fallback catches the same mistakes less precisely
        links = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)", text)
        heading = bool(re.search(r"^#\s+\S", text, re.MULTILINE))
    else:
        tokens = MarkdownIt("commonmark").enable("table").parse(text)
        heading = any(t.type == "heading_open" and t.tag == "h1" for t in tokens)
        links = []
        for tok in tokens:
            for child in tok.children or []:
                if child.type == "link_open":
                    links.append(str(child.attrs.get("href", "")))
                elif child.type == "image":
                    links.append(str(child.attrs.get("src", "")))
    if not heading:
        problems.append(f"{what}: has no top-level '# ' heading to title the project page")
    for link in links:
        if not re.match(r"^(https?://|mailto:|#)", link):
            problems.append(f"{what}: link {link!r} is relative and will be broken on the package index page")
    return problems


def _expanded_extra(pkg: Package, extra: str, seen: frozenset[str] = frozenset()) -> list[Requirement]:
    """An extra's requirements with self-references (`all = ["<dist>[a,b]"]`) expanded, as hatchling writes them."""
    out = []
    for req in pkg.extras.get(extra, []):
        if canonicalize_name(req.name) != canonicalize_name(pkg.dist):
            out.append(req)
            continue
        for inner in sorted(req.extras):
            if inner not in seen and inner != extra:
                out += _expanded_extra(pkg, inner, seen | {extra})
    return out


def _check_metadata(pkg: Package, meta: email.message.Message, version: Version, readme: str, what: str) -> list[str]:
    problems = []

    def expect(field_name: str, want: str) -> None:
        got = meta.get(field_name)
        if got != want:
            problems.append(f"{what}: {field_name} is {got!r}, expected {want!r}")

    expect("Name", pkg.dist)
    expect("Version", str(version))
    if pkg.requires_python:
        expect("Requires-Python", pkg.requires_python)
    if not (meta.get("Summary") or "").strip():
        problems.append(f"{what}: Summary (the project's one-line description) is empty")
    if not (meta.get("License-Expression") or meta.get("License")):
        problems.append(f"{what}: no License-Expression")

    want_extras = {canonicalize_name(e) for e in pkg.extras}
    got_extras = {canonicalize_name(e) for e in meta.get_all("Provides-Extra") or []}
    if got_extras != want_extras:
        problems.append(f"{what}: Provides-Extra is {sorted(got_extras)}, expected {sorted(want_extras)}")
    want_reqs: set[tuple[str | None, tuple[str, tuple[str, ...], str, str]]]
    want_reqs = {(None, _req_key(r)) for r in pkg.dependencies}
    want_reqs |= {(canonicalize_name(e), _req_key(r)) for e in pkg.extras for r in _expanded_extra(pkg, e)}
    got_reqs = set()
    for line in meta.get_all("Requires-Dist") or []:
        extra, req = _split_extra(Requirement(line))
        got_reqs.add((extra, _req_key(req)))
    for extra, key in sorted(got_reqs - want_reqs, key=str):
        problems.append(f"{what}: unexpected Requires-Dist {key[0]}{key[2]}" + (f" (extra {extra})" if extra else ""))
    for extra, key in sorted(want_reqs - got_reqs, key=str):
        problems.append(f"{what}: missing Requires-Dist {key[0]}{key[2]}" + (f" (extra {extra})" if extra else ""))

    ctype = meta.get("Description-Content-Type") or ""
    if not ctype.startswith("text/markdown"):
        problems.append(
            f"{what}: Description-Content-Type is {ctype!r}; the README renders as Markdown only with text/markdown"
        )
    body = meta.get_payload()
    body = body if isinstance(body, str) else ""
    if body.strip() != readme.strip():
        problems.append(f"{what}: the long description is not the package README.md")
    problems += _markdown_problems(body, f"{what} README")
    if not re.search(rf"pip install [^\n]*\b{re.escape(pkg.dist)}\b", body):
        problems.append(f"{what} README: no `pip install {pkg.dist}` line for a newcomer")
    return problems


def _parse_entry_points(text: str) -> dict[str, dict[str, str]]:
    groups: dict[str, dict[str, str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = groups.setdefault(line[1:-1].strip(), {})
        elif current is not None and "=" in line:
            name, value = line.split("=", 1)
            current[name.strip()] = value.strip()
    return groups


def check_wheel(pkg: Package, wheel: Path, version: Version) -> list[str]:
    what = wheel.name
    problems = []
    stem = f"{pkg.dist.replace('-', '_')}-{version}-"
    if not wheel.name.startswith(stem) or not wheel.name.endswith("-py3-none-any.whl"):
        problems.append(f"{what}: expected a pure-Python wheel named {stem}py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = [n for n in names if re.match(r"[^/]+\.dist-info/METADATA$", n)]
        if len(info) != 1:
            return [*problems, f"{what}: expected one .dist-info/METADATA, found {info}"]
        dist_info = info[0].split("/")[0]
        meta = email.parser.Parser().parsestr(zf.read(info[0]).decode())
        eps_name = f"{dist_info}/entry_points.txt"
        eps = _parse_entry_points(zf.read(eps_name).decode()) if eps_name in names else {}
        sources = {n: zf.read(n).decode() for n in names if n.endswith(".py")}
    problems += _check_metadata(pkg, meta, version, pkg.readme.read_text(), what)

    base = f"classy_hooks/{pkg.import_name}/"
    for needed in ("__init__.py", "_version.py", "py.typed"):
        if base + needed not in names:
            problems.append(f"{what}: {base}{needed} is missing")
    if f"{base}_version.py" in sources and VERSION_RE.findall(sources[f"{base}_version.py"]) != [str(version)]:
        problems.append(f"{what}: {base}_version.py does not hold {version}")
    if "classy_hooks/__init__.py" in names:
        problems.append(f"{what}: ships classy_hooks/__init__.py, which breaks the shared namespace package")
    for name in names:
        if not (name.startswith(base) or name.startswith(dist_info + "/")):
            problems.append(f"{what}: unexpected file {name} (only {base} and the metadata belong in the wheel)")
        elif "__pycache__" in name or name.endswith(".pyc"):
            problems.append(f"{what}: contains compiled file {name}")

    got_eps = eps.get(ENTRY_POINT_GROUP, {})
    if got_eps != pkg.entry_points:
        problems.append(
            f"{what}: entry points [{ENTRY_POINT_GROUP}] are {got_eps}, pyproject declares {pkg.entry_points}"
        )
    for hook, target in sorted(got_eps.items()):
        module, _, attr = target.partition(":")
        path = module.replace(".", "/") + ".py"
        source = sources.get(path)
        if source is None:
            problems.append(f"{what}: entry point {hook!r} -> {target}: module file {path} is not in the wheel")
        elif not attr or not re.search(rf"^(class|def)\s+{re.escape(attr)}\b|^{re.escape(attr)}\s*=", source, re.M):
            problems.append(f"{what}: entry point {hook!r} -> {target}: {path} does not define {attr!r}")
    return problems


def check_sdist(pkg: Package, sdist: Path, wheel: Path, version: Version) -> list[str]:
    what = sdist.name
    problems = []
    top = f"{pkg.dist.replace('-', '_')}-{version}"
    if sdist.name != f"{top}.tar.gz":
        problems.append(f"{what}: expected the name {top}.tar.gz")
    with tarfile.open(sdist) as tf:
        members = tf.getnames()
        outside = [m for m in members if m != top and not m.startswith(top + "/")]
        if outside:
            problems.append(f"{what}: members outside {top}/: {outside[:5]}")
        rel = {m[len(top) + 1 :] for m in members if m.startswith(top + "/")}
        for needed in ("PKG-INFO", "pyproject.toml", "README.md", "CHANGELOG.md"):
            if needed not in rel:
                problems.append(f"{what}: {needed} is missing")
        junk = ("__pycache__" in m or m.endswith(".pyc") or m.startswith((".git/", ".venv/", "dist/")) for m in rel)
        for bad in sorted(m for m, is_junk in zip(rel, junk) if is_junk):
            problems.append(f"{what}: should not contain {bad}")
        if problems:
            return problems
        pkg_info = email.parser.Parser().parsestr(tf.extractfile(f"{top}/PKG-INFO").read().decode())  # type: ignore[union-attr]
        problems += _check_metadata(pkg, pkg_info, version, pkg.readme.read_text(), f"{what} PKG-INFO")
        # The sdist must be complete: a wheel built from it carries the same metadata and files.
        with tempfile.TemporaryDirectory(prefix="classy-hooks-sdist-") as tmp:
            tf.extractall(tmp, filter="data")
            src = Path(tmp) / top
            proc = subprocess.run(
                [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(Path(tmp) / "out")],
                cwd=src,
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                return [*problems, f"{what}: building a wheel from the sdist failed:\n{proc.stdout}{proc.stderr}"]
            rebuilt = next((Path(tmp) / "out").glob("*.whl"))
            if _wheel_fingerprint(rebuilt) != _wheel_fingerprint(wheel):
                problems.append(f"{what}: a wheel built from the sdist differs from {wheel.name} (files or metadata)")
    return problems


def _wheel_fingerprint(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return {n: zf.read(n) for n in zf.namelist() if not n.endswith("/RECORD")}


def build_and_check(pkg: Package, outdir: Path, version: Version, builder: str) -> tuple[Path, Path]:
    wheel, sdist = build(pkg, outdir, builder)
    problems = check_wheel(pkg, wheel, version) + check_sdist(pkg, sdist, wheel, version)
    if problems:
        raise ReleaseError(f"the built {pkg.dist} {version} has problems:\n  - " + "\n  - ".join(problems))
    return wheel, sdist


def cmd_build(root: Path, names: Sequence[str], outdir: Path, builder: str) -> int:
    packages = load_packages(root)
    chosen = [find_package(packages, n) for n in names] if names else list(packages.values())
    failures = []
    for pkg in chosen:
        try:
            wheel, sdist = build_and_check(pkg, outdir, pkg.version, builder)
        except ReleaseError as exc:
            failures.append(str(exc))
            continue
        print(f"{pkg.dist} {pkg.version}: {wheel} ({wheel.stat().st_size} bytes), {sdist.name}: metadata ok")
    if failures:
        raise ReleaseError("\n".join(failures))
    return 0


# ----------------------------------------------------------------------------- bump


def cmd_bump(root: Path, name: str, how: str, *, dry_run: bool, outdir: Path | None, builder: str, date: str) -> int:
    packages = load_packages(root)
    pkg = find_package(packages, name)
    new = next_version(pkg.version, how)
    key = canonicalize_name(pkg.dist)

    before = range_problems(packages)
    if before:
        raise ReleaseError("inter-package ranges are already broken; fix them first:\n  - " + "\n  - ".join(before))
    broken = [
        (other, req)
        for other in packages.values()
        if other is not pkg
        for _, req in other.all_requirements()
        if canonicalize_name(req.name) == key and not req.specifier.contains(new, prereleases=True)
    ]
    if broken:
        lines = "\n".join(f"  - {other.dist} requires '{req}'" for other, req in broken)
        raise ReleaseError(
            f"{pkg.dist} {new} would break the range of {len(broken)} sibling package(s) that depend on it:\n"
            f"{lines}\n"
            f"None of them admits {new}. Either release a version inside those ranges, or first widen the range "
            f"in each sibling's pyproject.toml (e.g. '{pkg.dist}>={new.major}.{new.minor},<"
            f"{new.major}.{new.minor + 1}' once it works with {new}) and release those siblings too."
        )
    if new in released_versions(root, pkg.dist):
        raise ReleaseError(f"tag {tag_name(pkg.dist, new)} already exists: {pkg.dist} {new} was released before")
    new_changelog = rolled_changelog(pkg.changelog.read_text(), new, date, pkg.changelog)

    if dry_run:
        with tempfile.TemporaryDirectory(prefix="classy-hooks-release-") as tmp:
            copy = Path(tmp) / pkg.folder.name
            shutil.copytree(pkg.folder, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "dist", "build"))
            work = load_package(copy)
            write_version(work, new)
            work.changelog.write_text(new_changelog)
            work = load_package(copy)
            wheel, sdist = build_and_check(work, outdir or Path(tmp) / "dist", new, builder)
            print(f"dry run: {pkg.dist} {pkg.version} -> {new}; nothing in {root} was changed")
            print(f'  would write {pkg.version_file.relative_to(root)}: __version__ = "{new}"')
            print(f"  would open '## [{new}] - {date}' in {pkg.changelog.relative_to(root)}")
            print(f"  built and checked {wheel.name} ({wheel.stat().st_size} bytes) and {sdist.name}")
        print(f"tag: {tag_name(pkg.dist, new)}")
        return 0

    old_version_text = pkg.version_file.read_text()
    old_changelog = pkg.changelog.read_text()
    try:
        write_version(pkg, new)
        pkg.changelog.write_text(new_changelog)
        bumped = load_package(pkg.folder)
        wheel, sdist = build_and_check(bumped, outdir or root / "dist", new, builder)
    except BaseException:
        pkg.version_file.write_text(old_version_text)
        pkg.changelog.write_text(old_changelog)
        raise
    folder = pkg.folder.relative_to(root)
    print(f"{pkg.dist} {pkg.version} -> {new}")
    print(f"  wrote {pkg.version_file.relative_to(root)} and {pkg.changelog.relative_to(root)}")
    print(f"  built and checked {wheel} ({wheel.stat().st_size} bytes) and {sdist}")
    print("next:")
    print(f"  git commit -m 'Release {pkg.dist} {new}' -- {folder}")
    print(f"  git tag -a {tag_name(pkg.dist, new)} -m '{pkg.dist} {new}'")
    print(f"tag: {tag_name(pkg.dist, new)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/release.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="check that every inter-package range admits the in-repo versions")
    b = sub.add_parser("build", help="build wheel + sdist of some or all packages and check their metadata")
    b.add_argument("packages", nargs="*", help="default: all")
    u = sub.add_parser("bump", help="release one package: bump, changelog, build, check, print the tag")
    u.add_argument("package")
    u.add_argument("version", help="major, minor, patch or an explicit version such as 0.1.3")
    u.add_argument("--dry-run", action="store_true", help="do everything on a temporary copy; change nothing")
    u.add_argument("--date", default=datetime.date.today().isoformat(), help="date of the changelog section")
    for p in (b, u):
        p.add_argument("--outdir", type=Path, help="where to put the wheel and sdist (default: <root>/dist)")
        p.add_argument("--builder", choices=("hatchling", "hatch"), default="hatchling")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.command == "check":
            return cmd_check(root)
        if args.command == "build":
            return cmd_build(root, args.packages, (args.outdir or root / "dist").resolve(), args.builder)
        outdir = args.outdir.resolve() if args.outdir else None
        return cmd_bump(
            root, args.package, args.version, dry_run=args.dry_run, outdir=outdir, builder=args.builder, date=args.date
        )
    except ReleaseError as exc:
        print(f"release: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
