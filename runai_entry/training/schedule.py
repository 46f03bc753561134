"""When to save: every N steps and/or every T seconds, whichever comes first; or "auto"."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from typing import Any


class Periodic:
    """Decides whether a periodic checkpoint is due.

    ``every_steps`` and ``every_seconds`` may be combined; a save is due as soon as either
    interval has passed since the last :meth:`mark`. Time is measured on the monotonic clock from
    construction (or the last mark), so a resumed run does not save right away.

    Typical use::

        periodic = Periodic(every_steps=500, every_seconds=15 * 60)
        ...
        if periodic.due(step) or flag.should_stop():
            save(step)
            periodic.mark(step)

    Under ``torch.distributed`` a time interval falls due on each rank's own clock: wrap the
    decision in :func:`runai_entry.training.dist.agree` (``agree(periodic.due(step))[0]``) so
    every rank saves at the same step (``every_steps`` alone is the same on every rank and needs
    no agreement); the Checkpointer does this by itself.
    """

    def __init__(
        self,
        every_steps: int | None = None,
        every_seconds: float | None = None,
        *,
        start_step: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_steps is None and every_seconds is None:
            raise ValueError("give every_steps, every_seconds or both")
        if every_steps is not None and every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, not {every_steps}")
        if every_seconds is not None and not every_seconds > 0:
            raise ValueError(f"every_seconds must be > 0, not {every_seconds}")
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self._clock = clock
        self.last_step = start_step
        self.last_time = clock()

    @classmethod
    def minutes(cls, minutes: float, every_steps: int | None = None) -> Periodic:
        """``Periodic.minutes(15)``: every 15 minutes (and every ``every_steps`` if given)."""
        return cls(every_steps=every_steps, every_seconds=minutes * 60.0)

    def due(self, step: int) -> bool:
        """True when ``step`` is at least ``every_steps`` past the last mark, or time is up."""
        return self.due_by_steps(step) or self.due_by_time()

    def due_by_steps(self, step: int) -> bool:
        """The step interval alone: the same answer on every rank, so it needs no agreement."""
        return self.every_steps is not None and step - self.last_step >= self.every_steps

    def due_by_time(self) -> bool:
        """The time interval alone: each rank's own clock, so ranks must agree on it."""
        return (
            self.every_seconds is not None and self._clock() - self.last_time >= self.every_seconds
        )

    def seconds_until_due(self) -> float | None:
        """Seconds until the time interval is up (0 when overdue); None with no time interval."""
        if self.every_seconds is None:
            return None
        return max(0.0, self.every_seconds - (self._clock() - self.last_time))

    def mark(self, step: int) -> None:
        """Record that a checkpoint of ``step`` was just saved; both intervals restart."""
        self.last_step = step
        self.last_time = self._clock()


#: ``every_seconds="auto"`` without a preemption in the history (or before any save cost is
#: known): Young/Daly for a 30 s save and a preemption every ~4 h is about 15 minutes.
AUTO_DEFAULT_S = 900.0
#: ``auto_bounds``' default: never more often than a minute (a tiny save must not turn the
#: loop into a saving loop), never less often than an hour (a quiet history is no promise).
AUTO_BOUNDS = (60.0, 3600.0)
#: The most of the history read: its newest lines, enough for thousands of attempts.
HISTORY_TAIL = 1 << 20
#: How long reading the history may take before the loop goes on without it (a hung mount).
HISTORY_TIMEOUT = 5.0


