"""A real S3-compatible server on 127.0.0.1 for tests (moto_server in a subprocess), reached through s3fs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev_dependencies import dev_dependency
from helpers import free_port

#: Fake credentials moto accepts; set so botocore never looks for real ones.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    """moto_server in its own session (killed as a group), with the environment that points s3fs at it."""

    def __init__(self, log_dir: Path) -> None:
        executable = shutil.which("moto_server", path=os.path.dirname(sys.executable))
        if executable is None:
            raise RuntimeError("moto_server is not installed: pip install -r tools/requirements-dev.txt")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / "moto_server.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [executable, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start: {(log_dir / 'moto_server.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def _listening(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    @property
    def env(self) -> dict[str, str]:
        """Variables that make s3fs (in this process via fsspec's config, in children via FSSPEC_S3_*) use the server."""
        return {**CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": self.endpoint}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto_server for the session."""
    dev_dependency("s3fs", reason="s3fs and moto are dev tools (tools/requirements-dev.txt), not in this venv")
    server = S3Server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket on the server, as an `s3://` URL; this process's s3fs is pointed at the server."""
    import fsspec
    import fsspec.config

    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_server.endpoint})
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    bucket = f"run-{os.urandom(4).hex()}"
    fs.mkdir(bucket)
    yield f"s3://{bucket}"
    if fs.exists(bucket):  # a test may have deleted it
        fs.rm(bucket, recursive=True)
    fsspec.filesystem("s3").invalidate_cache()
