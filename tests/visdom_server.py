"""A real Visdom server on 127.0.0.1 for tests, started without its (offline-crashing) asset download."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from helpers import free_port

#: Starts visdom's server without its asset download step (which crashes offline).
SERVER_CODE = "from visdom.server.run_server import main; main()"


class VisdomServer:
    """A Visdom server process in its own session, so the whole process group can be killed."""

    def __init__(self, env_path: Path) -> None:
        self.port = free_port()
        self.env_path = env_path
        env_path.mkdir(parents=True, exist_ok=True)
        self.log = open(env_path / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_CODE, "-port", str(self.port), "-bind_local", "-env_path", str(env_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not self.listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Visdom server did not start: {(env_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def listening(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log.close()

    def client(self, env: str) -> Any:
        import visdom

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The 'warn' method is deprecated", category=DeprecationWarning)
            return visdom.Visdom(
                server="http://127.0.0.1", port=self.port, env=env, raise_exceptions=True, use_incoming_socket=False
            )

    def window(self, win: str, env: str) -> dict[str, Any]:
        """The data of one window, as the server holds it (JSON decoded)."""
        data: dict[str, Any] = json.loads(self.client(env).get_window_data(win=win, env=env))
        return data

    def lines(self, win: str, env: str) -> dict[str, list[tuple[float, float]]]:
        """{trace name: [(x, y), ...]} of a line plot window."""
        content = self.window(win, env)["content"]["data"]
        return {trace["name"]: list(zip(trace["x"], trace["y"])) for trace in content}
