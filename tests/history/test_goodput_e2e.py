"""Goodput end to end, under the drill, against ground truth the job measures itself.

The job (tests/training_scripts/goodput_job.py) sleeps a known start-up before its first step,
saves every 10 steps of 0.1 s, and prints the wall time of its first beat and of each save. The
figures come from `runai-entry --inspect --json`, the way a dashboard reads them.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from pathlib import Path

import pytest

from runai_entry.history.store import read_history
from tests.harness.spawning import TESTS

JOB = [sys.executable, str(TESTS / "training_scripts" / "goodput_job.py")]
TOLERANCE = 0.5


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def drill(entry, ck: Path, *job: str) -> tuple[list[str], dict]:
    e = entry(["--checkpoint-dir", str(ck), "--simulate-preempt", "4.5s", "--simulate-requeue",
               "1", "--grace-period", "10s", "--", *job])
    assert e.wait(timeout=120) == 0, e.stderr
    shown = entry(["--inspect", "--json", "--checkpoint-dir", str(ck)])
    assert shown.wait(timeout=60) == 0, shown.stderr
    return [*e.lines, *e.stderr], json.loads("\n".join(shown.lines))


def truth(lines: list[str], pattern: str) -> list[float]:
    return [float(m.group(1)) for line in lines if (m := re.search(pattern, line))]


def test_startup_and_lost_work_match_what_the_job_measured(entry, tmp_path: Path) -> None:
    """No save at the stop: the work since the last periodic save is lost, to within 0.5 s."""
    lines, shown = drill(entry, tmp_path, *JOB)
    first, second = read_history(tmp_path)
    figures = shown["attempts"]
    first_beats = truth(lines, r"first beat at ([\d.]+)")
    assert abs(figures[0]["startup_s"] - (first_beats[0] - epoch(first.started_at))) \
        < TOLERANCE, figures[0]
    assert abs(figures[1]["startup_s"] - (first_beats[1] - epoch(second.started_at))) \
        < TOLERANCE, figures[1]
    # What the first attempt lost: from the save the second resumed from to the stop signal.
    saves_before_stop = [t for t in truth(lines, r"saved \d+ at ([\d.]+)")
                         if t < epoch(first.stop_at)]
    lost = epoch(first.stop_at) - max(saves_before_stop)
    assert lost > 0  # the stop lands between two saves: there is something to lose
    assert abs(figures[0]["lost_s"] - lost) < TOLERANCE, (figures[0], lost)
    assert figures[1]["lost_s"] == 0  # it completed
    assert figures[0]["stop_s"] == pytest.approx(first.grace_used_s, abs=0.01)
    assert figures[1]["requeue_wait_s"] == pytest.approx(
        epoch(second.started_at) - epoch(first.ended_at), abs=0.01)
    assert 0 < shown["goodput"]["fraction"] < 1


def test_a_save_at_the_stop_loses_nothing(entry, tmp_path: Path) -> None:
    lines, shown = drill(entry, tmp_path, *JOB, "--save-at-stop")
    assert shown["attempts"][0]["lost_s"] == 0, shown["attempts"][0]
    assert shown["attempts"][0]["outcome"] == "preempted"
    assert shown["problems"] == [], shown["problems"]
    assert any(line.startswith("verdict: OK") for line in lines), lines


def test_a_job_without_a_handler_is_told_it_does_not_save_at_the_stop(entry,
                                                                      tmp_path: Path) -> None:
    """Periodic saves only, and death at SIGTERM: the drill's verdict and --inspect say that
    nothing was saved at the stop signal, with what was lost, never "OK"."""
    lines, shown = drill(entry, tmp_path, *JOB)
    said = [p for p in shown["problems"] if "nothing was saved at the stop signal" in p]
    assert len(said) == 1 and said[0].startswith("attempt 1: "), shown["problems"]
    assert not any(line.startswith("verdict: OK") for line in lines), lines
    assert any("nothing was saved at the stop signal" in line for line in lines), lines


def test_a_shell_job_that_never_beats_still_gets_its_stop_and_lost_work(entry,
                                                                         tmp_path: Path) -> None:
    """No library: start-up is unknown, the stop and the lost work come from the files."""
    job = ["sh", "-c", f"n=$(ls {tmp_path} | grep -c step); "
           "while :; do sleep 1; n=$((n+1)); "
           f"printf '\\200\\004N.' > {tmp_path}/.tmp; mv {tmp_path}/.tmp "
           f"{tmp_path}/step-$n.pt; echo saved $n at $(date +%s.%N); "
           "[ $n -ge 7 ] && exit 0; done"]
    lines, shown = drill(entry, tmp_path, *job)
    first = read_history(tmp_path)[0]
    attempt = shown["attempts"][0]
    assert attempt["startup_s"] is None
    saves_before_stop = [t for t in truth(lines, r"saved \d+ at ([\d.]+)")
                         if t < epoch(first.stop_at)]
    lost = epoch(first.stop_at) - max(saves_before_stop)
    assert abs(attempt["lost_s"] - lost) < TOLERANCE, (attempt, lost)
    assert attempt["stop_s"] is not None and attempt["stop_s"] < 1
