"""Periodic: every N steps and/or every T seconds, whichever first (on a test clock)."""

from __future__ import annotations

import pytest

from runai_entry.training.schedule import Periodic


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestPeriodic:
    def test_every_steps(self) -> None:
        p = Periodic(every_steps=3, clock=Clock())
        assert [p.due(s) for s in range(5)] == [False, False, False, True, True]
        p.mark(3)
        assert not p.due(5) and p.due(6)
        assert p.seconds_until_due() is None

    def test_every_seconds(self) -> None:
        clock = Clock()
        p = Periodic(every_seconds=60, clock=clock)
        assert not p.due(10_000)
        clock.now += 59.9
        assert not p.due(1) and p.seconds_until_due() == pytest.approx(0.1)
        clock.now += 0.1
        assert p.due(1) and p.seconds_until_due() == 0.0
        p.mark(1)
        assert not p.due(2)

    def test_whichever_comes_first(self) -> None:
        clock = Clock()
        p = Periodic(every_steps=100, every_seconds=60, clock=clock)
        assert p.due(100)
        clock.now += 60
        assert p.due(1)
        p.mark(1)
        assert not p.due(100) and p.due(101)

    def test_resumed_run_counts_from_start_step(self) -> None:
        p = Periodic(every_steps=10, start_step=500, clock=Clock())
        assert not p.due(505) and p.due(510)

    def test_minutes(self) -> None:
        assert Periodic.minutes(15).every_seconds == 900.0

    @pytest.mark.parametrize(
        "kwargs", [{}, {"every_steps": 0}, {"every_seconds": 0.0}, {"every_seconds": -1.0}]
    )
    def test_rejects_bad_intervals(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError):
            Periodic(**kwargs)  # type: ignore[arg-type]
