"""The crash-loop guard: did the last attempts make progress? A pure function of history records.

A job that crashes at the same place on every requeue is restarted again and again: up to
backoffLimit (6 on Kubernetes Jobs and Run:ai), or forever under a podFailurePolicy that ignores
its exit code, each time holding GPUs for nothing. Progress is a newer complete checkpoint at the
end of an attempt than the one it started from. Attempts that ended in a preemption do not
count either way (a job preempted during its start-up is not looping), nor does one that
completed. NVRx gives up after 3 restart cycles without progress; so do we, by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Outcomes that say nothing about whether the job can make progress.
PREEMPTIONS = frozenset({"preempted", "killed-at-deadline", "followed-peer"})


def made_progress(record: Mapping[str, Any]) -> bool:
    """Whether the attempt ended with a newer checkpoint than the one it resumed from."""
    newest = record.get("newest_at_end")
    if newest is None:
        return False
    if newest != record.get("resumed_from"):
        return True
    # The same name rewritten in place (Lightning's last.ckpt): a later step is progress.
    step, resumed = record.get("newest_step"), record.get("resumed_step")
    return step is not None and resumed is not None and step > resumed


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