class AutoInterval:
    """``Checkpointer(every_seconds="auto")``: the Young/Daly interval
    (:mod:`runai_entry.core.interval`) for the preemptions in runai-entry's attempt history
    and the save cost, within ``bounds``.

    The cost is the newest one the history holds (measured by an earlier attempt) until this
    process measures its own, at its first save: then the interval is chosen again, and
    :meth:`measured` returns the one line saying what was chosen and why.
    """

    def __init__(self, directory: str, bounds: tuple[float, float] = AUTO_BOUNDS) -> None:
        low, high = bounds
        if not 0 < low <= high < float("inf"):
            raise ValueError(f"expected (low, high) seconds with 0 < low <= high, not "
                             f"{bounds!r}")
        from runai_entry.core import interval
        from runai_entry.core.attempt_record import AttemptRecord

        self.bounds = (float(low), float(high))
        records = [AttemptRecord.from_json(line) for line in read_history(directory)]
        self.rate = interval.preemption_rate(records)
        self.save_s = interval.latest_save_cost(records)
        self.seconds = self._choose()
        self.said = False

    @classmethod
    def of(cls, every_seconds: float | str | None, directory: str,
           bounds: tuple[float, float]) -> tuple[AutoInterval | None, float | None]:
        """The Checkpointer's ``every_seconds`` read: the auto interval (None unless it is
        ``"auto"``) and the seconds to start with. Raises
        :class:`~runai_entry.core.errors.ConfigError` for another string or bad bounds."""
        from runai_entry.core.errors import ConfigError

        if not isinstance(every_seconds, str):
            return None, every_seconds
        if every_seconds != "auto":
            raise ConfigError(f"every_seconds must be seconds or 'auto', not {every_seconds!r}")
        try:
            auto = cls(directory, bounds)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"auto_bounds: {exc}") from None
        return auto, auto.seconds

    def _choose(self) -> float:
        from runai_entry.core import interval

        between = self.rate.mean_between_s
        if between is None or self.save_s is None:
            return interval.clamp(AUTO_DEFAULT_S, self.bounds)
        return interval.clamp(interval.optimum(self.save_s, between), self.bounds)

    def measured(self, stall_s: float) -> str | None:
        """A save held the training thread ``stall_s`` seconds: choose again with it. The line
        to say, the first time only."""
        from runai_entry.core.interval import MIN_SAVE_S

        self.save_s = max(stall_s, MIN_SAVE_S)
        self.seconds = self._choose()
        if self.said:
            return None
        self.said = True
        return self.describe()

    def describe(self) -> str:
        low, high = self.bounds
        chose = f'every_seconds="auto": saving every {self.seconds:.0f} s'
        between = self.rate.mean_between_s
        if between is None:
            why = (f"the default: no preemption in the attempt history yet "
                   f"({self.rate.run_s / 3600:.1f} h of running recorded)")
        else:
            why = (f"Young/Daly for a preemption every ~{between / 60:.0f} min "
                   f"({self.rate.preemptions} in {self.rate.run_s / 3600:.1f} h of running) and "
                   f"a save that holds the loop {self.save_s or 0:.2f} s")
        return f"{chose} ({why}; auto_bounds {low:g}-{high:g} s)"


def read_history(directory: str) -> list[dict[str, Any]]:
    """The records of runai-entry's attempt history (``.runai-entry/history.jsonl``), its
    newest :data:`HISTORY_TAIL` bytes, as read (untrusted: checked as runai-entry checks them,
    by :meth:`~runai_entry.core.attempt_record.AttemptRecord.from_json`); [] when there is none
    or it cannot be read in time.

    The library reads it itself: it may not import the supervisor's reader. Opened without
    following a link and only as a regular file, like every reader of the state directory.
    """
    from runai_entry.core import envvars
    from runai_entry.core.timeout import call_with_timeout

    path = os.path.join(directory, envvars.STATE_DIR, "history.jsonl")

    def read() -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return b""
            start = max(0, info.st_size - HISTORY_TAIL)
            data = os.pread(fd, HISTORY_TAIL, start)
            return data.split(b"\n", 1)[-1] if start else data  # a cut first line: dropped
        finally:
            os.close(fd)

    try:
        raw = call_with_timeout(read, HISTORY_TIMEOUT, "runai-entry-history")
    except (OSError, TimeoutError):  # none yet (ENOENT), a link, a hung mount: no history
        return []
    records = []
    for line in raw.split(b"\n"):
        try:
            record = json.loads(line.decode("utf-8", errors="replace"),
                                parse_constant=lambda _: None)
        except (ValueError, RecursionError):  # torn, empty, not JSON
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
