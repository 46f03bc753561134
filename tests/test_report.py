"""The drill's table and verdict: pure functions of the history's records, and the real drill."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runai_entry.report import verdict

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
