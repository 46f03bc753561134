"""Goodput and badput per attempt: a table of history records → figures."""

from __future__ import annotations

from typing import Any

import pytest

from runai_entry.core.attempt_record import AttemptRecord, parse_time
from runai_entry.history.goodput import (
    NEVER_BEAT,
    NO_HEARTBEAT_RECORD,
    NO_WRITE_TIME,
    attempt_figures,
    checkpoint_interval,
    goodput,
    per_member,
)
from runai_entry.history.store import utc_timestamp

T0 = 1_800_000_000.0


def at(seconds: float | None) -> str | None:
    """T0 + seconds as the history writes times."""
    return None if seconds is None else utc_timestamp(T0 + seconds)


def typed(records: list[dict[str, Any]]) -> list[AttemptRecord]:
    """The records as the history reads them."""
    return [AttemptRecord.from_json(r) for r in records]


def ckpt(step: int, written: float) -> dict[str, Any]:
    return {"path": f"/c/step-{step}.pt", "step": step, "mtime": T0 + written}


def attempt(n: int, outcome: str, start: float, ran_for: float, *, first_step: float | None,
            stop: float | None = None, grace: float | None = None, member: str = "0",
            resumed: dict[str, Any] | None = None, newest: dict[str, Any] | None = None,
            saved: tuple[dict[str, Any], ...] = (), **extra: Any) -> dict[str, Any]:
    """A record as bookkeeping writes it today; times are seconds after T0."""
    record = {
        "attempt": n, "member": member, "outcome": outcome,
        "started_at": at(start), "ended_at": at(start + ran_for + 0.2), "ran_for_s": ran_for,
        "grace_used_s": grace, "stop_at": at(stop), "first_step_at": at(first_step),
        "resumed_from": resumed and resumed["path"], "resumed_step": resumed and resumed["step"],
        "resumed_mtime": resumed and resumed["mtime"],
        "newest_at_end": newest and newest["path"], "newest_step": newest and newest["step"],
        "newest_mtime": newest and newest["mtime"],
        "checkpoints": list(saved),
    }
    record.update(extra)
    return record


C40, C51 = ckpt(400, 40.0), ckpt(510, 51.0)
STOPPED = attempt(1, "preempted", 0, 52, first_step=5, stop=50, grace=2, newest=C40, saved=(C40,))

# (records, which attempt, (startup_s, stop_s, lost_s, productive_s, requeue_wait_s))
CASES = {
    # Saved every so often, not at the stop: the work since the last save (40 → 50) is lost.
    "periodic-only": ([STOPPED, attempt(2, "completed", 60, 30, first_step=63, resumed=C40,
                                        newest=C40)], 0, (5, 2, 10, 35, None)),
    # The stop-time save (written after the signal) holds the last step: nothing is lost.
    "saved-after-signal": ([attempt(1, "preempted", 0, 52, first_step=5, stop=50, grace=2,
                                    newest=C51, saved=(C51, C40), last_step=510,
                                    last_step_at=at(49.9)),
                            attempt(2, "completed", 60, 30, first_step=63, resumed=C51,
                                    newest=C51)], 0, (5, 2, 0, 45, None)),
    # A save in flight finished after the signal (step 91), the step reached was 101, and the
    # stop-time save never came: 10 steps at the attempt's mean 0.4 s are lost.
    "after-signal-behind": ([attempt(1, "preempted", 0, 52, first_step=5, stop=50, grace=2,
                                     newest=ckpt(91, 50.5), last_step=101,
                                     last_step_at=at(45))], 0, (5, 2, 4, 41, None)),
    # No checkpoint at all: everything after the first step is lost.
    "no-checkpoint": ([attempt(1, "preempted", 0, 52, first_step=5, stop=50, grace=2),
                       attempt(2, "preempted", 60, 52, first_step=65, stop=110, grace=2)],
                      1, (5, 2, 45, 0, 8)),
    # The next attempt resumed from the same checkpoint as this one: nothing new was kept.
    "nothing-newer": ([attempt(1, "preempted", 0, 20, first_step=3, stop=19, grace=1,
                               resumed=C40, newest=C40),
                       attempt(2, "completed", 25, 5, first_step=27, resumed=C40, newest=C40)],
                      0, (3, 1, 16, 0, None)),
    # A crash: work is lost up to the end, there is no stop.
    "crash": ([attempt(1, "failed", 0, 30, first_step=3, newest=ckpt(2, 20), saved=(ckpt(2, 20),),
                       first_failure={"pid": 7, "how": "exited 3", "returncode": 3,
                                      "at": at(30), "command": True})],
              0, (3, 0, 10, 17, None)),
    # Hung at 30, stopped by the watchdog at 60: the hang is lost work, then the stop.
    "hang": ([attempt(1, "hung", 0, 61, first_step=5, stop=60, grace=1, newest=ckpt(25, 25),
                      last_step=30, last_step_at=at(30))], 0, (5, 1, 35, 20, None)),
    # A member that followed its peer's preemption is stopped the same way.
    "followed-peer": ([attempt(1, "followed-peer", 0, 52, first_step=5, stop=50, grace=2,
                               newest=C40, followed={"member": "1", "attempt": 1})],
                      0, (5, 2, 10, 35, None)),
    # Killed at the deadline: the stop-time save did not finish; the stop is the whole window.
    "killed-at-deadline": ([attempt(1, "killed-at-deadline", 0, 58, first_step=5, stop=30,
                                    grace=28, newest=ckpt(2, 20))], 0, (5, 28, 10, 15, None)),
    # Never beat (a shell script, Lightning): start-up unknown, lost work from write times.
    "never-beat": ([attempt(1, "preempted", 0, 52, first_step=None, stop=50, grace=2,
                            newest=C40)], 0, (None, 2, 10, 40, None)),
    # A completed attempt loses nothing, whatever its last checkpoint.
    "completed": ([attempt(1, "completed", 0, 30, first_step=2, newest=ckpt(1, 10))],
                  0, (2, 0, 0, 28, None)),
}


