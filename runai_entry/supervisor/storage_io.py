"""Storage I/O in short-lived helper processes, so a hung mount never holds runai-entry.

A call into a network filesystem whose server stopped answering (NFS ``hard``, a stalled FUSE
daemon) sleeps in the kernel until the server comes back; once a FUSE daemon holds the request,
not even SIGKILL ends it (NFS waits at least die on SIGKILL). On one of
runai-entry's own threads that would be fatal twice over: the thread that must answer SIGTERM
cannot, and a process whose thread is stuck in the kernel cannot finish exiting, so its exit
status never reaches the platform (seen on sshfs: a zombie runai-entry for 12 minutes). So every
operation on the checkpoint directory runs in a forked child, and runai-entry only waits for it,
against a deadline, in ``sigtimedwait`` like everything else it waits for. A helper that misses
its deadline is sent SIGKILL and forgotten: if it is stuck in the kernel it stays there, in a
process of its own, until the server answers. A fork costs about 1 ms.

The child reports through a memfd both what it is doing (its *stage*, so a timeout can say
what did not answer) and, at the end, its pickled result or exception. A memfd never blocks the
writer, whatever the size of the result, and the parent reads it only once the child is gone.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Collection
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Where the stage lives in the memfd; the result follows it.
_STAGE_SIZE = 256

#: A helper's work: called with ``stage(text)``, which records what it is about to do.
Work = Callable[[Callable[[str], None]], T]


class HelperTimeout(TimeoutError):
    """A helper did not finish before its deadline; ``stage`` says what it was doing."""

    def __init__(self, name: str, stage: str, waited: float) -> None:
        super().__init__(f"{name}: {stage} did not answer within {waited:.1f}s")
        self.stage = stage
        self.waited = waited


class Helper(Generic[T]):
    """One forked helper: its pid, its last stage, and its result once it is gone."""

    def __init__(self, pid: int, name: str, fd: int) -> None:
        self.pid = pid
        self.name = name
        self.started = time.monotonic()
        self._fd = fd
        self.returncode: int | None = None  # set once reaped, by poll() or by claim()

    @property
    def done(self) -> bool:
        return self.returncode is not None

    def poll(self) -> bool:
        """Reap the helper if it has exited; whether it is gone."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (a waitpid(-1)) without claim()
                _finished(self, -signal.SIGKILL)
            else:
                if pid:
                    _finished(self, os.waitstatus_to_exitcode(status))
        return self.done

    def stage(self) -> str:
        raw = os.pread(self._fd, _STAGE_SIZE, 0)
        return raw.rstrip(b"\0").decode("utf-8", errors="replace") or "starting"

    def result(self) -> T:
        """What the work returned; re-raises what it raised. Only once ``done``."""
        assert self.done, "result() of a helper still running"
        size = os.fstat(self._fd).st_size - _STAGE_SIZE
        if size <= 0:
            raise RuntimeError(f"{self.name}: helper ended ({self.returncode}) with no result")
        import pickle

        ok, value = pickle.loads(os.pread(self._fd, size, _STAGE_SIZE))
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def kill(self) -> None:
        """SIGKILL it if still running; one stuck in the kernel dies once it returns."""
        if not self.done:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # exited since we last looked
                pass
            self.poll()

    def close(self) -> None:
        """Let go of its report (the helper may run on, unreported)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


#: Helpers started and not yet reaped, by pid: whoever reaps with waitpid(-1) hands them back
#: through :func:`claim`, so a helper is never mistaken for a process of the job.
_running: dict[int, Helper[Any]] = {}


def start(work: Work[T], name: str, *, outlive_parent: bool = False) -> Helper[T]:
    """Fork a helper that runs ``work(stage)``.

    The helper keeps runai-entry's signal mask (the job's signals are blocked), so nothing but
    SIGKILL ends it. It gets SIGKILL when runai-entry dies, unless ``outlive_parent``: a history
    line still being written when runai-entry must exit is better finished late than never.
    """
    fd = os.memfd_create("runai-entry-helper", os.MFD_CLOEXEC)
    os.ftruncate(fd, _STAGE_SIZE)
    if not outlive_parent:
        from runai_entry.supervisor.prctl import (
            set_parent_death_signal,  # loads libc before the fork
        )
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the helper: nothing here may return into the parent's code
        code = 1
        try:
            if not outlive_parent:
                set_parent_death_signal(signal.SIGKILL)
                if os.getppid() != parent:  # runai-entry died before prctl: nothing to do
                    os._exit(code)
            _let_go_of_stdio()
            _report(fd, work)
            code = 0
        finally:
            os._exit(code)
    helper: Helper[T] = Helper(pid, name, fd)
    _running[pid] = helper
    return helper


def _let_go_of_stdio() -> None:
    # A helper stuck on the mount must not hold runai-entry's stdout and stderr open: whoever
    # reads them (a pipe to ``tee``, the container runtime) would wait for an EOF that only
    # comes when the server answers. It never writes to them anyway.
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    os.close(null)


def _report(fd: int, work: Work[Any]) -> None:
    import pickle  # here, not at the top: supervising a job without helpers never needs it

    def stage(text: str) -> None:
        os.pwrite(fd, text.encode("utf-8", errors="replace")[: _STAGE_SIZE].ljust(
            _STAGE_SIZE, b"\0"), 0)

    try:
        outcome: tuple[bool, Any] = (True, work(stage))
    except BaseException as exc:  # handed to the parent, which re-raises it
        outcome = (False, exc)
    try:
        data = pickle.dumps(outcome)
    except Exception as exc:  # an unpicklable value: say what it was rather than lose it
        data = pickle.dumps((False, RuntimeError(f"unpicklable helper result: {exc}")))
    view = memoryview(data)
    offset = _STAGE_SIZE
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def claim(pid: int, returncode: int) -> bool:
    """Hand over a reaped pid: True if it was a helper (then it is not a job process)."""
    helper = _running.get(pid)
    if helper is None:
        return False
    _finished(helper, returncode)
    return True


def _finished(helper: Helper[Any], returncode: int) -> None:
    helper.returncode = returncode
    _running.pop(helper.pid, None)


def running() -> frozenset[int]:
    """Pids of the helpers not yet reaped: children of runai-entry that are not the job."""
    return frozenset(_running)


def wait(helper: Helper[T], deadline: float, signals: Collection[int]) -> int | None:
    """Sleep in ``sigtimedwait`` until the helper is gone (None) or another signal arrives.

    ``signals`` must be blocked and include SIGCHLD, which is how a helper's exit wakes us. A
    signal other than SIGCHLD is returned to the caller, consumed: the caller acts on it or
    raises it again. Raises :class:`HelperTimeout` once the monotonic ``deadline`` has passed.
    """
    while not helper.poll():
        left = deadline - time.monotonic()
        if left <= 0:
            raise HelperTimeout(helper.name, helper.stage(), time.monotonic() - helper.started)
        info = signal.sigtimedwait(signals, left)
        if info is not None and info.si_signo != signal.SIGCHLD:
            return info.si_signo
    return None


def await_result(helper: Helper[T], deadline: float, signals: Collection[int],
                 on_signal: Callable[[int], None] | None = None) -> T:
    """The helper's result, once it is gone, or :class:`HelperTimeout` at ``deadline``.

    Signals that arrive meanwhile go to ``on_signal`` (which may raise to abandon the wait);
    without one they are dropped: after the job there is no one left to forward them to. The
    helper is neither killed nor closed here: the caller decides whether it may run on.
    """
    while (signum := wait(helper, deadline, signals)) is not None:
        if on_signal is not None:
            on_signal(signum)
    return helper.result()


def call(work: Work[T], name: str, timeout: float, signals: Collection[int],
         on_signal: Callable[[int], None] | None = None) -> T:
    """Run ``work`` in a helper and return its result (:func:`await_result`); the helper is
    killed on the way out, at the deadline too. ``timeout`` counts from the fork."""
    helper = start(work, name)
    try:
        return await_result(helper, helper.started + timeout, signals, on_signal)
    finally:
        helper.kill()
        helper.close()
