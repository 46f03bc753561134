"""The crash-loop guard's reading of the history: which latest attempts made no progress."""

from __future__ import annotations

from typing import Any

import pytest

from runai_entry.core.attempt_record import AttemptRecord
from runai_entry.history.crashloop import describe, made_progress, without_progress


def attempt(n: int, outcome: str, resumed: str | None, newest: str | None, member: str = "0",
            **extra: Any) -> AttemptRecord:
    return AttemptRecord.from_json({
        "attempt": n, "member": member, "outcome": outcome, "exit_code": 1,
        "resumed_from": resumed, "newest_at_end": newest, **extra})


class TestMadeProgress:
    @pytest.mark.parametrize(("record", "expected"), [
        (attempt(1, "failed", None, None), False),  # fresh start, nothing written
        (attempt(1, "failed", None, "step-10.pt"), True),
        (attempt(2, "failed", "step-10.pt", "step-10.pt"), False),
        (attempt(2, "failed", "step-10.pt", "step-20.pt"), True),
        # last.ckpt rewritten in place: the step tells
        (attempt(2, "failed", "last.ckpt", "last.ckpt", resumed_step=10, newest_step=20), True),
        (attempt(2, "failed", "last.ckpt", "last.ckpt", resumed_step=10, newest_step=10), False),
    ])
    def test_table(self, record: AttemptRecord, expected: bool) -> None:
        assert made_progress(record) is expected


#: An attempt that started at T0 (epoch seconds 1_000_000, as the history writes it).
T0 = 1_000_000.0
STARTED = "1970-01-12T13:46:40+00:00"


def rewritten(after_s: float, digest: str = "9:b", **extra: Any) -> AttemptRecord:
    """``ckpt.pt`` resumed (content "9:a") and rewritten ``after_s`` after the start."""
    return attempt(2, "failed", "ckpt.pt", "ckpt.pt", started_at=STARTED, resumed_mtime=T0 - 60,
                   newest_mtime=T0 + after_s, resumed_digest="9:a", newest_digest=digest,
                   **extra)


class TestNewWork:
    """A checkpoint rewritten since the resume is progress only when it holds new work."""

    @pytest.mark.parametrize(("record", "expected"), [
        (rewritten(60), True),
        (rewritten(60, digest="9:a"), False),  # the same content saved again
        (rewritten(2), False),  # saved at once, by a job that does not beat
        (rewritten(2, first_step_at="1970-01-12T13:46:43+00:00"), False),  # before its 1st step
        (rewritten(5, first_step_at="1970-01-12T13:46:43+00:00"), True),  # after it
        (rewritten(60, digest=None), True),  # an older record, or a directory: the identity
        # The step resumed from, rewritten (a new mtime): the step tells.
        (rewritten(60, resumed_step=10, newest_step=10), False),
        (rewritten(2, resumed_step=10, newest_step=11), True),
        # After a fresh start, whatever was saved is new.
        (attempt(1, "failed", None, "ckpt.pt", started_at=STARTED, newest_mtime=T0 + 1), True),
    ], ids=["later", "same-content", "at-once", "before-first-step", "after-first-step",
            "no-digest", "same-step", "next-step", "fresh-start"])
    def test_table(self, record: AttemptRecord, expected: bool) -> None:
        assert made_progress(record) is expected


class TestWithoutProgress:
    def test_counts_back_to_the_last_progress(self) -> None:
        records = [
            attempt(1, "failed", None, "step-10.pt"),  # progress
            attempt(2, "failed", "step-10.pt", "step-10.pt"),
            attempt(3, "hung", "step-10.pt", "step-10.pt"),
        ]
        assert [r.attempt for r in without_progress(records, "0")] == [2, 3]

    def test_preemptions_are_passed_over(self) -> None:
        """A job preempted during its start-up is not looping: its attempt neither counts nor
        breaks the streak."""
        records = [
            attempt(1, "failed", None, None),
            attempt(2, "preempted", None, None),
            attempt(3, "followed-peer", None, None),
            attempt(4, "killed-at-deadline", None, None),
            attempt(5, "failed", None, None),
        ]
        assert [r.attempt for r in without_progress(records, "0")] == [1, 5]

    def test_a_completed_attempt_ends_the_streak(self) -> None:
        records = [attempt(1, "failed", None, None), attempt(2, "completed", None, None),
                   attempt(3, "failed", None, None)]
        assert [r.attempt for r in without_progress(records, "0")] == [3]

    def test_other_members_are_not_counted(self) -> None:
        records = [attempt(1, "failed", None, None, member="1"),
                   attempt(1, "failed", None, None, member="0")]
        assert [r.member for r in without_progress(records, "0")] == ["0"]

    def test_describe(self) -> None:
        assert describe([attempt(4, "failed", None, None), attempt(5, "hung", None, None)]) == (
            "attempt 4 (failed, exit 1), attempt 5 (hung, exit 1)")
