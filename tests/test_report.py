"""The drill's table and verdict: pure functions of the history's records, and the real drill."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runai_entry.report import render_table, verdict

from .conftest import ENTRY

# A trainer that, like Lightning's OnExceptionCheckpoint, saves under the same name at every
# stop: on_exception.ckpt is rewritten in place (a valid zip, so verification passes it).
REWRITER = """
import os, signal, sys, time, zipfile
directory = os.environ["RUNAI_ENTRY_CHECKPOINT_DIR"]
os.makedirs(directory, exist_ok=True)
resume = os.environ.get("RUNAI_ENTRY_RESUME_FROM")
step = int(zipfile.ZipFile(resume).read("step")) if resume else 0
print("start", step, flush=True)
def save(*_):
    with zipfile.ZipFile(os.path.join(directory, "on_exception.ckpt"), "w") as z:
        z.writestr("step", str(step))
    sys.exit(0)
signal.signal(signal.SIGTERM, save)
while step < int(sys.argv[1]):
    time.sleep(0.02)
    step += 1
print("finished", step, flush=True)
"""


def _record(attempt: int, outcome: str, resumed: tuple[str | None, float | None],
            newest: tuple[str | None, float | None]) -> dict[str, object]:
    return {"attempt": attempt, "outcome": outcome, "ran_for_s": 8.0,
            "resumed_from": resumed[0], "resumed_step": None, "resumed_mtime": resumed[1],
            "newest_at_end": newest[0], "newest_step": None, "newest_mtime": newest[1]}


class TestLostWork:
    def test_rewritten_checkpoint_under_the_same_name_is_new(self) -> None:
        """on_exception.ckpt rewritten at the stop (a later mtime) is a new checkpoint."""
        ckpt = "/c/on_exception.ckpt"
        records = [_record(1, "preempted", (None, None), (ckpt, 100.0)),
                   _record(2, "preempted", (ckpt, 100.0), (ckpt, 108.5)),
                   _record(3, "completed", (ckpt, 108.5), (ckpt, 108.5))]
        assert verdict(records) == []

    def test_same_checkpoint_untouched_is_lost_work(self) -> None:
        """The same name with the same mtime at the end: nothing new was saved."""
        ckpt = "/c/on_exception.ckpt"
        records = [_record(1, "preempted", (None, None), (ckpt, 100.0)),
                   _record(2, "preempted", (ckpt, 100.0), (ckpt, 100.0))]
        assert verdict(records) == [
            "attempt 2: preempted without writing a new checkpoint — its 8.0s of work were lost"]

    def test_records_without_identity_compare_names(self) -> None:
        """A history written before mtimes were recorded still gets the old verdict."""
        old = {"attempt": 1, "outcome": "preempted", "ran_for_s": 2.0,
               "resumed_from": "/c/a.pt", "newest_at_end": "/c/a.pt"}
        assert len(verdict([old])) == 1


class TestDrillWithARewrittenCheckpoint:
    def test_drill_says_ok_when_each_stop_rewrites_the_same_file(self, tmp_path: Path) -> None:
        """The real drill over a trainer that rewrites on_exception.ckpt: no lost work."""
        script = tmp_path / "rewriter.py"
        script.write_text(REWRITER)
        r = subprocess.run(
            [*ENTRY, "--log-format", "json", "--simulate-preempt", "1s", "--simulate-requeue",
             "2", "--grace-period", "4s", "--kill-margin", "1s", "--resume-flag", "",
             "--checkpoint-dir", str(tmp_path / "ckpt"), sys.executable, str(script), "150"],
            capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        starts = [line for line in r.stdout.splitlines() if line.startswith("start")]
        assert len(starts) == 3 and starts[0] == "start 0" and starts[2] != "start 0"
        assert "verdict: OK" in r.stderr, r.stderr


def _r(attempt: int, outcome: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {"attempt": attempt, "outcome": outcome, "exit_code": 1,
                               "ran_for_s": 9.0, "stop_signal": "SIGTERM", "stop_timeout_s": 28,
                               "grace_used_s": 1.0, "resumed_from": None, "resumed_step": None,
                               "newest_at_end": None, "newest_step": None}
    base.update(fields)
    return base


class TestVerdictTable:
    """Each kind of problem the verdict names, one row per case, and the cases it must not."""

    @pytest.mark.parametrize(("records", "expected"), [
        ([_r(1, "preempted", newest_at_end="/c/step-2.pt", newest_step=2)], []),
        ([_r(1, "preempted")], ["attempt 1: preempted without writing a new checkpoint"]),
        ([_r(1, "killed-at-deadline", newest_at_end="/c/step-2.pt", newest_step=2)],
         ["attempt 1: still running at the deadline and SIGKILLed"]),
        ([_r(1, "preempted", grace_used_s=25.0, newest_at_end="/c/step-2.pt", newest_step=2)],
         ["attempt 1: the save took 25.0s of the 28s budget (89%)"]),
        ([_r(1, "preempted", newest_at_end="/c/step-5.pt", newest_step=5),
          _r(2, "completed", exit_code=0, resumed_from="/c/step-3.pt", resumed_step=3,
             newest_at_end="/c/step-9.pt", newest_step=9)],
         ["attempt 2: resumed from step-3.pt although step-5.pt was newer"]),
        # A member that followed a peer's preemption saved nothing itself: not lost work.
        ([_r(1, "followed-peer")], []),
        ([_r(1, "completed", exit_code=0, newest_at_end="/c/step-9.pt")], []),
    ], ids=["saved", "lost-work", "killed", "slow-save", "went-back", "followed", "completed"])
    def test_table(self, records: list[dict[str, object]], expected: list[str]) -> None:
        problems = verdict(records)
        assert len(problems) == len(expected), problems
        for problem, start in zip(problems, expected, strict=True):
            assert problem.startswith(start), problem


class TestRenderTable:
    def test_one_member(self) -> None:
        """Columns: attempt, ran for, stop → exit against the budget, resumed from, newest at
        exit, exit; names, not paths."""
        table = render_table([
            _r(1, "preempted", newest_at_end="/c/step-2.pt"),
            _r(2, "completed", exit_code=0, grace_used_s=None, ran_for_s=3.25,
               resumed_from="/c/step-2.pt", newest_at_end="/c/step-9.pt"),
        ])
        assert table.splitlines() == [
            "attempt  ran for  stop → exit (budget)  resumed from   newest at exit  exit",
            "-------  -------  --------------------  -------------  --------------  -----------",
            "1        9.0s     SIGTERM → 1.0s (28s)  (fresh start)  step-2.pt       1 preempted",
            "2        3.2s     -                     step-2.pt      step-9.pt       0 completed",
        ]

    def test_members_and_who_followed_whom(self) -> None:
        """Several pods in one history: a member column, and the member a follower followed."""
        table = render_table([
            _r(1, "preempted", member="0"),
            _r(1, "followed-peer", member="1", followed={"member": "0", "attempt": 1}),
        ])
        lines = table.splitlines()
        assert lines[0].startswith("member  attempt")
        assert lines[3].startswith("1       1") and lines[3].endswith("1 followed-peer (member 0)")
