"""VisdomHook: per-phase losses, learning rates and meters plotted on a Visdom server."""

from __future__ import annotations

import logging
import queue
import threading
import warnings
from collections.abc import Callable
from typing import Any, Union

from classy_hooks.core import ClassyHook, ClassyHookState, is_primary, register_hook
from classy_hooks.core.errors import ServerUnreachableError
from classy_hooks.core.optional import import_extra
from classy_hooks.core.task import Task
from classy_hooks.core.validation import check_str, config_error
from classy_hooks.logging._common import DISTRIBUTION, PhaseLearningRates, mean_loss, meter_values

logger = logging.getLogger(__name__)

#: Seconds one HTTP request to the server may take before it counts as failed.
REQUEST_TIMEOUT = 10.0
#: Plot updates waiting for the sender thread; beyond this, new updates are dropped (with a warning).
QUEUE_SIZE = 256
#: Seconds `on_end` waits for queued updates to reach the server.
DRAIN_TIMEOUT = 30.0
#: visdom is published only as a source archive whose setup.py imports pkg_resources, which setuptools 82 removed:
#: pip builds it only under a `setuptools<82` build constraint (--build-constraint needs pip >= 25.3). The root
#: README prints this same line, and tests/integration run it as printed.
INSTALL_COMMAND = (
    "python -m pip install -U 'pip>=25.3' && echo 'setuptools<82' > build-constraints.txt && "
    "pip install 'classy-hooks-logging[visdom]' --build-constraint build-constraints.txt"
)


def limit_request_time(session: Any, timeout: float) -> None:
    """Give every request of `session` (a `requests.Session`) a default `timeout` in seconds.

    visdom sends without a timeout, so a hung server would block the sender thread forever. This
    uses only public APIs: visdom's `Visdom.session` and requests' transport adapters
    (`Session.get_adapter` / `Session.mount`), subclassing the adapter the session already has.
    """
    for prefix in ("http://", "https://"):
        base: Any = type(session.get_adapter(prefix))

        class _TimeoutAdapter(base):  # type: ignore[misc]
            def send(self, request: Any, **kwargs: Any) -> Any:
                if kwargs.get("timeout") is None:
                    kwargs["timeout"] = timeout
                return super().send(request, **kwargs)

        session.mount(prefix, _TimeoutAdapter())


def _check_port(hook: str, port: Any) -> int:
    text = str(port).strip() if isinstance(port, (str, int)) and not isinstance(port, bool) else ""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise config_error(
            hook,
            "port",
            f"must be a TCP port number (1-65535, int or digit string), got {port!r}",
            "Pass the port the Visdom server listens on, e.g. 8097 (is $VISDOM_PORT set?).",
        )
    return int(text)


class VisdomState(ClassyHookState):
    """Checkpointed state of the Visdom hook."""

    metrics: dict[str, dict[str, list[list[float]]]]  # window -> line -> [x, y] points plotted so far


