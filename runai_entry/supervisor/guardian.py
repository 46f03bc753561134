"""What a SIGKILLed runai-entry leaves running: nothing, whatever sessions the job made.

As PID 1, runai-entry's death ends the PID namespace and the kernel kills every process in it.
Elsewhere (a drill on a workstation, a container whose PID 1 is a shell), the command gets
SIGKILL as its parent-death signal, but its own children do not: torchrun's workers, in sessions
of their own, trained on and wrote checkpoints for nobody after a ``kill -9`` of runai-entry
(or the OOM killer's). And being a subreaper no longer helps once runai-entry itself is gone.

So, when runai-entry is not PID 1, it forks a guardian after the start: a helper process with
runai-entry's signals blocked (only SIGKILL ends it) that sleeps in ``poll`` on runai-entry's
pidfd and on a pipe. When the job is over, runai-entry writes to the pipe and the guardian exits.
When runai-entry dies without having written, the guardian SIGKILLs every process whose
environment holds this attempt's :data:`~runai_entry.core.envvars.JOB_TOKEN`: every job process
inherits it, in whatever session (a process that clears its environment escapes it). It costs
a fork after the start and a sleeping process of a few MB of pages shared with runai-entry
(docs/benchmarks.md).
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from contextlib import suppress

from runai_entry.core.envvars import JOB_TOKEN
from runai_entry.supervisor import storage_io

#: The guardian's process name (``ps``, ``top``).
NAME = "runai-guardian"

#: How long the guardian keeps looking for job processes to kill (a fork in flight may add one).
SWEEP_SECONDS = 2.0


class Guardian:
    """The guardian of one attempt: :meth:`start` it once the job runs (the supervisor does,
    before its first sleep: a job that exits at once never waits for the fork), and
    :meth:`dismiss` it once the job is gone."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._write = -1

    def start(self) -> None:
        token = self.token
        self._read, self._write = os.pipe2(os.O_CLOEXEC)
        try:
            parent = os.pidfd_open(os.getpid())
        except OSError:  # a kernel before 5.3: no pidfd to wait on, no guardian
            os.close(self._read)
            os.close(self._write)
            self._write = -1
            return
        storage_io.start(_guard(parent, self._read, token), "guardian", outlive_parent=True)
        os.close(parent)
        os.close(self._read)

    def dismiss(self) -> None:
        """The job is over: the guardian exits without touching anything."""
        if self._write >= 0:
            os.write(self._write, b"x")
            os.close(self._write)
            self._write = -1


def _guard(parent: int, dismissed: int, token: str) -> Callable[[Callable[[str], None]], int]:
    def work(stage: Callable[[str], None]) -> int:
        # A name to tell it apart in ps and top (15 bytes at most).
        with suppress(OSError), open("/proc/self/comm", "w") as comm:
            comm.write(NAME)
        poll = select.poll()
        poll.register(parent, select.POLLIN)
        poll.register(dismissed, select.POLLIN)
        ready = {fd for fd, _ in poll.poll()}
        if dismissed in ready and os.read(dismissed, 1):
            return 0
        stage("runai-entry died: killing its job")
        return sweep(token.encode())

    return work


def sweep(token: bytes) -> int:
    """SIGKILL every process whose environment holds ``token``, until a look finds none (or
    :data:`SWEEP_SECONDS` pass); how many were killed."""
    marker = JOB_TOKEN.encode() + b"=" + token
    killed: set[int] = set()
    deadline = time.monotonic() + SWEEP_SECONDS
    while time.monotonic() < deadline:
        found = [pid for pid in _pids() if pid not in killed and _carries(pid, marker)]
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # exited meanwhile
                continue
            killed.add(pid)
        time.sleep(0.05)
    return len(killed)


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _carries(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:  # gone, or not ours to read
        return False
    return environ.startswith(marker + b"\0") or b"\0" + marker + b"\0" in environ
