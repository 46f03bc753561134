"""The hang watchdog: a job whose training loop stopped beating is found, its stacks logged.

Each job process that calls :func:`runai_entry.training.heartbeat` keeps one file in a tmpfs
directory runai-entry creates (``RUNAI_ENTRY_HEARTBEAT_DIR``; see that module for the layout).
The supervisor asks :meth:`Watchdog.check` when :meth:`Watchdog.next_wake` falls due (the
earliest moment a watched process could be late, or the next look for new ones) and sleeps in
the kernel in between; a check reads only what changed.

A process is watched once it has beaten twice (its first step done: compiling a model or filling
a data-loader queue can take any time) and while it is a process of the job (a file written by
anything else is ignored). It is hung when its last beat is older than its allowance: the
``--hang-timeout`` (or, for ``auto``, the larger of :data:`AUTO_FLOOR` and :data:`AUTO_FACTOR`
times the longest interval it has shown after warm-up, the rule NVRx uses), or, while it
announces a save, ``--save-timeout`` from the start of the save.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, NamedTuple

from runai_entry.supervisor import storage_io
from runai_entry.supervisor.heartbeat_dir import Beat, read_beat
from runai_entry.supervisor.processes import state_of

if TYPE_CHECKING:
    from runai_entry.supervisor.logs import Logger

#: How often the watchdog looks for processes that started beating (one stat of the directory),
#: unless a timeout is shorter. Known processes wake it only when they fall due, so a job that
#: beats steadily costs a wake-up every SCAN_INTERVAL: a wake-up of a Python process costs
#: ~0.2 ms of CPU on a VM, and a process found late is judged from its own last beat anyway.
SCAN_INTERVAL = 10.0
#: ``auto``: never less than this, whatever the step times...
AUTO_FLOOR = 300.0
#: ...and otherwise this many times the longest interval between beats seen after warm-up.
AUTO_FACTOR = 5.0
#: After the stacks are requested, how long before the stop signal: a standard signal pending
#: with a real-time one is delivered first, and would end a process before it dumped.
DUMP_WINDOW = 1.0
#: How long the job gets between the stop signal and SIGKILL once it hung: it is not expected
#: to save, only to exit.
HANG_GRACE = 10.0
#: py-spy's time for one process's stacks.
PY_SPY_TIMEOUT = 5.0


class Hang(NamedTuple):
    """A job process that missed its allowance."""

    pid: int
    step: int | None
    age: float  # seconds since its last beat, or since its save began
    allowance: float
    saving: bool


#: How old a directory's unchanged mtime must be to mean that nothing was added since.
SETTLED_NS = 1_000_000_000


class Watchdog:
    """Which job processes beat, and whether one of them is late."""

    def __init__(self, directory: str, hang_timeout: float | str | None, save_timeout: float,
                 started: float, is_job_process: Callable[[int], bool]) -> None:
        self.directory = directory
        # A number of seconds, or None for auto (derived from each process's step times).
        self.hang_timeout = hang_timeout if isinstance(hang_timeout, float) else None
        self.save_timeout = save_timeout
        self.started = started
        self.is_job_process = is_job_process
        self.beats: dict[int, Beat] = {}  # the job's beating processes, as last read
        self.outsiders: set[int] = set()
        self._listed: int | None = None  # the directory's mtime when last listed
        shortest = min(self.hang_timeout or AUTO_FLOOR, save_timeout)
        self.scan_every = min(SCAN_INTERVAL, shortest)
        self._next = started + self.scan_every

    def next_wake(self) -> float:
        return self._next

    def allowance(self, beat: Beat) -> float:
        if beat.saving_since:
            return self.save_timeout
        if self.hang_timeout is not None:
            return self.hang_timeout
        return max(AUTO_FLOOR, AUTO_FACTOR * beat.longest)

    def _due(self, beat: Beat) -> float:
        """When ``beat`` becomes a hang, unless the process beats again; inf: not watched."""
        if beat.beats < 2:
            return float("inf")
        return (beat.saving_since or beat.last) + self.allowance(beat)

    def check(self, now: float) -> Hang | None:
        """The first job process past its allowance, or None.

        A file is read again only once its process is due (most checks read nothing but the
        directory's mtime), so a check costs a system call or two.
        """
        self._find_new()
        self._next = now + self.scan_every
        for pid, beat in list(self.beats.items()):
            if now >= self._due(beat):
                fresh = read_beat(os.path.join(self.directory, str(pid)))
                if fresh is None:  # the process is gone, and its file with it
                    del self.beats[pid]
                    continue
                self.beats[pid] = beat = fresh
                if now >= self._due(beat):
                    since = beat.saving_since or beat.last
                    return Hang(pid, None if beat.step < 0 else beat.step, now - since,
                                self.allowance(beat), bool(beat.saving_since))
            self._next = min(self._next, self._due(beat))
        return None

    def _find_new(self) -> None:
        """Read the files of processes that started beating since the last look."""
        try:
            mtime = os.stat(self.directory).st_mtime_ns
            # A directory's mtime ticks coarsely (a jiffy on tmpfs): a file made in the same
            # tick as the last listing leaves it unchanged, and would never be read. Only an
            # mtime over a second old is taken to mean "nothing new".
            if mtime == self._listed and time.time_ns() - mtime > SETTLED_NS:
                return
            self._listed = mtime
            names = os.listdir(self.directory)
        except OSError:  # removed under us: nothing to watch
            return
        for name in names:
            if not name.isdigit() or int(name) in self.beats or int(name) in self.outsiders:
                continue
            beat = read_beat(os.path.join(self.directory, name))
            if beat is None:
                continue
            if not self.is_job_process(beat.pid):  # outside the job, or exited already
                self.outsiders.add(beat.pid)
                continue
            self.beats[beat.pid] = beat

    def never_beat_after(self, now: float) -> bool:
        """Whether to tell the user nothing is watched: no beat by the first allowance."""
        first = AUTO_FLOOR if self.hang_timeout is None else self.hang_timeout
        return not self.beats and not self.outsiders and now - self.started >= first


class HangWatch:
    """The supervisor's side of the watchdog: when to look, what to do about a hang, and the
    stacks to log before the job is stopped. Each method is one call from the loop."""

    #: Seconds between the stop signal and SIGKILL once a job hung (see :data:`HANG_GRACE`).
    grace = HANG_GRACE

    def __init__(self, watchdog: Watchdog, hang_code: int, log: Logger,
                 signals: Collection[int]) -> None:
        self.watchdog = watchdog
        self.hang_code = hang_code
        self.log = log
        self.signals = signals  # what to keep answering while py-spy is awaited
        #: What the watchdog found, once it found a hang.
        self.hang: Hang | None = None
        self._told_unwatched = False
        self._dumper: storage_io.Helper[dict[int, str]] | None = None

    def next_wake(self) -> float:
        return self.watchdog.next_wake()

    def check(self, now: float) -> Hang | None:
        """A hang, if a job process is past its allowance; says once when nothing beats."""
        hang = self.watchdog.check(now)
        if hang is None and not self._told_unwatched and self.watchdog.never_beat_after(now):
            self._told_unwatched = True
            self.log.warning("watchdog_not_watching", reason="no job process has called "
                             "runai_entry.training.heartbeat()",
                             directory=self.watchdog.directory)
        return hang

    def dump(self, hang: Hang, job: list[int]) -> float:
        """Log the hang and ask every beating process (``job``: every job process, for
        py-spy) for its stacks; the seconds to allow them before the stop signal."""
        self.hang = hang
        # Logged before the stacks are asked for: the dumps go to the same stream, a fragment
        # at a time, and would cut a line of ours written meanwhile in two.
        tool = py_spy() is not None
        self.log.error("hang_detected", pid=hang.pid, step=hang.step,
                       last_beat_age=round(hang.age, 3), allowance=hang.allowance,
                       saving=hang.saving, stacks_from=sorted(self.watchdog.beats), py_spy=tool,
                       processes=[state_of(pid) for pid in job],
                       then=f"stop signal in {DUMP_WINDOW:g}s; exit {self.hang_code}")
        request_stacks(self.watchdog.beats)
        if tool:
            self._dumper = storage_io.start(lambda stage: py_spy_dumps(job), "py-spy")
        return DUMP_WINDOW

    def settle(self) -> None:
        """After the job: log py-spy's stacks, if it was asked for them."""
        if self._dumper is not None:
            log_py_spy_dumps(self._dumper, self.log, self.signals)


def request_stacks(beats: dict[int, Beat]) -> list[int]:
    """Ask each beating process to dump its threads' stacks (faulthandler, into its stderr)."""
    asked = []
    for beat in beats.values():
        try:
            os.kill(beat.pid, beat.stack_signal)
        except ProcessLookupError:  # gone since the check
            continue
        asked.append(beat.pid)
    return asked


def py_spy() -> str | None:
    """py-spy's path: on PATH, or beside our interpreter (``pip install py-spy`` in a venv)."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return shutil.which("py-spy") or (beside if os.access(beside, os.X_OK) else None)


def py_spy_dumps(pids: list[int]) -> dict[int, str]:
    """``py-spy dump`` of each pid, when py-spy is installed (run in a helper process)."""
    tool = py_spy()
    if tool is None:
        return {}
    dumps = {}
    for pid in pids:
        try:
            done = subprocess.run([tool, "dump", "--pid", str(pid)], capture_output=True,
                                  text=True, timeout=PY_SPY_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            dumps[pid] = f"py-spy gave no answer within {PY_SPY_TIMEOUT:g}s"
            continue
        dumps[pid] = (done.stdout or done.stderr).strip()
    return dumps


def log_py_spy_dumps(dumper: storage_io.Helper[dict[int, str]], log: Logger,
                     signals: Collection[int]) -> None:
    """Wait for the py-spy helper (answering ``signals`` meanwhile), log its stacks, end it."""
    try:
        for pid, text in storage_io.await_result(dumper, dumper.started + PY_SPY_TIMEOUT,
                                                 signals).items():
            log.error("stack_dump", pid=pid, tool="py-spy", stacks=text)
    except (storage_io.HelperTimeout, RuntimeError, OSError) as exc:
        log.warning("stack_dump_failed", tool="py-spy", problem=str(exc))
    finally:
        dumper.kill()
        dumper.close()
