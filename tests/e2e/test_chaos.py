"""The chaos soak, short: bench/chaos_soak.py drives 6 preemptions at random moments (start-up,
mid-step, mid-save) delivered to runai-entry, to every process, or to the trainer alone, and
must report every one recovered, no step lost and bit-identical final weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.jobs import PYTHON, REPO, job_env, seeded_rng, started

PREEMPTIONS = 6


@pytest.mark.slow
def test_short_chaos_soak_recovers_every_preemption(tmp_path: Path) -> None:
    seed = seeded_rng("chaos").randrange(2**32)
    out = tmp_path / "soak.json"
    argv = [PYTHON, str(REPO / "bench" / "chaos_soak.py"), "--preemptions", str(PREEMPTIONS),
            "--seed", str(seed), "--workdir", str(tmp_path / "work"), "--json", str(out)]
    with started(argv, job_env()) as soak:
        rc = soak.wait(timeout=600)
        report = soak.output()
    result = json.loads(out.read_text())
    assert result["preemptions"] == PREEMPTIONS, report
    assert result["recovered"] == PREEMPTIONS, report
    assert result["steps_lost"]["total"] == 0, report
    # Every attempt exits 1 (preempted) or 0 (done), except a SIGTERM in the first tens of
    # milliseconds of a start, before runai-entry has blocked its signals (it dies of it: -15)
    # or, delivered to the trainer alone, before the script installed its flag (143). Both
    # are recovered by the requeue; the runai-entry window is reported as a bug.
    for a in result["attempt_log"]:
        if a["exit_code"] not in (0, 1):
            p = a["preemption"]
            assert p and p["when"] == "startup" and p["at_s"] < 0.5, (a, report)
    assert result["exit_codes"]["0"] == 1, report
    assert result["checkpoints_rejected"] == {}, report
    assert result["weights_match"], report
    assert rc == 0 and result["ok"], report
