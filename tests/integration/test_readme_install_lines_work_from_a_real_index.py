"""Every install line of the root README works as printed, for a user, from a real package index.

The four packages are built fresh (`python -m build`: sdist, then the wheel from it) and uploaded with twine to a
pypiserver on 127.0.0.1 (tests/package_index.py). Each README line then runs, as printed, in a fresh
`python -m venv` with the venv's own pip (23.2.1 on Python 3.11) and pip's normal build isolation. Third-party
packages come from the machine's configured indexes, as a user's pip gets them; the local index is added with
PIP_EXTRA_INDEX_URL and torch is pinned to the local CPU wheel (torch==2.13.0, the declared floor) with
PIP_CONSTRAINT, because any other torch is a multi-GB CUDA download here.

torch is installed for real once (the core + model line, in an empty venv); the other lines' venvs are seeded with
hard links to that install of torch and its own requirements, so pip finds torch already satisfied. That cannot
hide a missing torch requirement: every distribution left in a venv must be required, transitively, by its install
line, and `pip check` must pass. After each line: the installed set (torch's own requirements aside) equals the
README table's, and a plain loop trains with every hook of the installed packages (a hook whose extra is missing
must say the README's command for it). A line the README says fails must fail and install nothing.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from package_index import ROOT, FreshVenv, LocalIndex
from visdom_server import VisdomServer

pytestmark = pytest.mark.slow

TORCH_PIN = "torch==2.13.0"
LOOP = Path(__file__).with_name("installed_hooks_loop.py")
#: A working config for every registered hook name ("{run_dir}" and "{visdom_port}" are filled in per run).
HOOK_CONFIGS: dict[str, dict[str, object]] = {
    "checkpoint": {"checkpoint_folder": "{run_dir}/checkpoints"},
    "ema_model_weights": {"decay": 0.9, "device": "cpu"},
    "precise_bn": {"num_samples": 16},
    "loss_lr_meter_logging": {"log_freq": 2},
    "progress_bar": {},
    "profiler": {},
    "tensorboard_plot": {"summary_writer": {"logdir": "{run_dir}/tb"}, "log_period": 1},
    "model_tensorboard": {"summary_writer": {"logdir": "{run_dir}/tb_model"}},
    "visdom": {"server": "http://127.0.0.1", "port": "{visdom_port}", "env": "install_line"},
    "model_complexity": {},
    "torchscript": {"torchscript_folder": "{run_dir}/torchscript"},
    "torch_export": {"export_folder": "{run_dir}/export"},
    "output_csv": {"folder": "{run_dir}/csv"},
}
#: What each hook leaves in the run folder when it ran (hooks that only log leave nothing to check here).
HOOK_OUTPUTS = {
    "checkpoint": "checkpoints",
    "tensorboard_plot": "tb",
    "model_tensorboard": "tb_model",
    "torchscript": "torchscript",
    "torch_export": "export",
    "output_csv": "csv",
}


@dataclass(frozen=True)
class InstallLine:
    """One row of the README's install table: the command as printed and what it must install (None: must fail)."""

    command: str
    installs: frozenset[str] | None


def readme_install_lines() -> list[InstallLine]:
    """The rows of the table under '### Install lines' in the root README."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Install lines", 1)[1].split("\n## ", 1)[0]
    lines = []
    for row in re.findall(r"^\| `([^`]+)` \| ([^|]+) \|$", section, re.M):
        command, installs = row[0], row[1].strip()
        names = None if installs.startswith("fails") else frozenset(n.strip() for n in installs.split(","))
        lines.append(InstallLine(command, names))
    return lines


def _working_line_for_extra(extra: str) -> str:
    """The README command that installs classy-hooks-logging[extra] (the one a missing-extra error must print)."""
    (line,) = (
        line.command for line in readme_install_lines()
        if line.installs is not None and f"classy-hooks-logging[{extra}]" in line.command
    )
    return line


# ----------------------------------------------------------------------------- venv inspection


def _closure(dists: dict[str, md.Distribution], roots: list[Requirement]) -> set[str]:
    """Canonical names reached from `roots` through Requires-Dist, markers evaluated (the venv's Python is ours)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in roots]
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        name, extras = key
        for line in dists[name].requires or [] if name in dists else []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return {name for name, _ in seen}


def _requirements_of(command: str) -> list[str]:
    """The requirement strings a printed `pip install` command names (the last pip install of a compound line)."""
    last = command.split("&&")[-1]
    words = shlex.split(last)
    args = words[words.index("install") + 1:]
    out, skip = [], False
    for word in args:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in {"--build-constraint", "-c", "--constraint", "-r"}
        else:
            out.append(word)
    return out


@dataclass
class VenvState:
    """What a venv's site-packages hold, read from their metadata."""

    versions: dict[str, str]
    required: set[str]  # reached from the install line's requirements
    torch_closure: set[str]  # torch and its own requirements, if torch is there
    sizes: dict[str, int]  # bytes of each distribution's installed files


def _state(venv: FreshVenv, command: str) -> VenvState:
    dists = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions(path=[str(venv.site_packages)])}
    sizes = {
        name: sum(Path(str(d.locate_file(f))).stat().st_size for f in d.files or [] if Path(str(d.locate_file(f))).is_file())
        for name, d in dists.items()
    }
    required = _closure(dists, [Requirement(r) for r in _requirements_of(command)])
    torch_closure = _closure(dists, [Requirement("torch")]) if "torch" in dists else set()
    return VenvState({n: d.version for n, d in dists.items()}, required, torch_closure, sizes)


