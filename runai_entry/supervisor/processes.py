"""The job's processes: finding every one of them, signalling them, reaping them.

"The job" is every descendant of runai-entry. Because runai-entry is PID 1 or a child subreaper,
an orphan anywhere below it is re-parented to it rather than to the real init, so walking the
parent links down from our own pid finds them all — including processes that left the command's
process group (torchrun starts each worker in a session of its own). Our own storage helpers
(:mod:`runai_entry.supervisor.storage_io`) are children too, and are never part of the job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

from runai_entry.supervisor import storage_io


class Exited(NamedTuple):
    """One reaped process: its pid and its status in :mod:`subprocess` form (-N: signal N)."""

    pid: int
    returncode: int


class Stat(NamedTuple):
    """What /proc/PID/stat says of a process that the job's tree and its stop need."""

    state: str  # R, S, D, Z, ... (proc(5))
    parent: int
    session: int


def read_stat(pid: int | str) -> tuple[Stat, list[bytes]] | None:
    """One process's /proc/PID/stat: the fields the tree needs, and every field after the name
    (``fields[0]`` is the state, proc(5)'s field 3); None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:  # exited while we looked
        return None
    # The name in parentheses may hold anything, spaces included: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    return Stat(fields[0].decode(), int(fields[1]), int(fields[3])), fields


def scan() -> dict[int, Stat]:
    """Every process we can see, by pid (one /proc/PID/stat read each)."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (read := read_stat(name)) is not None:
            found[int(name)] = read[0]
    return found


def children_by_parent(stats: dict[int, Stat] | None = None) -> dict[int, list[int]]:
    """Parent pid → its children's pids, for every process we can see (``stats``: a
    :func:`scan` already made).

    Read here rather than through psutil: psutil costs ~10 ms to import, which had to be paid
    right after the start to keep it off the stop path, even for a job that had already exited.
    """
    children: dict[int, list[int]] = {}
    for pid, stat in (scan() if stats is None else stats).items():
        children.setdefault(stat.parent, []).append(pid)
    return children


def descendants(tree: dict[int, list[int]] | None = None) -> list[int]:
    """Pids of every live or zombie process of the job below runai-entry. ``tree``: a
    :func:`children_by_parent` already read, for a caller that needs it twice."""
    children = children_by_parent() if tree is None else tree
    ours = storage_io.running()
    found, todo = [], [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), ()):
            if pid not in ours:
                found.append(pid)
                todo.append(pid)
    return found


def job_children(tree: dict[int, list[int]] | None = None) -> list[int]:
    """Pids of runai-entry's own children that belong to the job (not its helpers).

    Every job process that is still alive is one of these or below one: an orphan is
    re-parented to us, so a job with none of them left is gone, even while a helper lives on.
    """
    ours = storage_io.running()
    mine = own_children() if tree is None else tree.get(os.getpid(), [])
    return [pid for pid in mine if pid not in ours]


def own_children() -> list[int]:
    """runai-entry's children, from the kernel's list of each of its threads' children (an
    adopted orphan joins one of them): a few small reads, where a scan of /proc reads every
    process on the machine. The supervisor asks this at every exit once a helper (the guardian)
    keeps ECHILD from saying that the job is gone; the scan cost ~10 ms there, cold."""
    me = os.getpid()
    if not os.path.exists(f"/proc/self/task/{me}/children"):  # a kernel without the lists
        return children_by_parent().get(me, [])
    found = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                found += [int(pid) for pid in f.read().split()]
        except FileNotFoundError:  # the thread ended since the listing
            continue
    return found


#: What a state letter of /proc/PID/stat says of a process that stopped making progress.
_STATES = {
    "R": "running (on a CPU, or ready: spinning?)",
    "S": "asleep",
    "D": "in uninterruptible sleep (waiting on storage or a device)",
    "T": "stopped",
    "t": "stopped by a debugger",
    "Z": "exited, not yet reaped",
}


def state_of(pid: int) -> dict[str, object]:
    """What the kernel says a process is doing, for the hang report: its state and, asleep,
    what it waits in (``futex_wait_queue``: a lock or a collective; ``nfs_*``: storage).

    Read from /proc rather than through psutil, which has no wait channel and would cost the
    supervisor ~10 ms of imports for two small files.
    """
    read = read_stat(pid)
    try:
        with open(f"/proc/{pid}/wchan", "rb") as f:
            wchan = f.read().decode(errors="replace").strip()
    except OSError:  # exited since the scan
        read = None
    if read is None:
        return {"pid": pid, "state": "gone"}
    fields = read[1]
    letter = fields[0].decode()
    # utime and stime, fields 14 and 15 of the whole line, in clock ticks.
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    described = {"pid": pid, "state": f"{letter}: {_STATES.get(letter, 'unknown')}",
                 "cpu_s": round(cpu, 2)}
    if wchan not in ("", "0"):
        described["waiting_in"] = wchan
    return described


def is_pid1() -> bool:
    return os.getpid() == 1


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to the command's process group: one system call, the fast path."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:  # every member of the group has exited
        pass


def signal_job(pgid: int, signum: int, *, group: bool = True) -> list[int]:
    """Send ``signum`` to every job process: the group first, then each descendant outside it.

    Descendants inside the group are not signalled twice (a second SIGTERM mid-save is what a
    naive handler gets wrong); nor is the group, with ``group=False``, when the caller already
    signalled it. Returns the pids of the job processes found, for the log.
    """
    if group:
        signal_group(pgid, signum)
    # The job was just woken, often onto this very CPU: let it take the signal now, before
    # the /proc scan below (~0.5 ms), not after (bench/signal_latency.py, first SIGTERM).
    os.sched_yield()
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