class TestAttemptFigures:
    @pytest.mark.parametrize(("records", "index", "expected"), CASES.values(), ids=CASES.keys())
    def test_table(self, records: list[dict[str, Any]], index: int,
                   expected: tuple[float | None, ...]) -> None:
        f = attempt_figures(typed(records))[index]
        got = (f.startup_s, f.stop_s, f.lost_s, f.productive_s, f.requeue_wait_s)
        assert got == pytest.approx(expected, abs=0.01), got

    def test_figures_add_up_to_the_run(self) -> None:
        """Start-up, productive, lost and stop are the attempt's run time, in every case above
        where nothing is unknown."""
        for records, index, _ in CASES.values():
            f = attempt_figures(typed(records))[index]
            if not f.unknown:
                parts = (f.startup_s or 0) + f.productive_s + (f.lost_s or 0) + f.stop_s
                assert parts == pytest.approx(f.ran_for_s, abs=0.01), f

    def test_never_beat_says_so(self) -> None:
        f = attempt_figures(typed(CASES["never-beat"][0]))[0]
        assert f.unknown == (NEVER_BEAT,)

    def test_never_beat_says_how_the_bound_was_reached_and_the_remedy(self) -> None:
        """The goodput line is "at most": the sentence under it says start-up counted 0, and
        how to measure it (a beat in the loop, or the framework's callback)."""
        from runai_entry.history.report import goodput_lines

        lines = goodput_lines(typed(CASES["never-beat"][0]))
        assert lines[0].startswith("goodput at most ")
        assert "start-up unknown, counted 0" in lines[1]
        assert "heartbeat(step)" in lines[1] and "docs/integrations.md" in lines[1]


#: A record from before this accounting.
OLD: dict[str, Any] = {
    "attempt": 1, "member": "0", "outcome": "preempted", "started_at": at(0),
    "ended_at": at(52.3), "ran_for_s": 52.0, "grace_used_s": 2.0, "resumed_from": None,
    "resumed_step": None, "resumed_mtime": None, "newest_at_end": "/c/step-400.pt",
    "newest_step": 400, "newest_mtime": T0 + 40}


class TestOldRecords:
    """Records written before this accounting: no stop_at, first_step_at or checkpoints."""

    def test_stop_from_grace_and_lost_from_the_newest_mtime(self) -> None:
        """The stop signal is the end less the grace used; start-up is unknown, and said so."""
        f = attempt_figures(typed([OLD]))[0]
        assert (f.startup_s, f.stop_s, f.lost_s, f.productive_s) == pytest.approx(
            (None, 2, 10, 40))
        assert f.unknown == (NO_HEARTBEAT_RECORD,)

    def test_without_an_mtime_lost_work_is_unknown(self) -> None:
        """The oldest records carry no mtime at all: lost work is unknown, not a guess."""
        record = {**OLD, "newest_mtime": None}
        f = attempt_figures(typed([record]))[0]
        assert f.lost_s is None and NO_WRITE_TIME in f.unknown
        assert f.productive_s == pytest.approx(50)  # an upper bound, as said

    def test_the_bare_minimum(self) -> None:
        """Only what a 0.1 record holds: figures still come, nothing raises."""
        f = attempt_figures(typed([{"attempt": 1, "outcome": "completed"}]))[0]
        assert (f.ran_for_s, f.stop_s, f.lost_s, f.start) == (0.0, 0.0, 0.0, None)


