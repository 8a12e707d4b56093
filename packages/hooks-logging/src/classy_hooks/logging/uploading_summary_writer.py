"""TensorBoard event files for a log dir given as an fsspec URL: written locally, uploaded at every flush.

tensorboardX writes `s3://` and `gs://` itself, but through boto3 / google-cloud-storage with their own endpoint
settings, and any other URL (`memory://`, `az://`, ...) it opens as a local file, creating a folder named `memory:`.
So for a URL log dir the hooks' writer writes into a local staging folder and every `flush()` (the hooks flush at
each phase end and on `on_end`) and `close()` uploads each event file whole to the URL through fsspec, with the same
configuration and credentials as every other classy-hooks URL. A reader of the URL sees the events up to the last
flush; an object store holds each event file as one object, replaced whole at every upload (O(file size) per flush).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

from classy_hooks.core.url_files import join, upload_file

logger = logging.getLogger(__name__)


class UploadingSummaryWriter:
    """A tensorboardX `SummaryWriter` on a local staging folder whose files `flush()` and `close()` upload to `url`.

    Every other attribute is the wrapped writer's. A failed upload at `flush()` is logged (one warning per
    outage) and retried at every later flush; each upload sends whole files, so a later success catches up on
    everything. One at `close()` raises `OSError`, which the TensorBoard hooks turn into a warning, never a failed
    run. The staging folder is removed only once `close()` uploaded everything, so no event is lost.
    """

    def __init__(self, tensorboardx: Any, url: str, hook: str, **kwargs: Any) -> None:
        self._url = url
        self._hook = hook
        self._staging = tempfile.mkdtemp(prefix="classy-hooks-tensorboard.")
        self._failing = False
        self._writer = tensorboardx.SummaryWriter(logdir=self._staging, **kwargs)
        logger.info("%s: TensorBoard events for %s are staged in %s.", hook, url, self._staging)

    @property
    def logdir(self) -> str:
        """The URL the events are uploaded to."""
        return self._url

    @property
    def staging_folder(self) -> str:
        """The local folder tensorboardX writes into."""
        return self._staging

    def __getattr__(self, name: str) -> Any:
        if name == "_writer":  # not set yet (e.g. a failed __init__): no recursion
            raise AttributeError(name)
        return getattr(self._writer, name)

    def flush(self) -> None:
        """Flush the event files, then upload each one whole (a failure is a warning: the next flush retries)."""
        self._writer.flush()
        try:
            self._upload()
        except OSError as exc:
            if not self._failing:  # one warning per outage, not one per phase
                logger.warning("%s: %s. Each later flush retries.", self._hook, exc)
            self._failing = True
            return
        if self._failing:
            logger.info("%s: uploads to %s work again; every event so far is uploaded.", self._hook, self._url)
        self._failing = False

    def close(self) -> None:
        """Close the writer, upload the final event files and remove the staging folder."""
        self._writer.close()
        self._upload()
        shutil.rmtree(self._staging, ignore_errors=True)

    def _upload(self) -> None:
        for folder, _, names in os.walk(self._staging):
            for name in sorted(names):
                local = os.path.join(folder, name)
                relative = os.path.relpath(local, self._staging).replace(os.sep, "/")
                try:
                    upload_file(local, join(self._url, relative), self._hook, "summary_writer")
                except Exception as exc:  # each store raises its own types; the hooks handle OSError
                    raise OSError(
                        f"uploading {local} to {join(self._url, relative)} failed ({type(exc).__name__}: {exc}); "
                        f"the events are kept in {self._staging}"
                    ) from exc
