"""Selective installs, proven from the built wheels in clean virtual environments.

The four wheels are built once per session with hatchling. Each test creates a venv without
pip and without the system site-packages, and installs into it with the dev venv's pip
(`pip --python <venv>`) from local folders only (`--no-index`, no pip config, nothing from the
network):

- the freshly built classy-hooks wheels;
- a wheelhouse of third-party wheels repacked from the dev venv's installed distributions:
  everything any install line of the four packages could need, extras included (so tensorboardX
  and visdom are *available* and their absence from a venv is pip's choice, not a missing file);
- torch: the dev venv's torch and its own requirements are linked into a folder that the
  torch-using venvs see through a `.pth` file (the `--system-site-packages` idea, restricted to
  torch; the base interpreter's site-packages hold none of torch, tqdm, tensorboardX, visdom).
  pip sees torch as installed and `pip check` checks its requirements too.

Each test prints the exact set of distributions its install line put in the venv.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
OURS = {"classy-hooks-core", "classy-hooks-model", "classy-hooks-logging", "classy-hooks-export"}
MODEL_HOOK_CONFIGS = {
    "ema_model_weights": {"decay": 0.9, "device": "cpu"},
    "precise_bn": {"num_samples": 16},
    "checkpoint": {"checkpoint_folder": "{run_dir}/checkpoints"},
}
# Hooks of classy-hooks-logging that need an extra (DESIGN.md §1) and a valid config for each.
LOGGING_EXTRA_HOOKS = {
    "tensorboard_plot": ("tensorboard", {"summary_writer": {"logdir": "{run_dir}/tb"}, "log_period": 1}),
    "model_tensorboard": ("tensorboard", {"summary_writer": {"logdir": "{run_dir}/tb_model"}}),
    "visdom": ("visdom", {"server": "http://127.0.0.1", "port": 8097, "env": "wheel_test"}),
    "model_complexity": ("complexity", {}),
}


# ----------------------------------------------------------------------------- environment helpers


def _clean_env() -> dict[str, str]:
    """No pip configuration, no PYTHONPATH, no user site: only what the command line says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", PIP_NO_INPUT="1")
    return env


