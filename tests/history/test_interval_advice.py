"""The interval advice of --inspect and the drill's verdict, on records written by hand."""

from __future__ import annotations

import pytest

from runai_entry.core.attempt_record import AttemptRecord
from runai_entry.history.report import interval_advice, verdict
from runai_entry.history.store import utc_timestamp

H, MIN = 3600.0, 60.0
T0 = 1_800_000_000.0


def history(every: float, *, attempts: int = 3, ran: float = 3 * H, save_s: float | None = 40.0,
            saved_at_stop: bool = False, stall_s: float | None = None) -> list[AttemptRecord]:
    """``attempts`` attempts of ``ran`` seconds, each preempted but the last, checkpointing
    every ``every`` seconds (and at the stop signal when ``saved_at_stop``)."""
    records = []
    start = T0
    for n in range(1, attempts + 1):
        last = n == attempts
        stop = None if last else start + ran - 5
        times = [start + every * k for k in range(1, int(ran // every) + 1)
                 if stop is None or start + every * k < stop]
        if saved_at_stop and stop is not None:
            times.append(stop + 2)
        estimate = None if save_s is None else {"bytes": 1e9, "seconds": save_s,
                                                "estimate_s": save_s, "budget_s": 60,
                                                "share": save_s / 60}
        if estimate is not None and stall_s is not None:
            estimate["stall_s"] = stall_s
        records.append(AttemptRecord.from_json({
            "attempt": n, "member": "0", "outcome": "completed" if last else "preempted",
            "exit_code": 0 if last else 1, "started_at": utc_timestamp(start), "ran_for_s": ran,
            "stop_at": None if stop is None else utc_timestamp(stop),
            "grace_used_s": None if stop is None else 5.0, "stop_timeout_s": 28.0,
            "first_step_at": utc_timestamp(start + 30),
            "checkpoints": [{"path": f"/c/step-{int(t)}.pt", "step": int(t), "mtime": t}
                            for t in reversed(times)],
            "newest_at_end": f"/c/step-{int(times[-1])}.pt" if times else None,
            "newest_step": int(times[-1]) if times else None,
            "newest_mtime": times[-1] if times else None,
            "resumed_from": None if n == 1 else records[-1].newest_at_end,
            "resumed_step": None if n == 1 else records[-1].newest_step,
            "resumed_mtime": None if n == 1 else records[-1].newest_mtime,
            **({} if estimate is None else {"save_estimate": estimate})}))
        start += ran + 60
    return records


def test_the_issues_example_checkpointing_hourly_with_a_preemption_every_3_hours() -> None:
    """9 h of running, 2 preemptions: one every ~4h 30m; a 40 s save: every ~19 min."""
    records = history(H)
    advice = interval_advice(records)
    assert advice is not None
    assert advice.interval_s == H and advice.preemptions == 2
    assert advice.mean_between_s == pytest.approx(4.5 * H)
    sentence = advice.sentence()
    assert sentence.startswith("checkpoint interval: you checkpoint every 1h; with a "
                               "preemption every ~4h 30m (2 seen) and a 40s save, every ~19m would")
    assert "would lose ~9m per preemption instead of ~30m (Young/Daly" in sentence
    assert sentence in verdict(records)
    assert advice.as_dict()["optimum_s"] == pytest.approx(advice.best_s, abs=0.001)


@pytest.mark.parametrize(("every", "said"), [
    (45 * MIN, "lose"),  # too rarely
    (H, "lose"),
    (30 * MIN, None),  # within a factor of 2 of ~18m
    (10 * MIN, None),
    (5 * MIN, "spend"),  # too often: the saves' share of the run
    (2 * MIN, "spend"),
])
def test_only_an_interval_beyond_a_factor_of_two_is_advised(every: float,
                                                            said: str | None) -> None:
    advice = interval_advice(history(every))
    assert (None if advice is None else advice.sentence().split(" would ")[1].split()[0]) == said


def test_too_often_says_what_the_saves_cost() -> None:
    advice = interval_advice(history(2 * MIN))
    assert advice is not None
    assert "every ~19m would spend 3% of the run saving instead of 25%" in advice.sentence()
    assert "checkpoint less often" in advice.sentence()


def test_an_async_save_costs_its_stall() -> None:
    """A 40 s save that holds the loop 1 s: the optimum is ~3 min, so hourly is far too rare."""
    advice = interval_advice(history(10 * MIN, stall_s=1.0))
    assert advice is not None and advice.save_s == 1.0
    assert "a 1.0s save" in advice.sentence()


@pytest.mark.parametrize("case", ["no save cost", "no preemption", "one checkpoint",
                                  "saved at every stop"])
def test_no_advice_without_the_figures_or_the_need(case: str) -> None:
    """Without a measured save cost no cost is assumed; without a preemption there is no rate;
    with a stop-time save that kept every preemption's work, a rarer save lost nothing."""
    records = {
        "no save cost": lambda: history(H, save_s=None),
        "no preemption": lambda: history(H, attempts=1),
        "one checkpoint": lambda: history(2 * H, ran=2.5 * H),
        "saved at every stop": lambda: history(H, saved_at_stop=True),
    }[case]()
    assert interval_advice(records) is None
    assert not [p for p in verdict(records) if p.startswith("checkpoint interval")]


def test_too_often_is_said_even_when_the_stop_saves() -> None:
    """The saves' cost is paid whether or not the stop-time save works."""
    advice = interval_advice(history(2 * MIN, saved_at_stop=True))
    assert advice is not None and "spend" in advice.sentence()


def test_saving_often_at_a_negligible_cost_is_not_advised() -> None:
    """A save of 0.1 s every 2 s takes under 5% of the run: Young/Daly would still say
    "less often" (every ~6 s), but nothing worth changing is at stake (a drill's saves, a small
    model's); 0.5 s every 2 s (20%) is."""
    assert interval_advice(history(2.0, save_s=0.1, ran=120.0)) is None
    assert interval_advice(history(2.0, save_s=0.5, ran=120.0)) is not None
