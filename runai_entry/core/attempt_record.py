"""One attempt as the history keeps it: a typed record, read from any version's line once.

The history (``<checkpoint-dir>/.runai-entry/history.jsonl``, one JSON object per attempt) lives
on shared storage that other jobs, old versions of this one and people also write: a line is
untrusted. :meth:`AttemptRecord.from_json` checks it once, here, so that every reader (--inspect,
the goodput figures, the timeline, the crash-loop guard, the metrics, ``every_seconds="auto"``)
may rely on each attribute's type: a value of the wrong type, not finite, or out of its range
reads as None (unknown, as the writer records what it does not know).

Older lines lack the fields added since. Such a field reads as None too, and for the two where
"not recorded" and "none" mean different things the record says which
(:attr:`~AttemptRecord.predates_heartbeats`, :attr:`~AttemptRecord.predates_stop_time`).
:meth:`AttemptRecord.to_json` writes the line back as it was read: the fields the line lacked
stay out, and so ``to_json(from_json(line)) == line`` for every line this version writes.

Keys this version does not know (a newer version's) are kept, as read, in
:attr:`~AttemptRecord.extra`, and written back by :meth:`~AttemptRecord.to_json`: no reader
interprets them, but a record passed on (the drill's and the metrics' copies of the line) loses
nothing a newer version wrote, and a line read back is the line written.

In the standard-library core, not in the history package, because the training library reads the
history too (``every_seconds="auto"``: :mod:`runai_entry.core.interval`) and may import only the
core: one parser for both sides, so they cannot read a line differently.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from runai_entry.core.outcome import Outcome

#: The longest text a record may hold: no path is longer (PATH_MAX).
MAX_TEXT = 4096
#: The most items a list in a record may hold (the writer keeps 20 checkpoints, and discovery
#: gives up after 32 damaged ones).
MAX_ITEMS = 100
#: Seconds an attempt's figures may reach: ten years.
MAX_SECONDS = 10 * 365 * 86400.0
#: The window a time must fall in, in epoch seconds: 1970 to 2200. A record dated year 9999
#: would otherwise stretch a timeline over eight thousand years.
LATEST_EPOCH = 7258118400.0
_INT64 = 1 << 63


# Each check takes the value as the line holds it, and whether to hold it to the bounds a line
# from shared storage is held to (``bounded``); without them, only its type is checked (see
# AttemptRecord.from_json's ``own``).


def _integer(value: Any, bounded: bool = True) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if not bounded or -_INT64 <= value < _INT64 else None


def _number(value: Any, low: float, high: float, bounded: bool = True) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)  # json reads over 4300 digits as an error
    except OverflowError:  # an int past a float's range
        return None
    # The value itself, not its float: an int is written back as the int it was.
    if not bounded:
        return value if math.isfinite(number) else None
    return value if low <= number <= high else None  # NaN compares false: None too


def _seconds(value: Any, bounded: bool = True) -> float | None:
    return _number(value, 0.0, MAX_SECONDS, bounded)


def _epoch(value: Any, bounded: bool = True) -> float | None:
    return _number(value, 0.0, LATEST_EPOCH, bounded)


def _text(value: Any, bounded: bool = True) -> str | None:
    if not isinstance(value, str):
        return None
    return value if not bounded or len(value) <= MAX_TEXT else None


def _boolean(value: Any, bounded: bool = True) -> bool | None:
    return value if isinstance(value, bool) else None


def parse_time(value: Any) -> float | None:
    """An ISO 8601 time from a record as epoch seconds; None when absent, unreadable, or outside
    1970-2200. A time without a zone is read as UTC (ours always carry one)."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    from datetime import datetime, timezone

    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        seconds = moment.timestamp()
    except (ValueError, OverflowError):  # not a time; year 1 in a zone east of UTC
        return None
    return seconds if 0.0 <= seconds <= LATEST_EPOCH else None


def _time(value: Any, bounded: bool = True) -> str | None:
    """A time is kept as the text the line holds (written back as it was), once it reads."""
    return value if parse_time(value) is not None else None


