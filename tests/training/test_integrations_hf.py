"""Hugging Face Trainer under the real preemption drill: preempted, requeued, resumed, finished."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.spawning import ENTRY, TESTS, inspect_json

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytestmark = pytest.mark.slow

JOB = str(TESTS / "frameworks" / "hf_job.py")


def test_trainer_jit_checkpoint_resumes_and_skips_a_checkpoint_without_state(
        tmp_path: Path) -> None:
    """SIGTERM → the Trainer's JIT checkpoint (enable_jit_checkpoint) saves checkpoint-N at the
    next step → runai-entry exits 1 → the next attempt gets RUNAI_ENTRY_RESUME_FROM (no flag:
    --resume-flag '') and resume_from_checkpoint carries on to the end. A checkpoint-N without
    trainer_state.json (a save cut short) is never chosen, although its number is the highest."""
    ckpt = tmp_path / "ckpt"
    torn = ckpt / "checkpoint-99999"
    torn.mkdir(parents=True)
    (torn / "model.safetensors").write_bytes(b"\0" * 64)
    r = subprocess.run(
        [*ENTRY, "--log-format", "json", "--simulate-preempt", "15s", "--simulate-requeue", "1",
         "--grace-period", "20s", "--resume-flag", "", "--checkpoint-dir", str(ckpt),
         sys.executable, JOB, "300"],
        capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stderr[-3000:]
    starts = [line.split() for line in r.stdout.splitlines() if line.startswith("start ")]
    assert starts[0][1:] == ["fresh", "0"], r.stdout
    assert starts[1][1].startswith("checkpoint-") and starts[1][1] != torn.name, r.stdout
    assert int(starts[1][2]) > 0
    assert r.stdout.splitlines()[-1] == "finished 300"
    assert "checkpoint-99999" in r.stderr  # reported as skipped
    assert "verdict: OK" in r.stderr, r.stderr[-2000:]
    # The job's callback beats: every attempt's start-up is measured, not a bound.
    startups = [a["startup_s"] for a in inspect_json(ckpt)["attempts"]]
    assert len(startups) == 2 and all(isinstance(s, (int, float)) for s in startups), startups


def test_jit_checkpoint_at_every_preemption_with_data_workers(tmp_path: Path) -> None:
    """dataloader_num_workers=2: the workers are the Trainer's, not runai-entry's to stop.
    Signalled, they died and the Trainer raised at every preemption, so no JIT checkpoint was
    ever written. Each attempt now resumes from the JIT checkpoint of the stop before it (its
    step is no multiple of save_steps=100), and nothing raises."""
    ckpt = tmp_path / "ckpt"
    r = subprocess.run(
        [*ENTRY, "--log-format", "json", "--simulate-preempt", "15s", "--simulate-requeue", "2",
         "--grace-period", "20s", "--resume-flag", "", "--checkpoint-dir", str(ckpt),
         sys.executable, JOB, "600", "2"],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "DataLoader worker" not in r.stdout + r.stderr, r.stderr[-3000:]
    starts = [line.split() for line in r.stdout.splitlines() if line.startswith("start ")]
    assert len(starts) == 3 and starts[0][1] == "fresh", r.stdout
    for name, step in (s[1:] for s in starts[1:]):
        assert name == f"checkpoint-{step}" and int(step) % 100 != 0, starts
    assert int(starts[2][2]) > int(starts[1][2]) > 0, starts
    assert r.stdout.splitlines()[-1] == "finished 600"
    assert "verdict: OK" in r.stderr, r.stderr[-2000:]
