"""What each attempt really cost: goodput and badput, pure functions of history records.

A preemption costs a job four things: the restart before its first step (interpreter, imports,
CUDA and NCCL set-up, the restore), the work done since the checkpoint the next attempt resumes
from, the stop itself (the save inside the grace window), and the wait in the queue before the
requeued job starts again. runai-entry sees every start, stop signal and exit; the library's
heartbeat tells it the steps; discovery tells it when each checkpoint was written. From those
records (one :class:`~runai_entry.core.attempt_record.AttemptRecord` per attempt), per
attempt:

``startup_s``
    start → the first heartbeat; ``None`` when the job never beat (Lightning, the HF Trainer, a
    shell script) or the record predates heartbeats.
``stop_s``
    the stop signal → the last job process gone (``grace_used_s``); 0 when never stopped.
``lost_s``
    work after the checkpoint the *next* attempt of the same member resumed from (for a member's
    last attempt: the newest complete one at its end). For a stopped attempt: from that
    checkpoint's write time (its mtime) up to the stop signal, and 0 when the checkpoint was
    written after the signal and, with the heartbeat, holds the last step reached (one that holds
    an earlier step loses those steps, at the attempt's mean step time). For a failed, hung or
    killed attempt: up to its end, less the stop. Never the time before the first step (or the
    start, without a heartbeat); every second of the attempt when it resumed from nothing newer;
    0 for a completed attempt (its last work is the result). ``None`` when the checkpoint's write
    time is not recorded (records from before this accounting).
``productive_s``
    ``ran_for_s − startup − stop − lost``; an unknown start-up or lost work counts 0, so it is an
    upper bound then; never below 0.
``requeue_wait_s``
    the previous attempt's end (same member) → this start; ``None`` for a member's first.

An attempt's end is its start plus ``ran_for_s`` (the last job process gone), not ``ended_at``,
which is written after the bookkeeping: so a member's wall time is exactly its attempts' run time
plus the waits between them, and what runai-entry spends between two attempts counts as waiting.

For each member and for the job: ``wall_s`` (first start → last end), ``productive_s``,
``fraction`` = productive / wall, and ``badput_s`` = ``{startup, lost_work, stop, requeue_wait}``.
Members run side by side, so the job's seconds are the members' average: two pods each productive
80% of the time make a job productive 80% of its wall time, not 160%.

Records come checked (:meth:`~runai_entry.core.attempt_record.AttemptRecord.from_json`): every
figure here is finite and within its range. Standard library only, and nothing that logs:
``--inspect``, ``--inspect --json``, the drill and the timeline all read the same figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from statistics import median
from typing import Any

from runai_entry.core.attempt_record import AttemptRecord, Checkpoint, parse_time
from runai_entry.core.outcome import Outcome
from runai_entry.core.printable import or_unknown

#: Said under the goodput line, which is then "at most": how the bound came, and the remedy.
NEVER_BEAT = ("start-up unknown, counted 0: the job never beat; add "
              "runai_entry.training.heartbeat(step) to its loop, or its framework's callback "
              "(docs/integrations.md)")
NO_HEARTBEAT_RECORD = "start-up unknown: recorded before runai-entry kept the first step's time"
NO_WRITE_TIME = "lost work unknown: the write time of the checkpoint resumed from is not recorded"


@dataclass(frozen=True)
class AttemptFigures:
    """One attempt's figures, in seconds. ``start``/``end``: epoch seconds, ``None`` unknown."""

    attempt: int | None
    member: str
    outcome: str
    ran_for_s: float
    startup_s: float | None
    stop_s: float
    lost_s: float | None
    productive_s: float
    requeue_wait_s: float | None
    start: float | None
    end: float | None
    #: One sentence per figure that is unknown or only a bound, and why.
    unknown: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The figures as ``--inspect --json`` prints them (seconds to the millisecond)."""
        return {"attempt": self.attempt, "member": self.member, "outcome": self.outcome,
                "ran_for_s": _ms(self.ran_for_s), "startup_s": _ms(self.startup_s),
                "stop_s": _ms(self.stop_s), "lost_s": _ms(self.lost_s),
                "productive_s": _ms(self.productive_s),
                "requeue_wait_s": _ms(self.requeue_wait_s), "unknown": list(self.unknown)}


@dataclass(frozen=True)
class Goodput:
    """A member's or the whole job's figures (see the module's docstring)."""

    wall_s: float
    productive_s: float
    startup_s: float
    lost_work_s: float
    stop_s: float
    requeue_wait_s: float
    #: ``(sentence, attempt labels)``: what is unknown, and in which attempts.
    unknown: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @property
    def fraction(self) -> float | None:
        # At most 1: attempts of one member that overlap (clocks of two nodes) must not show
        # more productive time than wall time.
        return min(1.0, self.productive_s / self.wall_s) if self.wall_s > 0 else None

    def as_dict(self) -> dict[str, Any]:
        fraction = self.fraction
        return {"wall_s": _ms(self.wall_s), "productive_s": _ms(self.productive_s),
                "fraction": None if fraction is None else round(fraction, 4),
                "badput_s": {"startup": _ms(self.startup_s), "lost_work": _ms(self.lost_work_s),
                             "stop": _ms(self.stop_s),
                             "requeue_wait": _ms(self.requeue_wait_s)},
                "unknown": [{"what": what, "attempts": list(where)}
                            for what, where in self.unknown]}


def attempt_figures(records: Sequence[AttemptRecord]) -> list[AttemptFigures]:
    """The figures of every attempt, in the records' order."""
    by_member: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_member.setdefault(member(r), []).append(i)
    after: dict[int, int | None] = {}
    before: dict[int, int | None] = {}
    for indexes in by_member.values():
        ordered = sorted(indexes, key=lambda i: _attempt_order(records[i], i))
        for position, i in enumerate(ordered):
            before[i] = ordered[position - 1] if position else None
            after[i] = ordered[position + 1] if position + 1 < len(ordered) else None
    figures = []
    for i, r in enumerate(records):
        nxt, prev = after[i], before[i]
        kept = records[nxt].resumed if nxt is not None else r.newest
        figures.append(_figures(r, kept, None if prev is None else records[prev]))
    return figures


def goodput(figures: Sequence[AttemptFigures]) -> Goodput:
    """The whole job: one member's sums, or the members' average (see the module docstring)."""
    members = per_member(figures)
    if len(members) <= 1:
        return next(iter(members.values()), Goodput(0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    n = len(members)
    starts = [f.start for f in figures if f.start is not None]
    ends = [f.end for f in figures if f.end is not None]
    wall = max(ends) - min(starts) if starts and ends else 0.0
    return Goodput(
        wall_s=max(0.0, wall),
        productive_s=sum(m.productive_s for m in members.values()) / n,
        startup_s=sum(m.startup_s for m in members.values()) / n,
        lost_work_s=sum(m.lost_work_s for m in members.values()) / n,
        stop_s=sum(m.stop_s for m in members.values()) / n,
        requeue_wait_s=sum(m.requeue_wait_s for m in members.values()) / n,
        unknown=_unknown(figures, labelled_by_member=True),
    )


def per_member(figures: Sequence[AttemptFigures]) -> dict[str, Goodput]:
    """Each member's figures: sums over its attempts, wall from its first start to its last end."""
    groups: dict[str, list[AttemptFigures]] = {}
    for f in figures:
        groups.setdefault(f.member, []).append(f)
    result = {}
    for name, group in groups.items():
        starts = [f.start for f in group if f.start is not None]
        ends = [f.end for f in group if f.end is not None]
        wall = max(ends) - min(starts) if starts and ends else sum(f.ran_for_s for f in group)
        result[name] = Goodput(
            wall_s=max(0.0, wall),
            productive_s=sum(f.productive_s for f in group),
            startup_s=sum(f.startup_s or 0.0 for f in group),
            lost_work_s=sum(f.lost_s or 0.0 for f in group),
            stop_s=sum(f.stop_s for f in group),
            requeue_wait_s=sum(f.requeue_wait_s or 0.0 for f in group),
            unknown=_unknown(group, labelled_by_member=False),
        )
    return result


def checkpoint_interval(records: Sequence[AttemptRecord]) -> float | None:
    """The job's periodic checkpoint interval, in seconds: the median gap between the write
    times of consecutive checkpoints within one attempt (its ``checkpoints``), leaving out those
    written after the stop signal. ``None`` with fewer than two periodic checkpoints in any
    attempt. Inferred from write times rather than taken from the Checkpointer because it works
    for every framework, and time-based and step-based schedules alike."""
    gaps: list[float] = []
    for r in records:
        stop = _stop_time(r)
        times = sorted(c.mtime for c in r.checkpoints or ()
                       if c.mtime is not None and (stop is None or c.mtime < stop))
        gaps += [b - a for a, b in pairwise(times) if b > a]
    return median(gaps) if gaps else None


# -- reading records ------------------------------------------------------------------------------


def member(record: AttemptRecord) -> str:
    """The member the attempt belongs to; "0", the default member, when not recorded."""
    return "0" if record.member is None else record.member


def label(figures: AttemptFigures, with_member: bool) -> str:
    """``attempt 3``, or ``member 1 attempt 3`` when several members share the history."""
    text = f"attempt {or_unknown(figures.attempt)}"
    return f"member {figures.member} {text}" if with_member else text


# -- one attempt ----------------------------------------------------------------------------------


def _figures(r: AttemptRecord, kept: Checkpoint | None,
             previous: AttemptRecord | None) -> AttemptFigures:
    unknown: list[str] = []
    start = parse_time(r.started_at)
    ran_for = r.ran_for_s
    if ran_for is None:
        ended = parse_time(r.ended_at)
        ran_for = max(0.0, ended - start) if ended is not None and start is not None else 0.0
    end = None if start is None else start + ran_for

    first_step = parse_time(r.first_step_at)
    startup = None
    if first_step is not None and start is not None:
        startup = _clip(first_step - start, 0.0, ran_for)
    elif r.predates_heartbeats:
        unknown.append(NO_HEARTBEAT_RECORD)
    else:
        unknown.append(NEVER_BEAT)

    stop_at = _stop_time(r)
    grace = r.grace_used_s
    if grace is not None:
        stop = _clip(grace, 0.0, ran_for - (startup or 0.0))
    elif stop_at is not None and end is not None:
        stop = _clip(end - stop_at, 0.0, ran_for - (startup or 0.0))
    else:
        stop = 0.0

    lost = _lost(r, kept, start, ran_for, startup, stop, stop_at)
    if lost is None:
        unknown.append(NO_WRITE_TIME)
    productive = max(0.0, ran_for - (startup or 0.0) - stop - (lost or 0.0))

    wait = None
    if previous is not None:
        prev_start = parse_time(previous.started_at)
        prev_ran = previous.ran_for_s
        prev_end = (prev_start + prev_ran if prev_start is not None and prev_ran is not None
                    else parse_time(previous.ended_at))
        if prev_end is not None and start is not None:
            wait = max(0.0, start - prev_end)
    return AttemptFigures(r.attempt, member(r), r.outcome_text or "?", ran_for,
                          startup, stop, lost, productive, wait, start, end, tuple(unknown))


def _lost(r: AttemptRecord, kept: Checkpoint | None, start: float | None, ran_for: float,
          startup: float | None, stop: float, stop_at: float | None) -> float | None:
    """See ``lost_s`` in the module's docstring."""
    if r.outcome == Outcome.COMPLETED:  # did its work to the end: its last work is the result
        return 0.0
    working = max(0.0, ran_for - (startup or 0.0) - stop)  # first step (or start) → the cut
    if kept is None or _same(kept, r.resumed):
        return working  # the next attempt starts from nothing newer than this one did
    written = _write_time(r, kept)
    if written is None or start is None:
        return None
    if written < start:
        return working  # written before this attempt (another member's, or a clock apart)
    if stop_at is not None and written >= stop_at:
        return _behind_last_step(r, kept, working)  # the stop-time save
    cut = start + (startup or 0.0) + working
    return _clip(cut - max(written, start + (startup or 0.0)), 0.0, working)


def _behind_last_step(r: AttemptRecord, kept: Checkpoint, working: float) -> float:
    """Work lost when the checkpoint written after the stop signal holds an earlier step than
    the last one reached (a save in flight finished, the stop-time save did not): those steps,
    at the attempt's mean step time. 0 when it holds the last step, or when unknown."""
    last = r.last_step
    if last is None or kept.step is None or kept.step >= last:
        return 0.0
    first_at, last_at = parse_time(r.first_step_at), parse_time(r.last_step_at)
    origin = 0 if r.resumed_from is None else r.resumed_step
    if first_at is None or last_at is None or origin is None:
        return 0.0
    step_time = mean_step_time(first_at, last_at, origin, last)
    return 0.0 if step_time is None else _clip((last - kept.step) * step_time, 0.0, working)


def mean_step_time(first_at: float, last_at: float, origin: int, last_step: int) -> float | None:
    """Seconds per step from the first beat to the last (any clock, the same for both); the
    first beat is step ``origin + 1`` (``origin``: the step resumed from, 0 for a fresh start).
    ``None`` before two steps have beaten apart in time."""
    steps = last_step - origin - 1
    if steps <= 0 or last_at <= first_at:
        return None
    return (last_at - first_at) / steps


def _write_time(r: AttemptRecord, kept: Checkpoint) -> float | None:
    """When ``kept`` was written, from whichever part of the record knows it."""
    if kept.mtime is not None:
        return kept.mtime
    candidates = [*(r.checkpoints or ()), r.newest_at_stop, r.newest]
    for c in candidates:
        if c is not None and c.mtime is not None and c.path == kept.path and (
                kept.step is None or c.step is None or c.step == kept.step):
            return c.mtime
    return None


def _stop_time(r: AttemptRecord) -> float | None:
    """When the stop signal went out: ``stop_at``, or, in records from before it was kept,
    the end less the grace used."""
    stop_at = parse_time(r.stop_at)
    if stop_at is not None or not r.predates_stop_time:
        return stop_at
    start, ran_for, grace = parse_time(r.started_at), r.ran_for_s, r.grace_used_s
    if start is None or ran_for is None or grace is None:
        return None
    return start + ran_for - grace


def _same(a: Checkpoint, b: Checkpoint | None) -> bool:
    """Whether two records name the same checkpoint: path, and step and mtime where both know
    them (a file rewritten under the same name is another checkpoint)."""
    if b is None or a.path != b.path:
        return False
    if a.step is not None and b.step is not None and a.step != b.step:
        return False
    return a.mtime is None or b.mtime is None or a.mtime == b.mtime


def _unknown(figures: Iterable[AttemptFigures], labelled_by_member: bool
             ) -> tuple[tuple[str, tuple[str, ...]], ...]:
    where: dict[str, list[str]] = {}
    for f in figures:
        for what in f.unknown:
            where.setdefault(what, []).append(label(f, labelled_by_member))
    return tuple((what, tuple(labels)) for what, labels in where.items())


def _attempt_order(record: AttemptRecord, index: int) -> tuple[int, int]:
    number = record.attempt
    return (index if number is None else number, index)


def _clip(value: float, low: float, high: float) -> float:
    return max(low, min(value, max(low, high)))


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