@register_hook("visdom")
class VisdomHook(ClassyHook):
    """Plot one point per phase for the loss, learning rates and meters on a Visdom server.

    Windows (one per metric, stable ids `<env>:<metric>`, so a resumed run finds them again):
    `loss` (lines `train` and `test`), `learning_rate` (one line per param group; the rates of
    the phase's last train step, read in `on_step`, since a ClassificationTask has stepped its
    schedule before `on_phase_end`) and
    `<meter>_<key>` for every numeric meter value. The x axis is the train phase index (epoch)
    the phase belongs to; train and test lines may have different lengths (e.g. a test phase
    every other epoch). Window titles end with `title_suffix`.

    When it acts (primary rank only; other ranks never open a connection):

    - `on_start`: connects to `server:port` and fails with a clear `ServerUnreachableError` (a
      `HookConfigError` and a `ConnectionError`) if no Visdom server answers. When resuming,
      redraws every window from the history kept in the
      hook's state, so curves carry no points from after the checkpoint.
    - `on_phase_end`: appends the phase's points to the history (hook state) and queues them for
      a background thread that sends them, so training never waits on the network. If the server
      goes away later, the hook logs one warning, keeps the history, and training finishes.
    - `on_end`: asks the server to save the env (to its `-env_path`), waits up to 30 s for
      queued updates, then stops the thread.

    What it reads: `task.train`, `task.phase_type`, `task.train_phase_idx`, `task.losses`,
    `task.meters`, and `task.optimizer` on train phases only (it may be None in test-only runs).
    """

    task_attributes = ("train", "phase_type", "train_phase_idx", "losses", "meters", "optimizer")

    def __init__(self, server: str, port: Union[int, str], env: str = "main", title_suffix: str = "") -> None:
        super().__init__()
        import_extra("visdom", self.name(), DISTRIBUTION, "visdom", INSTALL_COMMAND)
        self.server = check_str(self.name(), "server", server)
        if "://" not in self.server:
            raise config_error(
                self.name(), "server", f"must be a URL with a scheme, got {server!r}", 'Pass e.g. "http://127.0.0.1".'
            )
        self.port = _check_port(self.name(), port)
        self.env = check_str(self.name(), "env", env)
        self.title_suffix = check_str(self.name(), "title_suffix", title_suffix, non_empty=False)
        #: history of every curve: {window: {line: [[x, y], ...]}}; checkpointed
        self.state: VisdomState = VisdomState()
        self.state.metrics = {}
        self._client: Any = None
        self._queue: queue.Queue[Callable[[], None] | None] | None = None
        self._thread: threading.Thread | None = None
        self._failed = False
        self._dropped = 0
        self._phase_rates = PhaseLearningRates()

    # ---- events ------------------------------------------------------------------------------

    def on_start(self, task: Task) -> None:
        self.check_task(task)
        if not is_primary():
            return
        self._client = self._connect()
        self._queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._failed = False
        self._thread = threading.Thread(target=self._send_loop, name="classy-hooks-visdom", daemon=True)
        self._thread.start()
        for window, lines in self.state.metrics.items():
            self._enqueue(self._redraw_job(window, {name: [list(p) for p in pts] for name, pts in lines.items()}))

    def on_phase_start(self, task: Task) -> None:
        if is_primary():
            self._phase_rates.start(task)

    def on_step(self, task: Task) -> None:
        if is_primary():
            self._phase_rates.step(task)  # the rates this step used: on_phase_end may see the next phase's

    def on_phase_end(self, task: Task) -> None:
        if not is_primary() or not task.losses:
            return
        x = float(max(int(task.train_phase_idx), 0))
        phase = task.phase_type
        points: list[tuple[str, str, float]] = []
        loss = mean_loss(task.losses)
        if loss is not None:
            points.append(("loss", phase, loss))
        if task.train:
            rates = self._phase_rates.rates(task)
            for i, rate in enumerate(rates):
                points.append(("learning_rate", "lr" if len(rates) == 1 else f"group_{i}", rate))
        for meter in task.meters:
            for key, value in meter_values(meter).items():
                points.append((f"{meter.name}_{key}", phase, value))
        for window, line, y in points:
            self.state.metrics.setdefault(window, {}).setdefault(line, []).append([x, float(y)])
            self._enqueue(self._append_job(window, line, x, float(y)))

    def on_end(self, task: Task) -> None:
        self.close(DRAIN_TIMEOUT)

    def close(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Send what is queued (waiting at most `timeout` seconds) and stop the sender thread."""
        if self._queue is None or self._thread is None:
            return
        # ask the server to write the env to its -env_path, so the plots outlive the server
        self._enqueue(lambda: self._client.save([self.env]))
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            logger.warning(
                "%s: the Visdom queue did not drain in %.0f s; unsent plots are dropped.", self.name(), timeout
            )
        self._thread.join(timeout)
        self._thread = None
        self._queue = None

    # ---- sending ------------------------------------------------------------------------------

    def window_id(self, window: str) -> str:
        """The Visdom window id of a metric window (stable across runs of the same env)."""
        return f"{self.env}:{window}"

    def _connect(self) -> Any:
        visdom = import_extra("visdom", self.name(), DISTRIBUTION, "visdom", INSTALL_COMMAND)

        quiet = logging.getLogger("visdom")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # visdom warns about the unused incoming socket and new sessions
        try:
            with warnings.catch_warnings():
                # visdom 0.2.4 calls the deprecated Logger.warn
                warnings.filterwarnings(
                    "ignore", message="The 'warn' method is deprecated", category=DeprecationWarning
                )
                client = visdom.Visdom(
                    server=self.server,
                    port=self.port,
                    env=self.env,
                    raise_exceptions=True,
                    use_incoming_socket=False,
                    send=False,  # the constructor would post once, without a timeout
                )
                limit_request_time(client.session, REQUEST_TIMEOUT)
                client.send = True
            reachable = client.win_exists("__classy_hooks_probe__", env=self.env) is not None
        except Exception as exc:  # ConnectionError from visdom, requests errors, bad URLs
            raise ServerUnreachableError(self._unreachable(f"{type(exc).__name__}: {exc}")) from exc
        finally:
            quiet.setLevel(level)
        if not reachable:
            raise ServerUnreachableError(self._unreachable("the server did not answer"))
        logger.info("%s: plotting to %s:%d, env %r.", self.name(), self.server, self.port, self.env)
        return client

    def _unreachable(self, why: str) -> str:
        return (
            f"{self.name()}: arguments 'server'/'port': no Visdom server answers at {self.server}:{self.port} ({why}). "
            "Start one (python -c 'from visdom.server.run_server import main; main()' -port "
            f"{self.port} -bind_local) or fix the address."
        )

    def _opts(self, window: str, lines: list[str]) -> dict[str, Any]:
        return {
            "title": f"{window}{self.title_suffix}",
            "xlabel": "train phase",
            "ylabel": window,
            "showlegend": True,
            "legend": lines,
        }

    def _append_job(self, window: str, line: str, x: float, y: float) -> Callable[[], None]:
        def send() -> None:
            self._client.line(
                X=[x],
                Y=[y],
                win=self.window_id(window),
                env=self.env,
                name=line,
                update="append",
                opts={"title": f"{window}{self.title_suffix}", "xlabel": "train phase", "showlegend": True},
            )

        return send

    def _redraw_job(self, window: str, lines: dict[str, list[list[float]]]) -> Callable[[], None]:
        def send() -> None:
            win = self.window_id(window)
            first = True
            for line, points in lines.items():
                xs = [p[0] for p in points]
                ys = [p[1] for p in points]
                if first:  # replaces the whole window, dropping points from after the checkpoint
                    self._client.line(X=xs, Y=ys, win=win, env=self.env, name=line, opts=self._opts(window, [line]))
                    first = False
                else:
                    self._client.line(X=xs, Y=ys, win=win, env=self.env, name=line, update="append")

        return send

    def _enqueue(self, job: Callable[[], None]) -> None:
        if self._queue is None or self._failed:
            return
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1:
                logger.warning("%s: the Visdom server is too slow; dropping plot updates.", self.name())

    def _send_loop(self) -> None:
        assert self._queue is not None
        jobs = self._queue
        while True:
            job = jobs.get()
            if job is None:
                return
            if self._failed:
                continue
            try:
                job()
            except Exception as exc:  # the server went away: warn once, keep training
                self._failed = True
                logger.warning(
                    "%s: lost the Visdom server at %s:%d (%s: %s); training continues without plots.",
                    self.name(),
                    self.server,
                    self.port,
                    type(exc).__name__,
                    exc,
                )
