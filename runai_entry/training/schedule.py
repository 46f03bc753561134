"""When to save: every N steps and/or every T seconds, whichever comes first."""

from __future__ import annotations

import time
from collections.abc import Callable


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
    decision in :func:`runai_entry.training.torch.any_rank` so every rank saves at the same step
    (``every_steps`` alone is the same on every rank and needs no agreement).
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
