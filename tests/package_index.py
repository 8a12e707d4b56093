"""A real package index for tests: fresh builds of the four packages, served by pypiserver on 127.0.0.1.

What a user gets is tested the way a user gets it: `python -m build` makes each package's sdist and then its wheel
from that sdist; `LocalIndex` serves them over HTTP (and accepts `twine upload`); `FreshVenv` is a plain
`python -m venv` whose own pip installs from the machine's usual indexes plus the local one (`PIP_EXTRA_INDEX_URL`).

Used by tests/integration/test_packaging.py and tests/integration/test_release.py:

    from package_index import LocalIndex, FreshVenv, build_distributions
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = {
    "classy-hooks-core": ROOT / "packages" / "core",
    "classy-hooks-model": ROOT / "packages" / "hooks-model",
    "classy-hooks-logging": ROOT / "packages" / "hooks-logging",
    "classy-hooks-export": ROOT / "packages" / "hooks-export",
}
# Variables that would make a child Python or pip see something other than what its command line says.
_LEAKY_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "PIP_PYTHON")


def clean_environment(**extra: str) -> dict[str, str]:
    """os.environ without the variables that leak this test process's Python into a child, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_VARIABLES and not k.startswith("UV_")}
    env.update(PYTHONNOUSERSITE="1", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def run(cmd: Sequence[str | Path], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
        check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure (with check) raise an AssertionError that shows its whole output."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=dict(env) if env is not None else clean_environment(), check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_distributions(out: Path, distributions: Sequence[str] = tuple(PACKAGE_FOLDERS)) -> list[Path]:
    """Build each package's sdist, then its wheel from that sdist (`python -m build`), into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for name in distributions:
        run([sys.executable, "-m", "build", "--outdir", out, PACKAGE_FOLDERS[name]])
    return sorted(p for p in out.iterdir() if p.name.endswith((".whl", ".tar.gz")))


class LocalIndex:
    """pypiserver serving one folder on 127.0.0.1 (uploads allowed without a password), as a subprocess."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def root_url(self) -> str:
        """The server's base URL, where `twine upload --repository-url` sends files."""
        if self.port is None:
            raise RuntimeError("LocalIndex is not started: call start(folder) first")
        return f"http://127.0.0.1:{self.port}/"

    @property
    def url(self) -> str:
        """The simple-index URL for pip's --index-url / --extra-index-url."""
        return self.root_url + "simple/"

    def start(self, folder: Path, timeout: float = 30.0) -> LocalIndex:
        """Serve `folder` (created if missing) and return once the index answers."""
        if self._process is not None:
            raise RuntimeError("LocalIndex is already started")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.port = folder, free_port()
        self._log = folder.parent / f"pypiserver-{self.port}.log"
        server = Path(sys.executable).with_name("pypi-server")
        cmd = [server, "run", "-p", str(self.port), "-i", "127.0.0.1", "-a", ".", "-P", ".",
               "--disable-fallback", "--overwrite", "--log-file", self._log, folder]
        self._process = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                         env=clean_environment(), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"pypiserver exited with {self._process.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"pypiserver did not answer on {self.url} within {timeout} s")

    def log(self) -> str:
        """What the server logged so far (requests and errors)."""
        return self._log.read_text() if self._log is not None and self._log.exists() else ""

    def upload(self, files: Sequence[Path]) -> subprocess.CompletedProcess[str]:
        """`twine upload` the files to this index, as a release would upload them to PyPI."""
        twine = Path(sys.executable).with_name("twine")
        return run([twine, "upload", "--non-interactive", "--disable-progress-bar", "--repository-url",
                    self.root_url, "-u", "test", "-p", "test", *files])

    def projects(self) -> dict[str, list[str]]:
        """Project name -> file names, as the index lists them over HTTP."""
        with urllib.request.urlopen(self.url, timeout=10) as response:
            names = re.findall(r'href="([^"]+)/?"', response.read().decode())
        out = {}
        for name in names:
            project = name.rstrip("/").rsplit("/", 1)[-1]
            with urllib.request.urlopen(self.url + project + "/", timeout=10) as response:
                out[project] = re.findall(r">([^<]+\.(?:whl|tar\.gz))<", response.read().decode())
        return out

    def stop(self) -> None:
        """Stop the server (its whole process group) and wait for it."""
        if self._process is None:
            return
        if self._process.poll() is None:
            os.killpg(self._process.pid, 15)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, 9)
                self._process.wait(timeout=10)
        self._process = None

    def __enter__(self) -> LocalIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pip_config_values(python: Path, option: str) -> list[str]:
    """The values the machine's pip configuration (files and PIP_* variables) gives `option`, in order."""
    out = run([python, "-m", "pip", "config", "list"]).stdout
    values: list[str] = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.rsplit(".", 1)[-1] == option:
            for item in shlex.split(value.strip().strip("'\"")):
                if item not in values:
                    values.append(item)
    return values


class FreshVenv:
    """A plain `python -m venv` (its own pip, no system site-packages) whose pip also sees a local index.

    Its pip has an empty cache of its own, as on a user's first install: a wheel this machine once built from an
    sdist (visdom's, with an old setuptools) must not make a broken install line look like it works.
    """

    def __init__(self, path: Path, python: Path | str = sys.executable) -> None:
        self.path = path
        run([python, "-m", "venv", path])
        self.python = path / "bin" / "python"
        self.site_packages = Path(run([self.python, "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
                                      ).stdout.strip())
        self.pip_env: dict[str, str] = {"PIP_CACHE_DIR": str(path.parent / f"{path.name}-pip-cache")}

    def use_index(self, index: LocalIndex, constraints: Path | None = None) -> None:
        """Let pip find `index` beside the machine's configured indexes; `constraints` joins the configured ones."""
        extra = [index.url, *_pip_config_values(self.python, "extra-index-url")]
        self.pip_env["PIP_EXTRA_INDEX_URL"] = " ".join(extra)
        if constraints is not None:
            self.pip_env["PIP_CONSTRAINT"] = " ".join([*_pip_config_values(self.python, "constraint"), str(constraints)])

    def environment(self) -> dict[str, str]:
        """The environment of a shell in which this venv is activated."""
        path = f"{self.path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        return clean_environment(PATH=path, VIRTUAL_ENV=str(self.path), **self.pip_env)

    def shell(self, line: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run a command line exactly as printed (e.g. a README install line) in the activated venv."""
        return run(["bash", "-c", line], env=self.environment(), cwd=self.path, check=check, timeout=timeout)

    def pip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """This venv's own pip."""
        return run([self.python, "-m", "pip", *args], env=self.environment(), cwd=self.path, check=check)

    def python_code(self, code: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run Python code in this venv (isolated mode: no cwd, no user site on sys.path)."""
        return run([self.python, "-I", "-c", code, *args], env=self.environment(), cwd=self.path, check=check)

    def distributions(self) -> dict[str, str]:
        """Canonical name -> version of every distribution installed in this venv."""
        code = ("import importlib.metadata as m, json, re; print(json.dumps({re.sub(r'[-_.]+', '-', "
                "d.metadata['Name']).lower(): d.version for d in m.distributions()}))")
        return dict(json.loads(self.python_code(code).stdout))

    def check(self) -> None:
        """`pip check` passes."""
        out = self.pip("check").stdout
        assert "No broken requirements found" in out, out


@pytest.fixture(scope="session")
def built_distributions(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The four packages' sdists and wheels, built fresh from this checkout once per test session."""
    files = build_distributions(tmp_path_factory.mktemp("dist"))
    assert len(files) == 2 * len(PACKAGE_FOLDERS), files
    return files


@pytest.fixture(scope="session")
def package_index(tmp_path_factory: pytest.TempPathFactory, built_distributions: list[Path]) -> Iterator[LocalIndex]:
    """A local index on 127.0.0.1 holding the fresh builds (uploaded with twine), stopped after the session."""
    index = LocalIndex().start(tmp_path_factory.mktemp("index") / "packages")
    try:
        index.upload(built_distributions)
        yield index
    finally:
        index.stop()
