"""Lightning under the real preemption drill: preempted, requeued, resumed, finished."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.spawning import ENTRY, TESTS, inspect_json

pytest.importorskip("lightning")
pytestmark = pytest.mark.slow

JOB = str(TESTS / "frameworks" / "lightning_job.py")


@pytest.mark.parametrize("save_last", ["true", "link"])
def test_lightning_resumes_from_on_exception_checkpoint(tmp_path: Path, save_last: str) -> None:
    """SIGTERM → Lightning raises SIGTERMException after the step → OnExceptionCheckpoint
    writes on_exception.ckpt → runai-entry exits 1 → the next attempt gets it as --resume-from
    (it is newer than last.ckpt, a file or a symlink) and fit(ckpt_path=) carries on to the end.
    The verdict must not call the rewritten on_exception.ckpt lost work."""
    ckpt = tmp_path / "ckpt"
    r = subprocess.run(
        [*ENTRY, "--log-format", "json", "--simulate-preempt", "12s", "--simulate-requeue", "1",
         "--grace-period", "20s", "--checkpoint-dir", str(ckpt),
         sys.executable, JOB, "--save-last", save_last],
        capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stderr[-3000:]
    starts = [line.split() for line in r.stdout.splitlines() if line.startswith("start ")]
    assert starts[0][1:] == ["fresh", "0"]
    assert starts[1][1] == "on_exception.ckpt" and int(starts[1][2]) > 0, r.stdout
    assert r.stdout.splitlines()[-1] == "finished 400"
    assert "verdict: OK" in r.stderr, r.stderr[-2000:]
    # The job's callback beats: every attempt's start-up is measured, not a bound.
    startups = [a["startup_s"] for a in inspect_json(ckpt)["attempts"]]
    assert len(startups) == 2 and all(isinstance(s, (int, float)) for s in startups), startups
    if save_last == "link":
        assert (ckpt / "last.ckpt").is_symlink()


def test_lightning_with_data_workers_saves_without_a_runtime_error(tmp_path: Path) -> None:
    """num_workers=2: the workers are Lightning's to stop. Signalled by runai-entry they died,
    the loader raised RuntimeError, and only OnExceptionCheckpoint's catch-all saved the run.
    Now Lightning's own SIGTERM path saves on_exception.ckpt and nothing raises."""
    ckpt = tmp_path / "ckpt"
    r = subprocess.run(
        [*ENTRY, "--log-format", "json", "--simulate-preempt", "12s", "--simulate-requeue", "1",
         "--grace-period", "20s", "--checkpoint-dir", str(ckpt),
         sys.executable, JOB, "--workers", "2"],
        capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "RuntimeError" not in r.stdout + r.stderr, r.stderr[-3000:]
    starts = [line.split() for line in r.stdout.splitlines() if line.startswith("start ")]
    assert starts[1][1] == "on_exception.ckpt" and int(starts[1][2]) > 0, r.stdout
    assert r.stdout.splitlines()[-1] == "finished 400"
    assert "verdict: OK" in r.stderr, r.stderr[-2000:]
