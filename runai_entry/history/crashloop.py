"""The crash-loop guard: did the last attempts make progress? A pure function of history records.

A job that crashes at the same place on every requeue is restarted again and again: up to
backoffLimit (6 on Kubernetes Jobs and Run:ai), or forever under a podFailurePolicy that ignores
its exit code, each time holding GPUs for nothing. Progress is a newer complete checkpoint at the
end of an attempt than the one it started from. Attempts that ended in a preemption do not
count either way (a job preempted during its start-up is not looping), nor does one that
completed. NVRx gives up after 3 restart cycles without progress; so do we, by default.

A newer checkpoint must hold new work, not the state resumed from saved again: nanoGPT, for
one, saves ``ckpt.pt`` at the iteration it resumed from right after its first evaluation, so
a job that then dies (an OOM kill) rewrites the file on every attempt. A checkpoint is no new
work when it has the step resumed from (where names carry steps); else when it holds the same
content (:func:`runai_entry.checkpoints.verify.fingerprint`), or was written before the job's
first step (it beats) or, for a job that does not beat, within :data:`RESAVE_WINDOW_S` of the
attempt's start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runai_entry.history.record import parse_time

#: Outcomes that say nothing about whether the job can make progress.
PREEMPTIONS = frozenset({"preempted", "killed-at-deadline", "followed-peer"})
#: A checkpoint written this soon after the start of an attempt that resumed, by a job that does
#: not beat (so its first step is unknown), is the state it resumed from saved again: loading a
#: checkpoint and saving it back is all a job can do in so short a time, while an attempt that
#: trains for 10 s and then fails three times in a row is a crash loop all the same.
RESAVE_WINDOW_S = 10.0


def checkpoint_identity(record: Mapping[str, Any], which: str) -> tuple[Any, ...]:
    """What tells two checkpoints apart (``which``: "newest" or "resumed"): the path, the step,
    and the mtime when discovery had to stat (names without a number, such as a rewritten
    ``on_exception.ckpt`` or ``last.ckpt``). Older records compare by path and step alone."""
    path = record.get("newest_at_end" if which == "newest" else "resumed_from")
    return path, record.get(f"{which}_step"), record.get(f"{which}_mtime")


def made_progress(record: Mapping[str, Any]) -> bool:
    """Whether the attempt ended with another checkpoint than the one it resumed from (a new
    name, another step, or the same name rewritten in place) that holds new work (see the
    module's docstring)."""
    if record.get("newest_at_end") is None:
        return False
    if checkpoint_identity(record, "newest") == checkpoint_identity(record, "resumed"):
        return False
    if record.get("resumed_from") is None:  # anything saved after a fresh start is new work
        return True
    step, resumed_step = record.get("newest_step"), record.get("resumed_step")
    if step is not None and resumed_step is not None:
        return bool(step != resumed_step)
    digest = record.get("newest_digest")
    if digest is not None and digest == record.get("resumed_digest"):
        return False
    return not _saved_at_start(record)


def _saved_at_start(record: Mapping[str, Any]) -> bool:
    """Whether the newest checkpoint was written before the attempt's work began: before its
    first step when the job beats, else within :data:`RESAVE_WINDOW_S` of its start."""
    written = record.get("newest_mtime")
    if written is None:
        return False
    first_step = parse_time(record.get("first_step_at"))
    if first_step is not None:
        return bool(written < first_step)
    started = parse_time(record.get("started_at"))
    return started is not None and bool(written - started < RESAVE_WINDOW_S)


def without_progress(records: Sequence[Mapping[str, Any]], member: str) -> list[Mapping[str, Any]]:
    """``member``'s latest attempts that made no progress, oldest first: back to the last one
    that did, or completed; preemptions are passed over."""
    streak: list[Mapping[str, Any]] = []
    for record in reversed(records):
        if str(record.get("member")) != member or record.get("outcome") in PREEMPTIONS:
            continue
        if record.get("outcome") == "completed" or made_progress(record):
            break
        streak.append(record)
    return streak[::-1]


def describe(records: Sequence[Mapping[str, Any]]) -> str:
    """``attempt 4 (failed, exit 1), attempt 5 (hung, exit 1)``."""
    return ", ".join(
        f"attempt {r.get('attempt', '?')} ({r.get('outcome', '?')}, exit {r.get('exit_code')})"
        for r in records)


def guard_status(records: Sequence[Mapping[str, Any]], member: str, limit: int) -> str:
    """One line for --inspect and the drill: how close ``member`` is to the guard's limit."""
    if not limit:
        return "crash-loop guard: off (--max-attempts-without-progress 0)"
    streak = without_progress(records, member)
    line = (f"attempts without progress (member {member}): {len(streak)} of {limit} "
            "(--max-attempts-without-progress)")
    if len(streak) >= limit:
        line += f" — the next start is refused: {describe(streak[-limit:])}"
    return line