# ----------------------------------------------------------------------------- one real torch install, shared


class TorchInstall:
    """torch (and its own requirements) installed for real by pip in one venv, hard-linked into others."""

    def __init__(self, venv: FreshVenv, seconds: float) -> None:
        self.venv, self.seconds = venv, seconds
        self.distributions = _state(venv, "pip install torch").torch_closure
        self.files = {
            canonicalize_name(d.metadata["Name"]): [Path(str(f)) for f in d.files or []]
            for d in md.distributions(path=[str(venv.site_packages)])
            if canonicalize_name(d.metadata["Name"]) in self.distributions
        }

    def seed(self, target: FreshVenv) -> None:
        """Hard-link torch's files into `target`'s site-packages; scripts get the target's interpreter line.

        A distribution the target venv already has (its own setuptools) is left to pip, as in a user's venv.
        """
        present = {canonicalize_name(d.metadata["Name"]) for d in md.distributions(path=[str(target.site_packages)])}
        for rel in (f for name, files in self.files.items() if name not in present for f in files):
            source = (self.venv.site_packages / rel).resolve()
            if not source.is_file():
                continue
            if rel.parts[0] == "..":  # a console script under bin/
                dest = target.path / "bin" / rel.name
                lines = source.read_text().splitlines(keepends=True)
                if lines and lines[0].startswith("#!"):
                    lines[0] = f"#!{target.python}\n"
                dest.write_text("".join(lines))
                dest.chmod(0o755)
                continue
            dest = target.site_packages / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                os.link(source, dest)


@pytest.fixture(scope="module")
def constraints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("constraints") / "torch.txt"
    path.write_text(TORCH_PIN + "\n")
    return path


class Records:
    """Per-line figures (installed set, size, time), printed to the terminal as each line finishes."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def append(self, text: str) -> None:
        with self.capsys.disabled():
            print(f"\n[install line, fresh venv, Python 3.11, local index, {TORCH_PIN} CPU]\n{text}")


@pytest.fixture
def records(capsys: pytest.CaptureFixture[str]) -> Records:
    return Records(capsys)


def _venv(path: Path, index: LocalIndex, constraints: Path) -> FreshVenv:
    venv = FreshVenv(path)
    venv.use_index(index, constraints)
    return venv


def _run_line(venv: FreshVenv, line: InstallLine) -> tuple[float, str]:
    start = time.monotonic()
    proc = venv.shell(line.command, check=False)
    seconds = time.monotonic() - start
    output = proc.stdout + proc.stderr
    if line.installs is None:
        assert proc.returncode != 0, f"the README says `{line.command}` fails, but it succeeded:\n{output}"
    else:
        assert proc.returncode == 0, f"`{line.command}` failed ({proc.returncode}):\n{output}"
    return seconds, output


# ----------------------------------------------------------------------------- the tests


def test_readme_lists_every_install_line_it_promises() -> None:
    commands = [line.command for line in readme_install_lines()]
    assert commands[:2] == ["pip install classy-hooks-core", "pip install classy-hooks-core classy-hooks-model"]
    for extra in ("tensorboard", "visdom", "complexity", "all"):
        assert any(f"classy-hooks-logging[{extra}]" in c for c in commands), extra
    assert "pip install classy-hooks-export" in commands


@pytest.fixture(scope="module")
def torch_install(tmp_path_factory: pytest.TempPathFactory, package_index: LocalIndex, constraints: Path
                  ) -> TorchInstall:
    """The README's headline line, run in an empty venv: it installs torch for real (shared with later lines)."""
    line = readme_install_lines()[1]
    venv = _venv(tmp_path_factory.mktemp("line") / "venv", package_index, constraints)
    seconds, _ = _run_line(venv, line)
    return TorchInstall(venv, seconds)


