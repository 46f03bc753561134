"""The Checkpointer's measure of its saves reaches the attempt history and the drill's verdict."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runai_entry.core.attempt_record import AttemptRecord
from runai_entry.history.report import verdict
from runai_entry.training._io.budget import SaveBudget


def test_the_budget_figures_are_left_for_runai_entry(tmp_path: Path) -> None:
    budget = SaveBudget(timeout=10.0)
    budget.record(3_000_000_000, 7.5)
    budget.publish(str(tmp_path))
    figures = json.loads((tmp_path / ".runai-entry" / "save-estimate.json").read_text())
    assert figures == {"bytes": 3_000_000_000, "seconds": 7.5, "stall_s": 7.5, "estimate_s": 7.5,
                       "budget_s": 10.0, "share": 0.75}


def test_an_async_saves_stall_is_left_beside_its_whole_time(tmp_path: Path) -> None:
    """What a periodic async save costs the loop (its copy) is what the interval advice needs."""
    budget = SaveBudget(timeout=10.0)
    budget.record(3_000_000_000, 7.5, stall=0.25)
    assert budget.figures() == {"bytes": 3_000_000_000, "seconds": 7.5, "stall_s": 0.25,
                                "estimate_s": 7.5, "budget_s": 10.0, "share": 0.75}


def test_no_figures_without_a_budget(tmp_path: Path) -> None:
    """Without runai-entry (no RUNAI_ENTRY_STOP_TIMEOUT) there is nothing to compare with."""
    budget = SaveBudget(timeout=None)
    budget.record(1000, 1.0)
    budget.publish(str(tmp_path))
    assert not (tmp_path / ".runai-entry").exists()


def test_verdict_names_a_save_over_half_the_budget_once() -> None:
    figures = {"bytes": 3e9, "seconds": 7.5, "estimate_s": 7.5, "budget_s": 10.0, "share": 0.75}
    records = [AttemptRecord.from_json({"attempt": n, "outcome": "completed",
                                        "save_estimate": figures}) for n in (1, 2)]
    found = [p for p in verdict(records) if "Checkpointer measured" in p]
    assert len(found) == 1
    assert "75% of the 10s budget" in found[0] and "--grace-period" in found[0]
    figures_ok = dict(figures, share=0.4)
    assert not [p for p in verdict([AttemptRecord.from_json({"attempt": 1,
                                                             "save_estimate": figures_ok})])
                if "Checkpointer" in p]


def test_the_drill_records_and_names_it(entry, tmp_path: Path) -> None:
    """A job that leaves the figures (as the Checkpointer does at its first save): its history
    line carries them and the drill's verdict says what to raise."""
    ck = tmp_path / "ck"
    job = [sys.executable, "-c",
           "import os, time, pathlib\n"
           "from runai_entry.training._io.budget import SaveBudget\n"
           "b = SaveBudget(timeout=float(os.environ['RUNAI_ENTRY_STOP_TIMEOUT']))\n"
           "b.record(4_000_000_000, 6.0)\n"
           "d = os.environ['RUNAI_ENTRY_CHECKPOINT_DIR']\n"
           "b.publish(d)\n"
           "pathlib.Path(d, 'step-00000001.pt').write_bytes(b'\\x80\\x04N.')\n"
           "time.sleep(2)\n"]
    e = entry(["--grace-period", "9s", "--kill-margin", "1s", "--simulate-preempt", "1s",
               "--simulate-requeue", "1", "--checkpoint-dir", str(ck), "--", *job])
    e.wait(timeout=120)
    record = json.loads((ck / ".runai-entry" / "history.jsonl").read_text().splitlines()[0])
    assert record["save_estimate"]["estimate_s"] == 6.0
    assert any("Checkpointer measured a save of 4.00 GB in 6.0s" in line for line in e.stderr), \
        e.stderr
