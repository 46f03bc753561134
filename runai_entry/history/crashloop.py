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

from collections.abc import Sequence

from runai_entry.core.attempt_record import AttemptRecord, parse_time
from runai_entry.core.outcome import PREEMPTED, Outcome

# Not from history.goodput: this module is on the path to the job's start, that one is not.
from runai_entry.core.printable import or_unknown

#: A checkpoint written this soon after the start of an attempt that resumed, by a job that does
#: not beat (so its first step is unknown), is the state it resumed from saved again: loading a
#: checkpoint and saving it back is all a job can do in so short a time, while an attempt that
#: trains for 10 s and then fails three times in a row is a crash loop all the same.
RESAVE_WINDOW_S = 10.0


def made_progress(record: AttemptRecord) -> bool:
    """Whether the attempt ended with another checkpoint than the one it resumed from (a new
    name, another step, or the same name rewritten in place: :attr:`AttemptRecord.newest` and
    :attr:`~AttemptRecord.resumed` compare all three; older records compare by path and step
    alone, their mtimes unknown) that holds new work (see the module's docstring)."""
    if record.newest_at_end is None:
        return False
    if record.newest == record.resumed:
        return False
    if record.resumed_from is None:  # anything saved after a fresh start is new work
        return True
    step, resumed_step = record.newest_step, record.resumed_step
    if step is not None and resumed_step is not None:
        return step != resumed_step
    digest = record.newest_digest
    if digest is not None and digest == record.resumed_digest:
        return False
    return not _saved_at_start(record)


def _saved_at_start(record: AttemptRecord) -> bool:
    """Whether the newest checkpoint was written before the attempt's work began: before its
    first step when the job beats, else within :data:`RESAVE_WINDOW_S` of its start."""
    written = record.newest_mtime
    if written is None:
        return False
    first_step = parse_time(record.first_step_at)
    if first_step is not None:
        return written < first_step
    started = parse_time(record.started_at)
    return started is not None and written - started < RESAVE_WINDOW_S


def without_progress(records: Sequence[AttemptRecord], member: str) -> list[AttemptRecord]:
    """``member``'s latest attempts that made no progress, oldest first: back to the last one
    that did, or completed; preemptions are passed over."""
    streak: list[AttemptRecord] = []
    for record in reversed(records):
        if record.member != member or record.outcome in PREEMPTED:
            continue
        if record.outcome == Outcome.COMPLETED or made_progress(record):
            break
        streak.append(record)
    return streak[::-1]


def describe(records: Sequence[AttemptRecord]) -> str:
    """``attempt 4 (failed, exit 1), attempt 5 (hung, exit 1)``."""
    return ", ".join(
        f"attempt {or_unknown(r.attempt)} ({or_unknown(r.outcome_text)}, exit {r.exit_code})"
        for r in records)


def guard_status(records: Sequence[AttemptRecord], member: str, limit: int) -> str:
    """One line for --inspect and the drill: how close ``member`` is to the guard's limit."""
    if not limit:
        return "crash-loop guard: off (--max-attempts-without-progress 0)"
    streak = without_progress(records, member)
    line = (f"attempts without progress (member {member}): {len(streak)} of {limit} "
            "(--max-attempts-without-progress)")
    if len(streak) >= limit:
        line += f" — the next start is refused: {describe(streak[-limit:])}"
    return line
