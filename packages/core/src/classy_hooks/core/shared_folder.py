"""Check that a folder is one shared folder for every rank (not a node-local path that merely exists everywhere)."""

from __future__ import annotations

import contextlib
import secrets

from classy_hooks.core.distributed import all_reduce, get_rank, get_world_size, is_distributed, is_primary
from classy_hooks.core.errors import HookConfigError
from classy_hooks.core.files import atomic_write, ensure_writable_folder, file_exists, remove_file
from classy_hooks.core.url_files import join

PROBE_PREFIX = ".classy-hooks-shared-folder-probe-"


def check_shared_folder(hook: str, arg: str, folder: str, why: str, fix: str) -> None:
    """Under torch.distributed, raise `HookConfigError` on every rank unless all ranks see the same `folder`.

    A collective: every rank calls it, after the primary rank created the folder. The primary
    writes a probe file with a random name; every other rank must find it and be able to write in
    the folder. `why` says why the hook needs a shared folder, `fix` what to do instead. A no-op
    without a process group. `folder` may be an fsspec URL (an in-memory one is never shared).
    """
    if not is_distributed():
        return
    token = 0
    if is_primary():
        with contextlib.suppress(Exception):  # any failure (a store's own error types too) is reported on every rank
            candidate = secrets.randbelow(2**52) + 1  # exact as the float64 all_reduce carries it
            with atomic_write(join(folder, f"{PROBE_PREFIX}{candidate}"), "wb") as handle:
                handle.write(b"written by the primary rank to check that every rank sees this folder\n")
            token = candidate
    token = int(all_reduce(float(token), op="max"))
    problem = ""
    if token == 0:
        problem = "the primary rank could not write a probe file there"
    elif not is_primary():
        try:
            ensure_writable_folder(hook, arg, folder, create=False)
            if not file_exists(join(folder, f"{PROBE_PREFIX}{token}")):
                problem = f"rank {get_rank()} sees a different folder at that path (the primary rank's file is missing)"
        except Exception as exc:  # raised on one rank only, it would leave the others waiting in all_reduce
            problem = f"rank {get_rank()} cannot use it ({exc})"
    failures = int(all_reduce(float(bool(problem)), op="sum"))
    if is_primary() and token:
        with contextlib.suppress(Exception):
            remove_file(join(folder, f"{PROBE_PREFIX}{token}"))
    if failures:
        detail = problem or f"{failures} of {get_world_size()} ranks do not see the primary rank's folder"
        raise HookConfigError(
            f"{hook}: argument '{arg}' = {folder!r} is not one folder shared by all ranks: {detail}. {why}, so it "
            f"must be on a file system every node mounts at the same path (NFS, Lustre, ...). {fix}"
        )
