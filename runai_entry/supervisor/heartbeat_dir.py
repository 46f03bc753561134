"""The heartbeat directory: made before the start, read by the watchdog and at the end, removed.

Each job process that calls :func:`runai_entry.training.heartbeat` (the Checkpointer and the stop
flag do) keeps one small file here, named by its pid, laid out as
:data:`~runai_entry.core.heartbeat_file.LAYOUT` says (shared with the library, which writes it).
The directory exists whenever something reads it: the hang watchdog (``--hang-timeout``), and
the attempt history, whose goodput figures need the job's first step and its last
(``--checkpoint-dir``). It lives on tmpfs, so a beat is a store to a mapped page and costs the
job no system call.

Only ``os``, built-in modules, :mod:`runai_entry.core.heartbeat_file` (``struct``) and
:mod:`runai_entry.history.statedir` (``stat``, ``errno``, ``contextlib``) are imported: this
runs before the start, on the job's critical path.

A file is written by a job process, not by runai-entry: what it holds is checked as it is read
(:func:`read_beat`), so no value in it can become a traceback, or a NaN in the history.
"""

from __future__ import annotations

import math
import os
import signal
import time
from typing import NamedTuple

# The file's layout is core's, shared with the library that writes it; the supervisor reads it.
from runai_entry.core.heartbeat_file import LAYOUT, OLD_LAYOUT
from runai_entry.history.statedir import read_file


class Beat(NamedTuple):
    """One process's heartbeat file, as last written (see core/heartbeat_file.py)."""

    pid: int
    step: int
    beats: int
    last: float
    longest: float
    saving_since: float
    stack_signal: int
    first: float = 0.0  # 0: written by a library from before the first beat was kept


class Progress(NamedTuple):
    """What the job's heartbeats say of an attempt, on CLOCK_MONOTONIC (runai-entry's clock)."""

    first: float  # the first beat of any job process
    last: float  # the last beat of any
    last_step: int | None  # the highest step reported; None when no beat carried one


def create_directory() -> str:
    """A private directory on tmpfs (/dev/shm where it exists) for the job's heartbeat files."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else os.environ.get("TMPDIR", "/tmp")
    while True:
        path = os.path.join(base, f"runai-entry-heartbeat-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:  # 48 random bits taken already: draw again
            continue


def remove_directory(directory: str) -> None:
    """Remove the directory and the files in it (it holds nothing else)."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass
        os.rmdir(directory)
    except FileNotFoundError:  # removed already
        pass


def read_beat(path: str) -> Beat | None:
    """The beat in ``path``, checked; None when unreadable or not a beat.

    Not a beat: a file of another size, one whose pid is not its name (the watchdog signals
    that pid), or times that are not finite or before the clock began. Clamped: a time ahead of
    our clock (another boot's, or garbage) is now; a first beat after the last is the last;
    an unknown stack signal is 0 (none).
    """
    # The job may put anything in the directory: a FIFO named by a pid must not block the
    # watchdog, which reads from runai-entry's own thread.
    try:
        raw = read_file(None, path, LAYOUT.size)
    except OSError:  # not ours to read: a FIFO, a link
        return None
    if raw is None:  # the file vanished
        return None
    if len(raw) == LAYOUT.size:
        beat = Beat(*LAYOUT.unpack(raw))
    elif len(raw) == OLD_LAYOUT.size:  # a job on an older library than ours
        beat = Beat(*OLD_LAYOUT.unpack(raw))
    else:
        return None
    return _checked(beat, os.path.basename(path))


def _checked(beat: Beat, name: str) -> Beat | None:
    times = (beat.last, beat.longest, beat.saving_since, beat.first)
    if str(beat.pid) != name or not all(math.isfinite(t) and t >= 0.0 for t in times):
        return None
    now = time.monotonic()
    last = min(beat.last, now)
    return beat._replace(
        step=max(beat.step, -1), beats=max(beat.beats, 0), last=last,
        saving_since=min(beat.saving_since, now), first=min(beat.first, last),
        stack_signal=beat.stack_signal if beat.stack_signal in _SIGNALS else 0)


#: The signals a beat may ask for its stack dump.
_SIGNALS = frozenset(signal.valid_signals())


def progress(directory: str) -> Progress | None:
    """The job's first and last beat and its last step; None when nothing beat."""
    try:
        names = os.listdir(directory)
    except OSError:  # removed under us, or never made
        return None
    beats = [b for b in (read_beat(os.path.join(directory, n)) for n in names if n.isdigit())
             if b is not None and b.beats > 0]
    if not beats:
        return None
    steps = [b.step for b in beats if b.step >= 0]
    first = min((b.first for b in beats if b.first), default=0.0)
    return Progress(first or min(b.last for b in beats), max(b.last for b in beats),
                    max(steps, default=None))
