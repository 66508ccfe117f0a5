"""One ``evaluate`` run per results folder at a time: an advisory lock on the folder itself (no file is added to
it), which the operating system releases when the run's process ends, also when it is killed, so a stopped run
never leaves its folder locked."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch

from captum_ext.evaluation.distributed import Processes


@contextmanager
def exclusive_folder(out: Path, group: Processes) -> Iterator[None]:
    """Hold ``out``'s lock for the block, taken by the run's main process; every process of the run learns whether
    another run holds it.

    Args:
        out (Path): the results folder (created when missing; a file there is left for the folder checks to name).
        group (Processes): the processes of this run.

    Yields:
        None

    Raises:
        ValueError: another run holds the folder.
    """
    held: Optional[int] = None
    busy = False
    if group.is_main:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no advisory locks on this platform: runs are not guarded
            fcntl = None
        if fcntl is not None and not (out.exists() and not out.is_dir()):
            out.mkdir(parents=True, exist_ok=True)
            held = os.open(out, os.O_RDONLY)
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(held)
                held, busy = None, True
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = [busy]
        torch.distributed.broadcast_object_list(flag, src=0)
        busy = bool(flag[0])
    if busy:
        raise ValueError(f"`out` {str(out)!r} is in use by another evaluate run: two runs in one folder would mix "
                         f"their results; wait for it to end, or use another folder")
    try:
        yield
    finally:
        if held is not None:
            os.close(held)  # releases the lock
