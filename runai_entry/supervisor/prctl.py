"""The two Linux process-control calls a supervisor needs that Python's os module lacks."""

from __future__ import annotations

import ctypes
import os

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def set_child_subreaper() -> None:
    """Adopt orphaned descendants, as PID 1 would.

    Without this, a daemon that double-forks out of the job is re-parented to the real init:
    runai-entry could neither wait for it nor reap it, and it would outlive the job.
    """
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(signum: int) -> None:
    """Have the kernel send ``signum`` to the calling process when its parent thread dies."""
    _prctl(PR_SET_PDEATHSIG, signum)