def _outcome(value: Any, bounded: bool = True) -> Outcome | str | None:
    """An :class:`Outcome`; the text of one this version does not know (a newer version's) is
    kept, to be shown and counted under its own name."""
    text = _text(value, bounded)
    if text is None:
        return None
    try:
        return Outcome(text)
    except ValueError:
        return text


def _scalars(value: Any, bounded: bool = True) -> dict[str, Any] | None:
    """An object of free-form facts (platform ids, the peer followed, what the watchdog found):
    text keys, and values that are text, finite numbers or booleans."""
    if not isinstance(value, Mapping):
        return None
    kept: dict[str, Any] = {}
    for key, item in list(value.items())[:MAX_ITEMS]:
        if _text(key, bounded) is None:
            continue
        if isinstance(item, (bool, str)):
            kept[key] = _text(item, bounded) if isinstance(item, str) else item
        elif isinstance(item, int):
            kept[key] = _integer(item, bounded)
        elif isinstance(item, float):
            kept[key] = _number(item, -1e300, 1e300, bounded)
    return kept


def _words(value: Any, bounded: bool = True) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(w for w in value[:MAX_ITEMS] if _text(w, bounded) is not None)


# -- the objects a record holds -------------------------------------------------------------------


class Checkpoint(NamedTuple):
    """A checkpoint as the records name it; any part may be unknown. Two are the same
    checkpoint when all three agree: a file rewritten under its name is another one."""

    path: str | None
    step: int | None
    mtime: float | None

    @classmethod
    def from_json(cls, value: Any, bounded: bool = True) -> Checkpoint | None:
        if not isinstance(value, Mapping):
            return None
        return cls(_text(value.get("path"), bounded), _integer(value.get("step"), bounded),
                   _epoch(value.get("mtime"), bounded))


class ProcessFailure(NamedTuple):
    """A job process that ended abnormally: its pid, how, and whether it was the command are
    what make it one (the --inspect --json schema requires them)."""

    pid: int
    how: str
    returncode: int | None
    command: bool
    at: str | None  # ISO 8601

    @classmethod
    def from_json(cls, value: Any, bounded: bool = True) -> ProcessFailure | None:
        if not isinstance(value, Mapping):
            return None
        pid, how, command = (_integer(value.get("pid"), bounded),
                             _text(value.get("how"), bounded), _boolean(value.get("command")))
        if pid is None or how is None or command is None:
            return None
        return cls(pid, how, _integer(value.get("returncode"), bounded), command,
                   _time(value.get("at")))


class SkippedCheckpoint(NamedTuple):
    """A checkpoint verification refused, and why."""

    name: str
    reason: str

    @classmethod
    def from_json(cls, value: Any, bounded: bool = True) -> SkippedCheckpoint | None:
        if not isinstance(value, Mapping):
            return None
        name, reason = _text(value.get("name"), bounded), _text(value.get("reason"), bounded)
        return None if name is None or reason is None else cls(name, reason)


class SaveEstimate(NamedTuple):
    """What the library's Checkpointer measured of its last save, and what a save at the stop
    signal would take against the budget. A figure it did not write is None (and stays out of
    the line)."""

    bytes: float | None = None
    seconds: float | None = None
    stall_s: float | None = None  # what the save held the training thread (an async save's copy)
    estimate_s: float | None = None
    budget_s: float | None = None
    share: float | None = None  # estimate_s / budget_s

    @classmethod
    def from_json(cls, value: Any, bounded: bool = True) -> SaveEstimate | None:
        if not isinstance(value, Mapping):
            return None
        return cls(*(_number(value.get(name), 0.0, 1e18, bounded) if name in ("bytes", "share")
                     else _seconds(value.get(name), bounded) for name in cls._fields))

    def to_json(self) -> dict[str, float]:
        return {name: figure for name, figure in self._asdict().items() if figure is not None}


