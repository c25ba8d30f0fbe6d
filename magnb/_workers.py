"""Worker processes that end with their parent (a stage killed with SIGKILL leaves none behind)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool whose workers die with the process that made it: on Linux through
    ``PR_SET_PDEATHSIG``, elsewhere they exit at their next task (a worker of a process killed
    with SIGKILL would otherwise wait for its next task forever, or finish writing its file)."""
    return ProcessPoolExecutor(workers, initializer=_end_with_parent, initargs=(os.getpid(),))


def _end_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that
        os._exit(1)
