"""How often to checkpoint: Young/Daly, the preemption rate and the save cost, table-tested."""

from __future__ import annotations

import math

import pytest

from runai_entry.core.attempt_record import AttemptRecord, SaveEstimate
from runai_entry.core.interval import (
    FAR,
    clamp,
    far_from,
    latest_save_cost,
    lost_per_preemption,
    optimum,
    preemption_rate,
    save_cost,
    save_share,
    young,
)

H, MIN = 3600.0, 60.0


@pytest.mark.parametrize(("save_s", "between_s", "young_s", "daly_s"), [
    # The issue's example: a 40 s save, a preemption every 3 h: ~15 min.
    (40.0, 3 * H, 929.5, 903.0),
    # A 1 s save, a preemption an hour: ~85 s.
    (1.0, H, 84.85, 84.85 * (1 + math.sqrt(1 / 7200) / 3 + 1 / 7200 / 9) - 1),
    # A long save: the higher-order terms matter (Young says 1 h).
    (1800.0, H, 3600.0, 2500.0),
    # A save of twice the mean time between preemptions or more: Daly stops at M.
    (7200.0, H, math.sqrt(2 * 7200 * H), H),
    (9000.0, H, math.sqrt(2 * 9000 * H), H),
])
def test_young_and_daly(save_s: float, between_s: float, young_s: float, daly_s: float) -> None:
    assert young(save_s, between_s) == pytest.approx(young_s, rel=1e-3)
    assert optimum(save_s, between_s) == pytest.approx(daly_s, rel=1e-3)


@pytest.mark.parametrize(("save_s", "between_s"), [
    (0.0, H), (-1.0, H), (1.0, 0.0), (1.0, math.inf), (math.nan, H), (1.0, math.nan)])
def test_optimum_refuses_what_has_no_optimum(save_s: float, between_s: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        optimum(save_s, between_s)


@pytest.mark.parametrize(("save_s", "between_s"), [(40.0, 3 * H), (1.0, H), (600.0, H)])
def test_the_optimum_wastes_least(save_s: float, between_s: float) -> None:
    """The formula's claim, checked numerically against Daly's own model of the wall time per
    second of work with preemptions at exponential intervals (his eq. 13, no restart cost):
    M (exp((tau + save) / M) - 1) / tau. Daly's estimate beats Young's, and its neighbours."""

    def wall_per_work(tau: float) -> float:
        return between_s * math.expm1((tau + save_s) / between_s) / tau

    best = optimum(save_s, between_s)
    assert wall_per_work(best) <= wall_per_work(young(save_s, between_s))
    assert wall_per_work(best) <= min(wall_per_work(best * f)
                                      for f in (0.5, 0.8, 0.95, 1.05, 1.25, 2.0))


@pytest.mark.parametrize(("interval_s", "best_s", "far"), [
    (60 * MIN, 15 * MIN, True), (30 * MIN, 15 * MIN, False), (31 * MIN, 15 * MIN, True),
    (7 * MIN, 15 * MIN, True), (8 * MIN, 15 * MIN, False), (15 * MIN, 15 * MIN, False)])
def test_far_from_means_more_than_a_factor_of_two_either_way(interval_s: float, best_s: float,
                                                             far: bool) -> None:
    assert FAR == 2.0
    assert far_from(interval_s, best_s) is far


def test_the_issues_figures() -> None:
    """"every ~15 min would lose ~8 min per preemption instead of ~30"."""
    best = optimum(40.0, 3 * H)
    assert round(best / MIN) == 15
    assert round(lost_per_preemption(best) / MIN) == 8
    assert lost_per_preemption(60 * MIN) == 30 * MIN
    assert save_share(40.0, 60.0) == pytest.approx(0.4)


@pytest.mark.parametrize(("records", "run_s", "count", "between"), [
    ([], 0.0, 0, None),
    ([{"outcome": "completed", "ran_for_s": 100}], 100.0, 0, None),
    ([{"outcome": "preempted", "ran_for_s": 3 * H}, {"outcome": "completed", "ran_for_s": H}],
     4 * H, 1, 4 * H),
    # Every way the platform takes the job away counts; a failure or a hang does not.
    ([{"outcome": o, "ran_for_s": H} for o in
      ("preempted", "killed-at-deadline", "followed-peer", "failed", "hung")], 5 * H, 3, 5 * H / 3),
    # Untrusted values: not numbers, negative, infinite, booleans count no run time.
    ([{"outcome": "preempted", "ran_for_s": v} for v in ("3600", -1, math.inf, True, None, 60)],
     60.0, 6, 10.0),
    ([{"outcome": ["preempted"]}, {"ran_for_s": 10}], 10.0, 0, None),
])
def test_preemption_rate(records: list[dict[str, object]], run_s: float, count: int,
                         between: float | None) -> None:
    rate = preemption_rate(map(AttemptRecord.from_json, records))
    assert (rate.run_s, rate.preemptions) == (pytest.approx(run_s), count)
    assert rate.mean_between_s == (None if between is None else pytest.approx(between))


@pytest.mark.parametrize(("estimate", "cost"), [
    (None, None), ("40", None), ({}, None),
    ({"seconds": 40.0}, 40.0),
    ({"seconds": 40.0, "stall_s": 2.5}, 2.5),  # an async save costs the loop its stall only
    ({"seconds": 40.0, "stall_s": 0.0}, 0.001),  # rounded to 0: a save never costs nothing
    ({"seconds": 40.0, "stall_s": "x"}, 40.0),
    ({"seconds": math.nan}, None), ({"seconds": -3}, None), ({"seconds": True}, None),
])
def test_save_cost(estimate: object, cost: float | None) -> None:
    assert save_cost(SaveEstimate.from_json(estimate)) == cost


def test_the_newest_save_cost_in_the_history_wins() -> None:
    records = [{"save_estimate": {"seconds": 9.0}}, {}, {"save_estimate": {"seconds": 4.0}},
               {"save_estimate": "broken"}]
    assert latest_save_cost(map(AttemptRecord.from_json, records)) == 4.0
    assert latest_save_cost([AttemptRecord()]) is None


@pytest.mark.parametrize(("seconds", "clamped"), [(10, 60), (600, 600), (9000, 3600)])
def test_clamp(seconds: float, clamped: float) -> None:
    assert clamp(seconds, (60.0, 3600.0)) == clamped