def _objects(parse: Callable[[Any, bool], Any]
             ) -> Callable[[Any, bool], tuple[Any, ...] | None]:
    def parse_list(value: Any, bounded: bool = True) -> tuple[Any, ...] | None:
        if not isinstance(value, list):
            return None
        return tuple(item for item in (parse(v, bounded) for v in value[:MAX_ITEMS])
                     if item is not None)
    return parse_list


# -- the record -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt, as one line of the history holds it. Every field may be None: unknown, not
    recorded, or refused by :meth:`from_json`. The fields are in the order the line holds them.
    """

    # Who and where (runai_entry.history.store.base_record).
    attempt: int | None = None  # None: the attempt could not be counted (no history)
    member: str | None = None
    host: str | None = None
    pid: int | None = None
    ids: Mapping[str, Any] | None = None  # the platform's identifiers (free-form)
    # How it ran and ended (runai_entry.supervisor.before_and_after.attempt_record).
    started_at: str | None = None  # times: ISO 8601, UTC (see parse_time)
    ended_at: str | None = None  # after the bookkeeping; the attempt's end is start + ran_for_s
    command: tuple[str, ...] | None = None
    outcome: Outcome | str | None = None  # text: an outcome of a newer version
    exit_code: int | None = None
    returncode: int | None = None
    simulated: bool | None = None
    ran_for_s: float | None = None
    stop_signal: str | None = None
    stop_timeout_s: float | None = None
    grace_used_s: float | None = None  # the stop signal → the last job process gone
    followed: Mapping[str, Any] | None = None  # the peer's announcement (free-form)
    hang: Mapping[str, Any] | None = None  # what the watchdog found (free-form)
    stop_at: str | None = None
    first_step_at: str | None = None  # the job's heartbeats: None when it never beat
    last_step: int | None = None
    last_step_at: str | None = None
    first_failure: ProcessFailure | None = None
    stop_failure: ProcessFailure | None = None  # the first failure after the stop signal
    resumed_from: str | None = None  # None: a fresh start
    resumed_step: int | None = None
    resumed_mtime: float | None = None
    newest_at_end: str | None = None  # None: no complete checkpoint at the end
    newest_step: int | None = None
    newest_mtime: float | None = None
    kept_copy_of: str | None = None  # resumed from runai-entry's copy of this torn checkpoint
    fresh_over_torn: tuple[SkippedCheckpoint, ...] | None = None
    resumed_digest: str | None = None
    # What only the checkpoint directory tells, at the end.
    skipped_at_end: tuple[SkippedCheckpoint, ...] | None = None
    newest_at_stop: Checkpoint | None = None  # the newest written before the stop signal
    checkpoints: tuple[Checkpoint, ...] | None = None  # written by the attempt; None: unknown
    newest_digest: str | None = None
    save_estimate: SaveEstimate | None = None
    #: Keys this version does not know, as read (see the module's docstring).
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: The fields the line did not hold (an older version's, or one cut short): they stay out
    #: of :meth:`to_json`.
    absent: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, own: bool = False) -> AttemptRecord:
        """One line of the history, as read from disk (a JSON object), every field checked.

        ``own``: fields this process found before the start (the kept copy's, in
        :class:`runai_entry.supervisor.before_and_after.Prepared`), not a line read from shared
        storage: each value's type is checked, but not the bounds a line from disk is held to
        (the termination message shows whatever names the job has, shortened).
        """
        checked: dict[str, Any] = {}
        for name in FIELDS:
            if name in obj:
                checked[name] = _CHECKS[name](obj[name], not own)
        return cls(**checked,
                   extra={key: value for key, value in obj.items() if key not in _CHECKS},
                   absent=frozenset(name for name in FIELDS if name not in obj))

    @classmethod
    def partial(cls, **fields: Any) -> AttemptRecord:
        """A record of ``fields`` alone, the others absent: an attempt whose command never ran
        (no history line is written for it) as the drill and the termination message see it."""
        return cls(**fields, absent=frozenset(FIELDS).difference(fields))

    def to_json(self) -> dict[str, Any]:
        """The line the history holds: the fields in order, less the absent ones, then the
        keys of a newer version."""
        line: dict[str, Any] = {}
        for name in FIELDS:
            if name not in self.absent:
                line[name] = _as_json(getattr(self, name))
        line.update(self.extra)
        return line

    def updated(self, **fields: Any) -> AttemptRecord:
        """This record with ``fields`` set (and present in the line from now on)."""
        return dataclasses.replace(self, **fields, absent=self.absent.difference(fields))

    def filled(self, **fields: Any) -> AttemptRecord:
        """This record with those of ``fields`` that its line lacks; the ones it holds stay."""
        return self.updated(**{name: value for name, value in fields.items()
                               if name in self.absent})

    @property
    def predates_heartbeats(self) -> bool:
        """Written before runai-entry kept the first step's time: whether the job beat is not
        known (a None ``first_step_at`` in a newer record means it never beat)."""
        return "first_step_at" in self.absent

    @property
    def predates_stop_time(self) -> bool:
        """Written before runai-entry kept the stop signal's time (``stop_at``): the stop is
        then the end less the grace used (a None ``stop_at`` in a newer record: never
        stopped)."""
        return "stop_at" in self.absent

    @property
    def outcome_text(self) -> str | None:
        """The outcome as the line writes it (an :class:`Outcome`'s value, or a newer version's
        text); None when unknown."""
        outcome = self.outcome
        return outcome.value if isinstance(outcome, Outcome) else outcome

    @property
    def followed_member(self) -> str | None:
        """The member whose preemption this one followed (its announcement's ``member``)."""
        member = None if self.followed is None else self.followed.get("member")
        return None if member is None else str(member)

    @property
    def resumed(self) -> Checkpoint | None:
        """The checkpoint the attempt started from; None for a fresh start."""
        if self.resumed_from is None:
            return None
        return Checkpoint(self.resumed_from, self.resumed_step, self.resumed_mtime)

    @property
    def newest(self) -> Checkpoint | None:
        """The newest complete checkpoint at the end; None when there was none."""
        if self.newest_at_end is None:
            return None
        return Checkpoint(self.newest_at_end, self.newest_step, self.newest_mtime)


def _as_json(value: Any) -> Any:
    if isinstance(value, Outcome):
        return value.value
    if isinstance(value, SaveEstimate):
        return value.to_json()
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # Checkpoint, ProcessFailure
        return value._asdict()
    if isinstance(value, tuple):
        return [_as_json(item) for item in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


#: Each field's check, from the line's value to the attribute's.
_CHECKS: dict[str, Callable[[Any, bool], Any]] = {
    **dict.fromkeys(("attempt", "pid", "exit_code", "returncode", "last_step", "resumed_step",
                     "newest_step"), _integer),
    **dict.fromkeys(("ran_for_s", "stop_timeout_s", "grace_used_s"), _seconds),
    **dict.fromkeys(("resumed_mtime", "newest_mtime"), _epoch),
    **dict.fromkeys(("member", "host", "stop_signal", "resumed_from", "newest_at_end",
                     "resumed_digest", "newest_digest", "kept_copy_of"), _text),
    **dict.fromkeys(("started_at", "ended_at", "stop_at", "first_step_at", "last_step_at"),
                    _time),
    "outcome": _outcome,
    "simulated": _boolean,
    "ids": _scalars, "followed": _scalars, "hang": _scalars,
    "command": _words,
    "first_failure": ProcessFailure.from_json, "stop_failure": ProcessFailure.from_json,
    "newest_at_stop": Checkpoint.from_json,
    "checkpoints": _objects(Checkpoint.from_json),
    "skipped_at_end": _objects(SkippedCheckpoint.from_json),
    "fresh_over_torn": _objects(SkippedCheckpoint.from_json),
    "save_estimate": SaveEstimate.from_json,
}
#: The record's fields, in the order the line holds them.
FIELDS = tuple(f.name for f in dataclasses.fields(AttemptRecord) if f.name in _CHECKS)
