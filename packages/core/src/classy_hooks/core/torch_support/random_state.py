"""The random number generators, left as they were by work that must not perturb training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the CPU generator, and the current CUDA device's when CUDA is in use, on exit.

    A hook's side pass (profiling, recomputing BatchNorm statistics) draws from the generators
    through dropout or random augmentations; without this, a run with the hook would train on
    other random numbers than a run without it.
    """
    cuda_in_use = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda_in_use else []):
        yield