class TestJobFigures:
    def test_one_member_adds_up_to_its_wall_time(self) -> None:
        """wall = first start → last end = the runs plus the queue waits."""
        records = CASES["periodic-only"][0]
        g = goodput(attempt_figures(typed(records)))
        assert g.wall_s == pytest.approx(90)
        assert g.requeue_wait_s == pytest.approx(8)
        assert (g.startup_s, g.lost_work_s, g.stop_s) == pytest.approx((8, 10, 2))
        assert g.productive_s == pytest.approx(35 + 27)
        assert g.fraction == pytest.approx(62 / 90)
        total = g.productive_s + g.startup_s + g.lost_work_s + g.stop_s + g.requeue_wait_s
        assert total == pytest.approx(g.wall_s)

    def test_several_members(self) -> None:
        """Each member's next attempt is its own; the job is the members' average."""
        a0 = ckpt(40, 40.0)
        records = [
            attempt(1, "preempted", 0, 52, first_step=5, stop=50, grace=2, member="0",
                    newest=a0),
            attempt(1, "followed-peer", 1, 51, first_step=11, stop=50, grace=2, member="1",
                    newest=a0),
            attempt(2, "completed", 60, 30, first_step=63, member="0", resumed=a0, newest=a0),
            attempt(2, "completed", 61, 29, first_step=64, member="1", resumed=a0, newest=a0),
        ]
        figures = attempt_figures(typed(records))
        assert [f.requeue_wait_s for f in figures] == pytest.approx([None, None, 8, 9])
        assert figures[1].lost_s == pytest.approx(10)  # 40 → 50, for member 1 too
        members = per_member(figures)
        assert members["0"].productive_s == pytest.approx(35 + 27)
        assert members["1"].productive_s == pytest.approx((51 - 10 - 2 - 10) + 26)
        job = goodput(figures)
        assert job.wall_s == pytest.approx(90)
        assert job.productive_s == pytest.approx((62 + 55) / 2)
        assert job.requeue_wait_s == pytest.approx(8.5)

    def test_unknowns_are_gathered_by_kind(self) -> None:
        records = [attempt(1, "preempted", 0, 52, first_step=None, stop=50, grace=2, newest=C40),
                   attempt(2, "completed", 60, 30, first_step=None, resumed=C40, newest=C40)]
        assert goodput(attempt_figures(typed(records))).unknown == (
            (NEVER_BEAT, ("attempt 1", "attempt 2")),)

    def test_overlapping_attempts_never_exceed_the_wall(self) -> None:
        """Two attempts of one member whose clocks overlap: the fraction stays at most 1."""
        records = [attempt(1, "completed", 0, 50, first_step=0),
                   attempt(2, "completed", 10, 50, first_step=10)]
        assert goodput(attempt_figures(typed(records))).fraction == 1.0

    def test_no_records(self) -> None:
        g = goodput([])
        assert (g.wall_s, g.fraction) == (0.0, None)


class TestInterval:
    def test_median_gap_between_periodic_checkpoints(self) -> None:
        """Checkpoints written after the stop signal are not part of the schedule."""
        saved = (ckpt(4, 50.5), ckpt(3, 30), ckpt(2, 20), ckpt(1, 10))
        record = attempt(1, "preempted", 0, 52, first_step=1, stop=50, grace=2, saved=saved)
        assert checkpoint_interval(typed([record])) == pytest.approx(10)

    def test_unknown_without_two_checkpoints(self) -> None:
        assert checkpoint_interval(typed([STOPPED])) is None


class TestParseTime:
    """A record's times, as goodput reads them (the one reading, in core)."""

    @pytest.mark.parametrize(("text", "expected"), [
        ("2027-01-15T08:00:00.000+00:00", T0), ("2027-01-15T08:00:00Z", T0),
        ("2027-01-15T08:00:00", T0), ("not a time", None), (None, None), (12, None)])
    def test_table(self, text: object, expected: float | None) -> None:
        assert parse_time(text) == expected
