"""The heartbeat: the training loop tells runai-entry it is still making progress.

``heartbeat(step)`` is cheap enough for every step and makes no system call after the first:
each process owns one small file in a directory on tmpfs that runai-entry names in
``RUNAI_ENTRY_HEARTBEAT_DIR`` (when its watchdog or its attempt history reads it: with
``--hang-timeout`` or ``--checkpoint-dir``; otherwise the call returns at once), maps it, and
overwrites it in place. runai-entry reads the files on its own
timer. The beat must come from the loop itself, never from a thread of its own: a thread keeps
beating while the loop is frozen (a deadlocked data loader, a collective whose peer died), which
is exactly what the watchdog is for.

A save announces itself (``with saving():``) so that runai-entry applies ``--save-timeout``
instead of the step allowance while it runs. The first beat also registers a :mod:`faulthandler`
dump of every thread's stack on :data:`STACK_SIGNAL`, which runai-entry sends before it stops a
hung job, so the log says where it hung. The stop flag and the Checkpointer beat by themselves.

The file's layout is :mod:`runai_entry.core.heartbeat_file`.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from runai_entry.core import envvars
from runai_entry.core.heartbeat_file import LAYOUT, OLD_LAYOUT, STACK_SIGNAL, WARM_UP_BEATS

__all__ = ["LAYOUT", "OLD_LAYOUT", "STACK_SIGNAL", "WARM_UP_BEATS", "heartbeat", "saving"]


class _Beat:
    """This process's file, mapped, and what the next write needs."""

    def __init__(self, directory: str) -> None:
        import faulthandler
        import sys

        self.pid = os.getpid()
        path = os.path.join(directory, str(self.pid))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, LAYOUT.size)
            self.map = mmap.mmap(fd, LAYOUT.size)
        finally:
            os.close(fd)
        self.step = -1
        self.beats = 0
        self.last = 0.0
        self.longest = 0.0
        self.saving_since = 0.0
        self.first = 0.0
        self.saves = 0  # nested saves: a Checkpointer's save around an atomic write
        if sys.stderr is not None:
            faulthandler.register(STACK_SIGNAL, file=sys.stderr, all_threads=True, chain=False)

    def write(self, now: float) -> None:
        LAYOUT.pack_into(self.map, 0, self.pid, self.step, self.beats, now, self.longest,
                         self.saving_since, STACK_SIGNAL, self.first)


#: None: not opened yet in this process; False: runai-entry is not watching (or cannot be told).
_beat: _Beat | bool | None = None


def _open() -> _Beat | bool:
    global _beat
    directory = os.environ.get(envvars.HEARTBEAT_DIR, "")
    try:
        _beat = _Beat(directory) if directory else False
    except OSError:  # the directory is gone (runai-entry exited) or unwritable: nobody watches
        _beat = False
    return _beat


def _forget_in_child() -> None:
    # A forked child (a data-loader worker) must not beat into its parent's file: that would
    # hide a frozen parent. It opens its own file on its first beat, if it ever beats.
    global _beat
    _beat = None


os.register_at_fork(after_in_child=_forget_in_child)


def heartbeat(step: int | None = None) -> None:
    """Tell runai-entry the training loop is alive, at ``step`` if given. Call once per step."""
    beat = _beat if _beat is not None else _open()
    if beat is False:
        return
    assert isinstance(beat, _Beat)
    now = time.monotonic()
    if beat.beats > WARM_UP_BEATS and now - beat.last > beat.longest:
        beat.longest = now - beat.last
    if not beat.beats:
        beat.first = now
    beat.beats += 1
    beat.last = now
    if step is not None:
        beat.step = step
    beat.write(now)


@contextmanager
def saving() -> Iterator[None]:
    """Around a checkpoint save: runai-entry allows ``--save-timeout`` for it, not a step's."""
    beat = _beat if _beat is not None else _open()
    if not isinstance(beat, _Beat):
        yield
        return
    beat.saves += 1
    if beat.saves == 1:
        beat.saving_since = time.monotonic()
        beat.write(beat.last or beat.saving_since)
    try:
        yield
    finally:
        beat.saves -= 1
        if beat.saves == 0:
            beat.saving_since = 0.0
            heartbeat()
