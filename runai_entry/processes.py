"""The job's processes: finding every one of them, signalling them, reaping them.

"The job" is every descendant of runai-entry. Because runai-entry is PID 1 or a child subreaper,
an orphan anywhere below it is re-parented to it rather than to the real init, so walking the
parent links down from our own pid finds them all — including processes that left the command's
process group (torchrun starts each worker in a session of its own). Our own storage helpers
(:mod:`runai_entry.helpers`) are children too, and are never part of the job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

from runai_entry import helpers


class Exited(NamedTuple):
    """One reaped process: its pid and its status in :mod:`subprocess` form (-N: signal N)."""

    pid: int
    returncode: int


def descendants() -> list[int]:
    """Pids of every live or zombie process of the job below runai-entry."""
    import psutil  # imported after the job has started (see run.py), never on the start-up path

    ours = helpers.running()
    return [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in ours]


def job_children() -> list[int]:
    """Pids of runai-entry's own children that belong to the job (not its helpers).

    Every job process that is still alive is one of these or below one: an orphan is
    re-parented to us, so a job with none of them left is gone, even while a helper lives on.
    """
    import psutil

    ours = helpers.running()
    return [p.pid for p in psutil.Process().children() if p.pid not in ours]


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to the command's process group: one system call, the fast path."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:  # every member of the group has exited
        pass


def signal_job(pgid: int, signum: int) -> list[int]:
    """Send ``signum`` to every job process: the group first, then each descendant outside it.

    Descendants inside the group are not signalled twice (a second SIGTERM mid-save is what a
    naive handler gets wrong). Returns the pids of the job processes found, for the log.
    """
    signal_group(pgid, signum)
    found = []
    for pid in descendants():
        try:
            if os.getpgid(pid) != pgid:
                os.kill(pid, signum)
        except ProcessLookupError:  # exited since the scan: nothing left to signal
            continue
        found.append(pid)
    return found


def reap() -> Iterator[Exited]:
    """Yield every child that has exited, without blocking; stop when none is ready.

    Raises ChildProcessError (ECHILD) when runai-entry has no children left at all: that is how
    the supervisor learns the last job process is gone. The last one to exit is always our own
    child by then, since its parent, being a job process too, exited first and orphaned it to us.
    """
    while True:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        yield Exited(pid, os.waitstatus_to_exitcode(status))
