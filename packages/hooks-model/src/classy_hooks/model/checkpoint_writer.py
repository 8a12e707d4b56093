"""Non-blocking checkpoint saves: the state is copied in one `torch._foreach_copy_`, one long-lived thread writes it.

The training thread's stall is the copy into CPU buffers kept from the previous save (allocated and paged in
once), plus one walk of the state structure that also checks every value loads with `weights_only=True`.
The writer thread is started at the first save and lives until `close()`; it holds the GIL only while
`torch.save` pickles the structure, and the bulk (file writes, checksum, fsync) runs without it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from classy_hooks.model import foreach_ops
from classy_hooks.model.checkpoint_io import _KEY_TYPES, _LEAF_TYPES, check_weights_only

logger = logging.getLogger(__name__)

_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)
_STOP = object()
_IDLE_POLL_SECONDS = 0.5  # how often an idle writer checks whether the main thread has ended


class StateSnapshot:
    """Copies of a state structure's tensors in CPU buffers that are reused by the next snapshot of the same layout."""

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor] = []

    def take(self, value: Any) -> Any:
        """`value` rebuilt with every tensor replaced by a CPU copy; the copies are made by one `_foreach_copy_`.

        The previous result must no longer be in use (its buffers are overwritten). A tensor that appears
        twice is copied once and appears twice in the result, as `torch.save` would store it once. Values
        `torch.load(weights_only=True)` cannot load raise `CheckpointError` naming the key (`check_weights_only`).
        """
        sources: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        copies: dict[int, torch.Tensor] = {}
        buffers = self._buffers

        def reject() -> None:
            check_weights_only(value)  # the slow walk that names the key (passes for rarer allowed types)

        def copy(item: Any) -> Any:
            kind = type(item)
            if kind is dict or kind is OrderedDict:
                rebuilt = kind()
                for key, child in item.items():
                    if type(key) not in _KEY_TYPES:
                        reject()
                    rebuilt[key] = copy(child)
                return rebuilt
            if kind is list or kind is tuple:
                children = [copy(child) for child in item]
                return children if kind is list else tuple(children)
            if isinstance(item, torch.Tensor):
                if kind not in _PLAIN_TENSORS:
                    reject()
                known = copies.get(id(item))
                if known is not None:
                    return known
                source = item.detach()
                i = len(targets)
                old = buffers[i] if i < len(buffers) else None
                if (
                    old is None
                    or old.dtype != source.dtype
                    or old.shape != source.shape
                    or old.stride() != source.stride()
                ):
                    old = torch.empty_strided(source.shape, source.stride(), dtype=source.dtype, device="cpu")
                sources.append(source)
                targets.append(old)
                copies[id(item)] = old
                return old
            if kind not in _LEAF_TYPES:
                reject()
            return item

        result = copy(value)
        if sources:
            foreach_ops.copy_(targets, sources)
        self._buffers = targets
        return result


class CheckpointWriter:
    """One background thread that runs `write(job)` for each submitted job, one at a time, in order.

    At most one job is in flight: `submit` first waits for the previous one. A failed job's exception is
    raised by the next `wait()` (which `submit` calls). The thread is not a daemon, so a job in flight when
    the program ends is finished first; an idle thread ends by itself once the main thread has ended.
    """

    def __init__(self, write: Callable[[Any], None], name: str = "classy-hooks-checkpoint") -> None:
        self._write = write
        self._name = name
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def in_flight(self) -> bool:
        """True while a submitted job is being written."""
        return not self._idle.is_set()

    def submit(self, job: Any) -> None:
        """Wait for the previous job (raising its error), then hand `job` to the writer thread and return."""
        self.wait()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=False)
            self._thread.start()
        self._idle.clear()
        self._jobs.put(job)

    def wait(self) -> None:
        """Block until the job in flight is written; raise its exception if it failed."""
        self._idle.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Wait for the job in flight, then end the thread (a later `submit` starts a new one)."""
        try:
            self.wait()
        finally:
            if self._thread is not None:
                self._jobs.put(_STOP)
                self._thread.join()
                self._thread = None

    def _run(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=_IDLE_POLL_SECONDS)
            except queue.Empty:
                if not threading.main_thread().is_alive():
                    return
                continue
            if job is _STOP:
                return
            try:
                self._write(job)
            except BaseException as exc:
                self._error = exc
            finally:
                self._idle.set()
