"""The first failure: which job process ended abnormally first, and how — even below a launcher.

The loop reaps its own children and the orphans re-parented to it, and learns their status
exactly. A launcher's workers are neither: torchrun reaps its ranks itself, so when rank 1 dies
of SIGKILL, all runai-entry would ever see is torchrun exiting 1 once it has stopped the others.
Torch elastic's own answer (``ProcessFailure``, the "root cause") stays inside torchrun.

So an :class:`Observer` thread holds a pidfd of every job process that is not our child, and
sleeps in ``poll`` on them. A pidfd becomes readable the moment its process exits, before its
parent reaps it; the zombie's ``/proc/PID/stat`` then still carries its wait status (field 52),
and torchrun's monitor looks only every 0.1 s. The processes are found by scanning /proc on a
schedule that thins out (0.5 s, 1 s, 2 s, … then once a minute): launchers start their workers
in the first seconds, and a scan a minute costs an idle job about a millisecond.

The thread only makes system calls and appends to a list: it takes no lock the supervisor's
signal path needs, and the loop stays one thread that sleeps in the kernel.
"""

from __future__ import annotations

import os
import select
import threading
import time

from runai_entry.supervisor.processes import (
    children_by_parent,
    descendants,
    job_children,
    read_stat,
)

#: The first scan, after the start; each next one waits twice as long, up to LAST_SCAN_EVERY.
FIRST_SCAN = 0.5
LAST_SCAN_EVERY = 60.0


def watch_limit() -> int:
    """How many pidfds the observer may hold: a quarter of the descriptor limit, at most 1024.

    A container's soft limit is often 1024, and a job of a thousand processes once took nearly
    every descriptor: at SIGTERM the scan of /proc failed with EMFILE and runai-entry died, with
    no SIGKILL at the deadline and the job left running. The other three quarters are the stop
    path's (the /proc scan, the storage helpers' pipes). Past the limit, processes go unwatched:
    the first failure among them is not seen, which is all it costs.
    """
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(0, min(1024, soft // 4))


class Observer:
    """Watches every job process below runai-entry's children for an abnormal end."""

    def __init__(self, started: float) -> None:
        self.started = started
        #: Abnormal ends seen, in order: (pid, returncode as subprocess gives it, seconds since
        #: the start). Appended by the thread; read once it has stopped.
        self.ended: list[tuple[int, int, float]] = []
        self._watched: dict[int, int] = {}  # pidfd -> pid
        self._seen: set[int] = set()
        self._limit = watch_limit()
        self._poll = select.poll()
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC)
        self._poll.register(self._wake_read, select.POLLIN)
        self._thread = threading.Thread(target=self._run, name="runai-entry first failure",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[tuple[int, int, float]]:
        """End the thread (one last look at what ended) and return the abnormal ends."""
        os.write(self._wake_write, b"x")
        self._thread.join()
        for fd in self._watched:
            os.close(fd)
        os.close(self._wake_read)
        os.close(self._wake_write)
        return self.ended

    def _run(self) -> None:
        interval = FIRST_SCAN
        next_scan = self.started + interval
        while True:
            timeout_ms = max(0, int((next_scan - time.monotonic()) * 1000) + 1)
            ready = [fd for fd, _ in self._poll.poll(timeout_ms)]
            self._collect([fd for fd in ready if fd != self._wake_read])
            if self._wake_read in ready:
                return
            if time.monotonic() >= next_scan:
                self._scan()
                interval = min(interval * 2, LAST_SCAN_EVERY)
                next_scan = time.monotonic() + interval

    def _scan(self) -> None:
        tree = children_by_parent()  # one /proc read for both questions
        ours = set(job_children(tree))  # the loop reaps these itself, with their exact status
        for pid in descendants(tree):
            if pid in self._seen or pid in ours:
                continue
            if len(self._watched) >= self._limit:
                return
            self._seen.add(pid)
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:  # ended between the scan and now: too late to know how
                continue
            except OSError:  # out of descriptors, or a kernel without pidfds: watch no more
                return
            self._watched[fd] = pid
            self._poll.register(fd, select.POLLIN)

    def _collect(self, fds: list[int]) -> None:
        for fd in fds:
            pid = self._watched.pop(fd)
            self._poll.unregister(fd)
            os.close(fd)
            returncode = zombie_status(pid)
            if returncode:  # None: its parent reaped it first; 0: a normal end
                self.ended.append((pid, returncode, time.monotonic() - self.started))


def zombie_status(pid: int) -> int | None:
    """An exited, not yet reaped process's status in :mod:`subprocess` form (-N: signal N), or
    None when it is gone already (or, pid reused, is running again)."""
    read = read_stat(pid)
    if read is None:
        return None
    fields = read[1]
    # Field 3 is the state; field 52, the wait status, is the 50th after it (proc(5)).
    if fields[0] != b"Z" or len(fields) < 50:
        return None
    return os.waitstatus_to_exitcode(int(fields[49]))
