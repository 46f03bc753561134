"""Checkpointer(every_seconds="auto"): the interval chosen from runai-entry's history and the
measured save cost, within bounds (the schedule's side, without torch; one Checkpointer test)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from runai_entry.core.attempt_record import AttemptRecord
from runai_entry.core.errors import ConfigError
from runai_entry.core.interval import optimum
from runai_entry.history.store import record_attempt
from runai_entry.training.schedule import AUTO_BOUNDS, AUTO_DEFAULT_S, AutoInterval, read_history

H = 3600.0


def write_history(directory: Path, *records: dict[str, Any]) -> None:
    for record in records:
        # runai-entry's own writer: the format it reads
        record_attempt(directory, AttemptRecord.from_json(record))


def preempted_every(directory: Path, hours: float, times: int, save_s: float | None) -> None:
    estimate = {} if save_s is None else {"save_estimate": {"seconds": save_s}}
    write_history(directory, *({"attempt": n, "outcome": "preempted", "ran_for_s": hours * H,
                                **estimate} for n in range(1, times + 1)))


@pytest.mark.parametrize(("hours", "save_s", "bounds", "chosen"), [
    # A 40 s save measured by an earlier attempt, a preemption every 3 h: ~15 min.
    (3.0, 40.0, AUTO_BOUNDS, optimum(40.0, 3 * H)),
    # The bounds hold: a tiny save would mean saving every few seconds...
    (3.0, 0.01, AUTO_BOUNDS, 60.0),
    # ...and a huge one, rarely.
    (30.0, 1000.0, AUTO_BOUNDS, 3600.0),
    (3.0, 40.0, (1200.0, 7200.0), 1200.0),
    # No cost known yet: the default until the first save measures one.
    (3.0, None, AUTO_BOUNDS, AUTO_DEFAULT_S),
])
def test_the_interval_from_the_history(tmp_path: Path, hours: float, save_s: float | None,
                                       bounds: tuple[float, float], chosen: float) -> None:
    preempted_every(tmp_path, hours, 3, save_s)
    auto = AutoInterval(str(tmp_path), bounds)
    assert auto.seconds == pytest.approx(chosen)
    assert auto.rate.preemptions == 3


def test_without_history_the_default(tmp_path: Path) -> None:
    auto = AutoInterval(str(tmp_path))
    assert auto.seconds == AUTO_DEFAULT_S == 900.0
    line = auto.measured(2.0)
    assert line is not None and line.startswith('every_seconds="auto": saving every 900 s')
    assert "the default: no preemption in the attempt history yet" in line


def test_the_first_measured_save_decides_and_is_said_once(tmp_path: Path) -> None:
    """The earlier attempt's cost until this process measures its own; one line, then none."""
    preempted_every(tmp_path, 3.0, 2, 40.0)
    auto = AutoInterval(str(tmp_path))
    line = auto.measured(10.0)  # an async save: its stall only
    assert auto.seconds == pytest.approx(optimum(10.0, 3 * H))
    assert line == (f'every_seconds="auto": saving every {auto.seconds:.0f} s (Young/Daly for a '
                    "preemption every ~180 min (2 in 6.0 h of running) and a save that holds "
                    "the loop 10.00 s; auto_bounds 60-3600 s)")
    assert auto.measured(20.0) is None
    assert auto.seconds == pytest.approx(optimum(20.0, 3 * H))  # still follows the cost


@pytest.mark.parametrize(("every_seconds", "bounds", "word"), [
    ("fast", AUTO_BOUNDS, "every_seconds"), ("auto", (0.0, 60.0), "auto_bounds"),
    ("auto", (600.0, 60.0), "auto_bounds"), ("auto", (60.0, math.inf), "auto_bounds"),
    ("auto", (60.0,), "auto_bounds"), ("auto", ("a", "b"), "auto_bounds"),
])
def test_bad_settings_are_one_line_errors(tmp_path: Path, every_seconds: str,
                                          bounds: Any, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        AutoInterval.of(every_seconds, str(tmp_path), bounds)


def test_a_number_is_not_auto(tmp_path: Path) -> None:
    assert AutoInterval.of(600.0, str(tmp_path), AUTO_BOUNDS) == (None, 600.0)
    assert AutoInterval.of(None, str(tmp_path), AUTO_BOUNDS) == (None, None)


def test_the_history_is_read_as_untrusted(tmp_path: Path) -> None:
    """Torn and foreign lines are skipped; a link is not followed; only the newest MiB read."""
    state = tmp_path / ".runai-entry"
    state.mkdir()
    good = json.dumps({"outcome": "preempted", "ran_for_s": 100})
    (state / "history.jsonl").write_text(f"{good}\n[1,2]\nnot json\n{{\"outcome\": NaN}}\n"
                                         f"{good[:10]}")
    assert read_history(str(tmp_path)) == [{"outcome": "preempted", "ran_for_s": 100},
                                           {"outcome": None}]
    big = (good + "\n") * ((1 << 20) // len(good) + 1000)
    (state / "history.jsonl").write_text(big)
    records = read_history(str(tmp_path))
    assert 0 < len(records) < big.count("\n") and all(r == json.loads(good) for r in records)
    os.remove(state / "history.jsonl")
    (tmp_path / "elsewhere").write_text(good + "\n")
    os.symlink(tmp_path / "elsewhere", state / "history.jsonl")
    assert read_history(str(tmp_path)) == []
    os.remove(state / "history.jsonl")
    os.mkfifo(state / "history.jsonl")  # no writer: must not block
    assert read_history(str(tmp_path)) == []


def test_the_checkpointer_applies_it_and_says_it_once(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """An async save's stall, not its write, is the cost; rank 0 says the choice once."""
    pytest.importorskip("torch")
    import torch

    from runai_entry.training.checkpointer import Checkpointer
    from runai_entry.training.stop import StopFlag

    preempted_every(tmp_path, 3.0, 2, 40.0)
    ckpt = Checkpointer(tmp_path, every_seconds="auto", auto_bounds=(1.0, 7200.0),
                        async_save=True, flag=StopFlag(signals=[], timeout=None))
    assert ckpt.auto is not None and ckpt.periodic is not None
    assert ckpt.periodic.every_seconds == pytest.approx(optimum(40.0, 3 * H))  # the history's
    ckpt.restore(model=torch.nn.Linear(64, 64))
    for step in (1, 2):
        ckpt.save(step)
        ckpt.close()
    said = [line for line in caplog.messages if "auto" in line]
    assert len(said) == 1 and said[0].startswith('every_seconds="auto"')
    assert ckpt.auto.save_s is not None and ckpt.auto.save_s <= ckpt.budget.last_seconds
    assert ckpt.periodic.every_seconds == ckpt.auto.seconds \
        == pytest.approx(max(1.0, optimum(ckpt.auto.save_s, 3 * H)))
    assert ckpt.auto.seconds < optimum(40.0, 3 * H)  # a save far cheaper than 40 s
