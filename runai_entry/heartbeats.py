"""The heartbeat directory: made before the start, read by the watchdog and at the end, removed.

Each job process that calls :func:`runai_entry.training.heartbeat` (the Checkpointer and the stop
flag do) keeps one small file here, named by its pid (the layout is the library's
:data:`~runai_entry.training.heartbeat.LAYOUT`). The directory exists whenever something reads
it: the hang watchdog (``--hang-timeout``), and the attempt history, whose goodput figures need
the job's first step and its last (``--checkpoint-dir``). It lives on tmpfs, so a beat is a
store to a mapped page and costs the job no system call.

Only ``os`` and :mod:`.statefiles` (``stat``, ``errno``, ``contextlib``) are imported: this runs
before the start, on the job's critical path.
"""

from __future__ import annotations

import os
from typing import NamedTuple

# The library owns the file's layout; the supervisor only reads it.
from runai_entry.statefiles import read_file
from runai_entry.training.heartbeat import LAYOUT, OLD_LAYOUT


class Beat(NamedTuple):
    """One process's heartbeat file, as last written (see training/heartbeat.py)."""

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
    # The job may put anything in the directory: a FIFO named by a pid must not block the
    # watchdog, which reads from runai-entry's own thread.
    try:
        raw = read_file(None, path, LAYOUT.size)
    except OSError:  # not ours to read: a FIFO, a link
        return None
    if raw is None:  # the file vanished
        return None
    if len(raw) == LAYOUT.size:
        return Beat(*LAYOUT.unpack(raw))
    if len(raw) == OLD_LAYOUT.size:  # a job on an older library than ours
        return Beat(*OLD_LAYOUT.unpack(raw))
    return None


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
