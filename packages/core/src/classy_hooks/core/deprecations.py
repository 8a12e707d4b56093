"""Silencing TorchScript's deprecation notices, by message only, around code that must still use it."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

#: Matches torch>=2.11's "`torch.jit.<name>` is deprecated" notices. They come as `DeprecationWarning`
#: on torch 2.11-2.13 and from fvcore's import, and as `FutureWarning` on torch 2.14, so filters built
#: from this pattern leave the category open; every other warning (e.g. a `TracerWarning`) still shows.
JIT_DEPRECATION_MESSAGE = r".*torch\.jit\.\w+` is deprecated"


@contextlib.contextmanager
def quiet_jit_deprecations() -> Iterator[None]:
    """Hide only TorchScript's deprecation notices inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION_MESSAGE)
        yield
