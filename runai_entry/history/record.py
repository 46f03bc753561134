"""A history record read back from disk: untrusted, checked once at the edge.

The history lives on shared storage that other jobs, old versions of this one and people also
write: a record is untrusted. It is checked once, here, so that every reader (--inspect, the
goodput figures, the timeline, the crash-loop guard) may rely on each field's type: a value of
the wrong type, not finite, or out of its range reads as None (unknown, as the writer records
what it does not know). A key that was present stays present: old records are told apart by
the keys they lack. Keys this version does not know pass through untouched; no reader uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not -_INT64 <= value < _INT64:
        return None
    return value


def _number(value: Any, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)  # an int within 2**63 (json reads over 4300 digits as an error)
    return number if low <= number <= high else None  # NaN compares false: None too


def _seconds(value: Any) -> float | None:
    return _number(value, 0.0, MAX_SECONDS)


def _epoch(value: Any) -> float | None:
    return _number(value, 0.0, LATEST_EPOCH)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_TEXT else None


def _boolean(value: Any) -> bool | None:
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


def _time(value: Any) -> str | None:
    return value if parse_time(value) is not None else None


def _mapping(value: Any, fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """A nested object with known fields, each checked; None when it is not an object."""
    if not isinstance(value, Mapping):
        return None
    return {key: check(value[key]) for key, check in fields.items() if key in value}


def _scalars(value: Any) -> dict[str, Any] | None:
    """An object of free-form facts (platform ids, what the watchdog found): text keys, and
    values that are text, finite numbers or booleans."""
    if not isinstance(value, Mapping):
        return None
    kept: dict[str, Any] = {}
    for key, item in list(value.items())[:MAX_ITEMS]:
        if not isinstance(key, str) or len(key) > MAX_TEXT:
            continue
        if isinstance(item, (bool, str)):
            kept[key] = _text(item) if isinstance(item, str) else item
        elif isinstance(item, int):
            kept[key] = _integer(item)
        elif isinstance(item, float):
            kept[key] = _number(item, -1e300, 1e300)
    return kept


def _checkpoint(value: Any) -> dict[str, Any] | None:
    return _mapping(value, {"path": _text, "step": _integer, "mtime": _epoch})


def _checkpoints(value: Any) -> list[dict[str, Any]] | None:
    if not isinstance(value, list):
        return None
    return [c for c in map(_checkpoint, value[:MAX_ITEMS]) if c is not None]


def _skipped(value: Any) -> list[dict[str, str]] | None:
    if not isinstance(value, list):
        return None
    kept = []
    for item in value[:MAX_ITEMS]:
        if isinstance(item, Mapping):
            name, reason = _text(item.get("name")), _text(item.get("reason"))
            if name is not None and reason is not None:
                kept.append({"name": name, "reason": reason})
    return kept


def _failure(value: Any) -> dict[str, Any] | None:
    """The first job process to end abnormally: its pid, how, and whether it was the command
    are what make it one (the --inspect --json schema requires them)."""
    failure = _mapping(value, {"pid": _integer, "how": _text, "returncode": _integer,
                               "at": _time, "command": _boolean})
    if failure is None or None in (failure.get("pid"), failure.get("how"),
                                   failure.get("command")):
        return None
    failure.setdefault("returncode", None)
    failure.setdefault("at", None)
    return failure


def _words(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [w for w in value[:MAX_ITEMS] if isinstance(w, str) and len(w) <= MAX_TEXT]


def _save_estimate(value: Any) -> dict[str, Any] | None:
    fields = ("bytes", "seconds", "stall_s", "estimate_s", "share", "budget_s")
    return _mapping(value, {key: lambda v: _number(v, 0.0, 1e18) for key in fields})


#: Each field the readers use, and its check.
FIELDS: dict[str, Any] = {
    **dict.fromkeys(("attempt", "pid", "exit_code", "returncode", "last_step", "resumed_step",
                     "newest_step"), _integer),
    **dict.fromkeys(("ran_for_s", "stop_timeout_s", "grace_used_s"), _seconds),
    **dict.fromkeys(("resumed_mtime", "newest_mtime"), _epoch),
    **dict.fromkeys(("member", "host", "outcome", "stop_signal", "resumed_from",
                     "newest_at_end", "resumed_digest", "newest_digest", "kept_copy_of"), _text),
    **dict.fromkeys(("started_at", "ended_at", "stop_at", "first_step_at", "last_step_at"),
                    _time),
    "simulated": _boolean,
    "ids": _scalars, "followed": _scalars, "hang": _scalars,
    "command": _words,
    "first_failure": _failure, "stop_failure": _failure,
    "newest_at_stop": _checkpoint,
    "checkpoints": _checkpoints,
    "skipped_at_end": _skipped, "fresh_over_torn": _skipped,
    "save_estimate": _save_estimate,
}


def parse_record(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One history record as read from disk, every field the readers use checked (see above)."""
    record = dict(raw)
    for key, check in FIELDS.items():
        if key in record:
            record[key] = check(record[key])
    return record
