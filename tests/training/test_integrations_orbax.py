"""Orbax CheckpointManager (JAX on CPU) under the real preemption drill, after a save that was
SIGKILLed midway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.spawning import ENTRY, TESTS

pytest.importorskip("jax")
pytest.importorskip("orbax.checkpoint")
pytestmark = pytest.mark.slow

JOB = str(TESTS / "frameworks" / "orbax_job.py")


def test_orbax_skips_a_killed_save_then_resumes_through_the_drill(tmp_path: Path) -> None:
    """A save SIGKILLed midway leaves <step>.orbax-checkpoint-tmp…, the highest number in the
    directory: never chosen. Then the drill: preempted, saved on the stop signal, requeued,
    resumed from that step, finished."""
    ckpt = tmp_path / "ckpt"
    killed = subprocess.run([sys.executable, JOB, "100", str(ckpt), "--die-mid-save"],
                            capture_output=True, text=True, timeout=100)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [p.name for p in ckpt.iterdir() if ".orbax-checkpoint-tmp" in p.name], \
        list(ckpt.iterdir())
    r = subprocess.run(
        [*ENTRY, "--log-format", "json", "--simulate-preempt", "8s", "--simulate-requeue", "1",
         "--grace-period", "20s", "--resume-flag", "", "--checkpoint-dir", str(ckpt),
         sys.executable, JOB, "300"],
        capture_output=True, text=True, timeout=100)
    assert r.returncode == 0, r.stderr[-3000:]
    starts = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("start")]
    assert starts[0] == 20, r.stdout          # not 1000000, the torn save
    assert starts[1] > 20, r.stdout           # the save made on the stop signal
    assert r.stdout.splitlines()[-1] == "finished 300"
    assert "orbax-checkpoint-tmp" in r.stderr  # reported as skipped
    assert "verdict: OK" in r.stderr, r.stderr[-2000:]