def _run(cmd: Sequence[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=_clean_env(), check=False, **kwargs
    )  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _dev_distribution(name: str) -> md.Distribution | None:
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None


def _closure(requirements: Iterable[tuple[Requirement, str]], skip: set[str]) -> dict[str, md.Distribution]:
    """Installed (dev venv) distributions needed by `requirements`, each given with the extra it belongs to."""
    found: dict[str, md.Distribution] = {}
    todo = list(requirements)
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        key = canonicalize_name(req.name)
        if key in skip or (key, frozenset(req.extras)) in done:
            continue
        done.add((key, frozenset(req.extras)))
        dist = _dev_distribution(req.name)
        if dist is None:
            raise AssertionError(f"{req} is needed but not installed in the dev venv ({sys.prefix})")
        found[key] = dist
        for line in dist.requires or []:
            sub = Requirement(line)
            for wanted in {"", *req.extras}:
                if sub.marker is None or sub.marker.evaluate({"extra": wanted}):
                    todo.append((Requirement(str(sub).split(";")[0]), ""))
                    break
    return found


def _top_level_entries(dist: md.Distribution) -> set[str]:
    out = set()
    for path in dist.files or []:
        first = path.parts[0]
        if first != ".." and not first.endswith(".pth") and first != "__pycache__":
            out.add(first)
    return out


def _repack(dist: md.Distribution, outdir: Path) -> Path:
    """Write an installed distribution back into a wheel (site-packages files + its .dist-info)."""
    site = Path(str(dist.locate_file("")))
    files = [p for p in dist.files or [] if p.parts[0] != ".." and "__pycache__" not in p.parts]
    info_dir = next(p.parts[0] for p in files if p.parts[0].endswith(".dist-info"))
    wheel_meta = (site / info_dir / "WHEEL").read_text()
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")]
    pys, abis, plats = (sorted({t.split("-")[i] for t in tags}) for i in range(3))
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    wheel = outdir / f"{name}-{dist.version}-{'.'.join(pys)}-{'.'.join(abis)}-{'.'.join(plats)}.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_STORED) as zf:
        for rel in files:
            if rel.parts[0] == info_dir and rel.name in {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}:
                continue
            src = site / rel
            if not src.is_file():
                continue
            data = src.read_bytes()
            zf.writestr(rel.as_posix(), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{rel.as_posix()},sha256={digest},{len(data)}")
        record.append(f"{info_dir}/RECORD,,")
        zf.writestr(f"{info_dir}/RECORD", "\n".join(record) + "\n")
    return wheel


class WheelEnv:
    """A clean venv (no pip inside, no system site-packages) driven by the dev venv's pip."""

    def __init__(self, path: Path, sources: dict[str, Path], torch_site: Path | None) -> None:
        self.path = path
        self.sources = sources
        _run([sys.executable, "-m", "venv", "--without-pip", path])
        self.python = path / "bin" / "python"
        self.site = Path(
            _run([self.python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
        )
        self.torch_site = torch_site
        if torch_site is not None:
            (self.site / "_dev_torch.pth").write_text(f"{torch_site}\n")

    def pip(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([sys.executable, "-m", "pip", "--python", self.python, "--disable-pip-version-check", *args])

    def install(self, *requirements: str) -> None:
        links = [arg for folder in self.sources.values() for arg in ("--find-links", str(folder))]
        self.pip("install", "--no-index", "--no-cache-dir", *links, *requirements)

    def check(self) -> None:
        out = self.pip("check")
        assert "No broken requirements found" in out.stdout, out.stdout + out.stderr

    def installed(self) -> dict[str, str]:
        """name -> where ("venv" or "dev torch") of every distribution this interpreter can see."""
        code = (
            "import importlib.metadata as m, json, sys; print(json.dumps("
            "{d.metadata['Name']: str(d.locate_file('')) for d in m.distributions()}))"
        )
        seen = json.loads(self.python_run("-c", code).stdout)
        return {
            canonicalize_name(name): ("venv" if Path(where).resolve() == self.site.resolve() else "dev torch")
            for name, where in seen.items()
        }

    def requirements(self) -> dict[str, list[str]]:
        code = (
            "import importlib.metadata as m, json; print(json.dumps("
            "{d.metadata['Name']: d.requires or [] for d in m.distributions()}))"
        )
        return {canonicalize_name(k): v for k, v in json.loads(self.python_run("-c", code).stdout).items()}

    def not_required(self, *install_line: str) -> set[str]:
        """Distributions in the venv that nothing on the install line requires, even transitively."""
        requires = self.requirements()
        todo = [Requirement(r) for r in install_line]
        reached: set[tuple[str, frozenset[str]]] = set()
        while todo:
            req = todo.pop()
            key = (canonicalize_name(req.name), frozenset(req.extras))
            if key in reached:
                continue
            reached.add(key)
            for line in requires.get(key[0], []):
                sub = Requirement(line)
                if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in {"", *req.extras}):
                    todo.append(Requirement(str(sub).split(";")[0]))
        return set(requires) - {name for name, _ in reached}

    def required_by(self, name: str) -> set[str]:
        """Distributions in the venv whose (non-extra) requirements name `name`."""
        code = (
            "import importlib.metadata as m, json; print(json.dumps("
            "{d.metadata['Name']: d.requires or [] for d in m.distributions()}))"
        )
        out = set()
        for dist, requires in json.loads(self.python_run("-c", code).stdout).items():
            for line in requires:
                req = Requirement(line)
                if canonicalize_name(req.name) == canonicalize_name(name) and (
                    req.marker is None or req.marker.evaluate({"extra": ""})
                ):
                    out.add(canonicalize_name(dist))
        return out

    def python_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([self.python, "-I", *args], cwd=self.path)


@pytest.fixture(scope="session")
def built_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four wheels, built once with hatchling from the packages in this checkout."""
    out = tmp_path_factory.mktemp("wheels")
    for folder in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        _run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", out], cwd=folder.parent)
    assert {p.name.split("-")[0] for p in out.glob("*.whl")} == {n.replace("-", "_") for n in OURS}
    return out


def _our_requirements(wheels: Path) -> list[tuple[Requirement, str]]:
    reqs = []
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        extras = ["", *re.findall(r"^Provides-Extra: (\S+)$", meta, re.M)]
        for line in re.findall(r"^Requires-Dist: (.+)$", meta, re.M):
            req = Requirement(line)
            for extra in extras:
                if req.marker is None or req.marker.evaluate({"extra": extra}):
                    reqs.append((Requirement(str(req).split(";")[0]), extra))
                    break
    return reqs


@pytest.fixture(scope="session")
def torch_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dev venv's torch and everything it requires, linked into one folder."""
    site = tmp_path_factory.mktemp("dev-torch")
    for dist in _closure([(Requirement("torch"), "")], skip=set()).values():
        source = Path(str(dist.locate_file("")))
        for entry in _top_level_entries(dist):
            if not (site / entry).exists() and (source / entry).exists():
                (site / entry).symlink_to(source / entry)
    return site


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, built_wheels: Path, torch_site: Path) -> Path:
    """Third-party wheels for every install line (extras included), repacked from the dev venv."""
    out = tmp_path_factory.mktemp("wheelhouse")
    torch_dists = {canonicalize_name(p.name.split("-")[0]) for p in torch_site.glob("*.dist-info")}
    needed = _closure(_our_requirements(built_wheels), skip=OURS | torch_dists)
    for dist in needed.values():
        _repack(dist, out)
    return out


def _env(tmp_path: Path, built_wheels: Path, wheelhouse: Path, torch_site: Path | None) -> WheelEnv:
    return WheelEnv(tmp_path / "venv", {"wheels": built_wheels, "third-party": wheelhouse}, torch_site)


def _report(title: str, env: WheelEnv) -> dict[str, str]:
    installed = env.installed()
    venv = sorted(n for n, w in installed.items() if w == "venv")
    dev = sorted(n for n, w in installed.items() if w != "venv")
    print(f"\n{title}\n  installed by pip into the venv ({len(venv)}): {' '.join(venv)}")
    if dev:
        print(f"  torch and its requirements from the dev venv ({len(dev)}): {' '.join(dev)}")
    return installed


# ----------------------------------------------------------------------------- the plain loop run in a wheel venv

PLAIN_LOOP = textwrap.dedent(
    '''
    """A plain PyTorch loop driving hooks built by name (runs in a venv that holds only the wheels)."""
    import json, math, sys
    import torch
    from torch import nn
    from classy_hooks.core import ClassyHookFunctions, LastBatch, build_hook, call_hooks
    from classy_hooks.core import get_hooks_state, set_hooks_state

    configs, run_dir = json.loads(sys.argv[1]), sys.argv[2]
    hooks = [build_hook(json.loads(json.dumps(c).replace("{run_dir}", run_dir))) for c in configs]


    class Accuracy:
        name = "accuracy"

        def __init__(self):
            self.correct = self.total = 0

        @property
        def value(self):
            return {"top_1": self.correct / max(self.total, 1)}


    class PlainTask:
        use_gpu = False
        test_only = False

        def __init__(self, hooks):
            torch.manual_seed(0)
            self.base_model = nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
            )
            self.base_model.input_shape = (3, 8, 8)
            self.model = self.base_model
            self.optimizer = torch.optim.SGD(self.base_model.parameters(), lr=0.1)
            self.hooks = hooks
            self.phases = [True, False, True, False]
            self.batches = {
                train: [{"input": torch.randn(8, 3, 8, 8), "target": torch.randint(0, 3, (8,)),
                         "id": torch.arange(8 * i, 8 * i + 8)} for i in range(3)]
                for train in (True, False)
            }
            self.phase_idx = self.train_phase_idx = -1
            self.num_updates, self.train, self.losses = 0, True, []
            self.meters, self.last_batch, self.dataloader = [Accuracy()], None, None
            self.is_optimizer_step = True

        phase_type = property(lambda self: "train" if self.train else "test")
        num_batches_per_phase = property(lambda self: len(self.dataloader or []))
        where = property(lambda self: min(self.num_updates / (2 * 3 * 8), 1.0))

        def get_batchsize_per_replica(self):
            return 8

        def get_global_batchsize(self):
            return 8

        def get_classy_state(self, deep_copy=False):
            return {"base_model": self.base_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "phase_idx": self.phase_idx, "train_phase_idx": self.train_phase_idx, "train": self.train,
                    "num_updates": self.num_updates, "losses": [float(x) for x in self.losses],
                    "hooks": get_hooks_state(self.hooks)}

        def set_classy_state(self, state):
            self.base_model.load_state_dict(state["base_model"])
            self.optimizer.load_state_dict(state["optimizer"])
            set_hooks_state(self.hooks, state["hooks"])

        def run(self):
            call_hooks(self.hooks, ClassyHookFunctions.on_start, self)
            for train in self.phases:
                self.phase_idx += 1
                self.train_phase_idx += int(train)
                self.train, self.losses, self.meters = train, [], [Accuracy()]
                self.dataloader = self.batches[train]
                self.base_model.train(train)
                call_hooks(self.hooks, ClassyHookFunctions.on_phase_start, self)
                for batch in self.dataloader:
                    with torch.set_grad_enabled(train):
                        output = self.model(batch["input"])
                        loss = nn.functional.cross_entropy(output, batch["target"])
                    if train:
                        loss.backward()
                        self.optimizer.step()
                        self.optimizer.zero_grad()
                        self.num_updates += 8
                    self.meters[0].correct += int((output.argmax(1) == batch["target"]).sum())
                    self.meters[0].total += 8
                    self.losses.append(loss.detach())
                    self.last_batch = LastBatch(loss.detach(), output.detach(), batch["target"], batch, {})
                    call_hooks(self.hooks, ClassyHookFunctions.on_step, self)
                self.losses = [float(x) for x in self.losses]
                call_hooks(self.hooks, ClassyHookFunctions.on_phase_end, self)
            call_hooks(self.hooks, ClassyHookFunctions.on_end, self)


    task = PlainTask(hooks)
    task.run()
    finite = all(torch.isfinite(p).all() for p in task.base_model.parameters())
    print(json.dumps({"hooks": [type(h).__name__ for h in hooks], "finite": bool(finite),
                      "torch_version": torch.__version__, "modules": sorted(sys.modules)}))
    '''
)


def _run_plain_loop(env: WheelEnv, configs: list[dict[str, object]], run_dir: Path) -> dict[str, object]:
    script = env.path / "plain_loop.py"
    script.write_text(PLAIN_LOOP)
    out = env.python_run(str(script), json.dumps(configs), str(run_dir))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _entry_points(env: WheelEnv, dist: str) -> list[str]:
    code = (
        "import importlib.metadata as m, json; print(json.dumps(sorted(e.name for e in "
        f"m.entry_points(group='classy_hooks.hooks') if e.dist is not None and e.dist.name == {dist!r})))"
    )
    return list(json.loads(env.python_run("-c", code).stdout))


# ----------------------------------------------------------------------------- tests


def test_base_interpreter_site_packages_hold_none_of_the_optional_packages() -> None:
    """The venvs do not use --system-site-packages; and the base interpreter would not leak them anyway."""
    base = subprocess.run(
        [sys._base_executable, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],  # type: ignore[attr-defined]
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    present = {canonicalize_name(p.name.split("-")[0]) for p in Path(base).glob("*.dist-info")}
    assert not present & {"torch", "tqdm", "tensorboardx", "visdom", "fvcore", "tensorboard"}


def test_core_alone_has_zero_dependencies_and_never_imports_torch(
    tmp_path: Path, built_wheels: Path, wheelhouse: Path
) -> None:
    env = _env(tmp_path, built_wheels, wheelhouse, torch_site=None)
    env.install("classy-hooks-core")
    env.check()
    installed = _report("pip install classy-hooks-core", env)
    assert installed == {"classy-hooks-core": "venv"}
    assert env.not_required("classy-hooks-core") == set()
    out = env.python_run(
        "-c",
        "import sys, json, importlib.metadata as m; import classy_hooks.core as c; "
        "print(json.dumps([c.__version__, m.requires('classy-hooks-core'), 'torch' in sys.modules, "
        "sorted(n for n in sys.modules if n.split('.')[0] in {'numpy', 'tqdm', 'fvcore'})]))",
    )
    version, requires, torch_imported, third_party = json.loads(out.stdout)
    assert version == md.version("classy-hooks-core")
    assert requires in (None, [])
    assert torch_imported is False
    assert third_party == []
    # Without torch at all, building a first-party hook names the package to install.
    err = env.python_run(
        "-c",
        "from classy_hooks.core import build_hook\n"
        "try:\n    build_hook({'name': 'checkpoint', 'checkpoint_folder': '.'})\n"
        "except Exception as e:\n    print(type(e).__name__, e)",
    )
    assert "pip install classy-hooks-model" in err.stdout.replace("'", "")


def test_core_and_model_install_no_logging_stack_and_every_model_hook_trains(
    tmp_path: Path, built_wheels: Path, wheelhouse: Path, torch_site: Path
) -> None:
    assert {p.name.split("-")[0].lower() for p in wheelhouse.glob("*.whl")} >= {"tensorboardx", "visdom", "tqdm"}
    env = _env(tmp_path, built_wheels, wheelhouse, torch_site)
    env.install("classy-hooks-core", "classy-hooks-model")
    env.check()
    installed = _report("pip install classy-hooks-core classy-hooks-model", env)
    assert {"classy-hooks-core", "classy-hooks-model", "torch", "fvcore"} <= set(installed)
    assert not set(installed) & {"tensorboardx", "visdom", "tensorboard", "classy-hooks-logging"}
    assert env.not_required("classy-hooks-core", "classy-hooks-model") == set()
    # tqdm is present, and only because fvcore (and its iopath) require it; the model package does not.
    model_requires = {canonicalize_name(Requirement(r).name) for r in md.requires("classy-hooks-model") or []}
    assert "tqdm" not in model_requires
    assert "tqdm" in installed
    assert env.required_by("tqdm") <= {"fvcore", "iopath"}

    hooks = _entry_points(env, "classy-hooks-model")
    missing = sorted(set(MODEL_HOOK_CONFIGS) - set(hooks))
    if missing:
        pytest.skip(f"classy-hooks-model does not declare the entry points {missing} yet (its hooks are unfinished)")
    unknown = sorted(set(hooks) - set(MODEL_HOOK_CONFIGS))
    assert not unknown, f"add a config for the new model hook(s) {unknown} to MODEL_HOOK_CONFIGS"
    configs = [{"name": name, **MODEL_HOOK_CONFIGS[name]} for name in hooks]
    result = _run_plain_loop(env, configs, tmp_path / "run")
    assert len(result["hooks"]) == len(hooks)  # type: ignore[arg-type]
    assert result["finite"] is True
    assert not {"tensorboardX", "visdom", "tensorboard"} & set(result["modules"])  # type: ignore[arg-type]
    assert any((tmp_path / "run" / "checkpoints").iterdir())


def test_logging_without_extras_imports_and_names_each_extra_then_tensorboard_extra_works(
    tmp_path: Path, built_wheels: Path, wheelhouse: Path, torch_site: Path
) -> None:
    env = _env(tmp_path, built_wheels, wheelhouse, torch_site)
    env.install("classy-hooks-logging")
    env.check()
    installed = _report("pip install classy-hooks-logging", env)
    assert {"classy-hooks-core", "classy-hooks-logging", "torch", "tqdm"} <= set(installed)
    assert not set(installed) & {"tensorboardx", "visdom", "fvcore", "tensorboard", "numpy", "classy-hooks-model"}
    assert env.not_required("classy-hooks-logging") == set()
    env.python_run("-c", "import classy_hooks.logging")

    declared = _entry_points(env, "classy-hooks-logging")
    extra_hooks = {name: spec for name, spec in LOGGING_EXTRA_HOOKS.items() if name in declared}
    if not extra_hooks:
        pytest.skip("classy-hooks-logging declares none of its extra-dependent hooks yet (its hooks are unfinished)")
    run_dir = str(tmp_path / "run").replace("\\", "/")
    configs = {
        name: json.loads(json.dumps({"name": name, **config}).replace("{run_dir}", run_dir))
        for name, (_, config) in extra_hooks.items()
    }
    code = textwrap.dedent(
        """
        import json, sys
        from classy_hooks.core import MissingExtraError, build_hook
        out = {}
        for name, config in json.loads(sys.argv[1]).items():
            try:
                build_hook(config)
                out[name] = None
            except MissingExtraError as exc:
                out[name] = str(exc)
        print(json.dumps(out))
        """
    )
    messages = json.loads(env.python_run("-c", code, json.dumps(configs)).stdout)
    for name, (extra, _) in extra_hooks.items():
        assert messages[name] is not None, f"{name} built although its extra '{extra}' is not installed"
        assert f"pip install 'classy-hooks-logging[{extra}]'" in messages[name]

    env.install("classy-hooks-logging[tensorboard]")
    env.check()
    installed = _report("pip install 'classy-hooks-logging[tensorboard]'", env)
    assert "tensorboardx" in installed
    assert not set(installed) & {"visdom", "fvcore", "scipy", "classy-hooks-model"}
    assert env.not_required("classy-hooks-logging[tensorboard]") == set()
    tensorboard_hooks = [name for name, (extra, _) in extra_hooks.items() if extra == "tensorboard"]
    if "tensorboard_plot" not in tensorboard_hooks:
        pytest.skip("classy-hooks-logging does not declare tensorboard_plot yet")
    result = _run_plain_loop(env, [configs[name] for name in tensorboard_hooks], tmp_path / "run")
    assert result["finite"] is True
    assert "tensorboardX" in result["modules"]  # type: ignore[operator]
    if "model_tensorboard" in tensorboard_hooks:
        assert list((tmp_path / "run" / "tb_model").glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert scalars, "tensorboard_plot wrote no scalar"
    assert all(
        all(s.value == s.value for s in events.Scalars(tag)) for tag in scalars
    )  # values read back and none is NaN