@pytest.mark.parametrize("line", readme_install_lines(), ids=lambda line: line.command)
def test_install_line(line: InstallLine, tmp_path: Path, package_index: LocalIndex, constraints: Path,
                      torch_install: TorchInstall, shared_visdom_server: VisdomServer, records: Records) -> None:
    venv = _venv(tmp_path / "venv", package_index, constraints)
    needs_torch = line.installs is None or "torch" in line.installs
    if needs_torch:
        torch_install.seed(venv)
    before = _state(venv, "pip install pip")
    seconds, output = _run_line(venv, line)
    after = _state(venv, line.command)

    changed = {n for n, v in after.versions.items() if before.versions.get(n) != v} - {"pip"}
    if line.installs is None:
        assert changed == set(), f"`{line.command}` failed but left {sorted(changed)} behind:\n{output}"
        assert "pkg_resources" in output, output  # the README's stated reason
        records.append(f"  {line.command}: fails as the README says, installs nothing ({seconds:.1f} s)")
        return

    venv.check()
    seeded = set(before.versions) - {"pip", "setuptools"}
    present = (changed | seeded) - {"pip"}
    unrequired = present - after.required
    assert not unrequired, f"`{line.command}` leaves distributions no requirement asks for: {sorted(unrequired)}"
    assert needs_torch == ("torch" in present)
    torch_own = after.torch_closure - {"torch"}
    installed = present - torch_own
    assert installed == set(line.installs), (
        f"`{line.command}` installs (torch's own requirements aside) {sorted(installed)}; "
        f"the README says {sorted(line.installs)}"
    )
    size = sum(after.sizes[n] for n in installed - {"torch"})
    torch_size = sum(after.sizes[n] for n in after.torch_closure)
    records.append(
        f"  {line.command}\n      {len(installed)} distributions: {', '.join(sorted(installed))}\n"
        f"      + torch's own ({len(torch_own)}): {', '.join(sorted(torch_own)) or '-'}\n"
        f"      size without torch and its requirements: {size / 1e6:.1f} MB (torch and its: {torch_size / 1e6:.0f} MB);"
        f" install time: {seconds:.1f} s"
        + (f" (torch already there: hard-linked from the real install, which took {torch_install.seconds:.1f} s for"
           f" `{readme_install_lines()[1].command}` in an empty venv)" if needs_torch else "")
    )
    _check_hooks(venv, line, tmp_path / "run", shared_visdom_server, installed)


def _check_hooks(venv: FreshVenv, line: InstallLine, run_dir: Path, server: VisdomServer, installed: set[str]) -> None:
    code = (
        "import importlib.metadata as m, json; print(json.dumps(sorted(e.name for e in "
        "m.entry_points(group='classy_hooks.hooks'))))"
    )
    hooks = json.loads(venv.python_code(code).stdout)
    if installed == {"classy-hooks-core"}:
        assert hooks == []
        out = venv.python_code(
            "import sys, classy_hooks.core as c\n"
            "try:\n    c.build_hook({'name': 'checkpoint', 'checkpoint_folder': '.'})\n"
            "except c.UnknownHookError as e:\n    print(e)\n"
            "print('torch' in sys.modules)"
        ).stdout
        assert "Install it with: pip install classy-hooks-model" in out
        assert out.strip().endswith("False"), "classy_hooks.core imported torch"
        return
    unknown = set(hooks) - set(HOOK_CONFIGS)
    assert not unknown, f"add a config for the new hook(s) {sorted(unknown)} to HOOK_CONFIGS"
    configs = [{"name": name, **HOOK_CONFIGS[name]} for name in hooks]
    configs = json.loads(json.dumps(configs).replace('"{visdom_port}"', f'"{server.port}"'))
    out = venv.python_code(LOOP.read_text(), json.dumps(configs), str(run_dir)).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["finite"] is True
    assert result["torch"].startswith("2.13.0")
    extras_installed = {
        "tensorboard": "tensorboardx" in installed,
        "visdom": "visdom" in installed,
        "complexity": "fvcore" in installed,
    }
    needs = {"tensorboard_plot": "tensorboard", "model_tensorboard": "tensorboard", "visdom": "visdom",
             "model_complexity": "complexity"}
    for name, message in result["missing"].items():
        extra = needs.get(name)
        assert extra is not None and not extras_installed[extra], f"{name} did not build: {message}"
        assert message.endswith(f"Install it with: {_working_line_for_extra(extra)}"), message
    ran = set(hooks) - set(result["missing"])
    assert len(result["hooks"]) == len(ran)
    for name in ran & set(HOOK_OUTPUTS):
        assert any((run_dir / HOOK_OUTPUTS[name]).iterdir()), f"{name} wrote nothing under {run_dir}"
    if "visdom" in ran:
        assert server.lines("install_line:loss", "install_line"), "VisdomHook plotted nothing"
    modules = {m.split(".")[0] for m in result["modules"]}
    for extra, module in (("tensorboard", "tensorboardX"), ("visdom", "visdom"), ("complexity", "fvcore")):
        if not extras_installed[extra]:
            assert module not in modules
