"""FSDP2 (``fully_shard``) on 2 CPU ranks with gloo, saved by the Checkpointer with
``backend="dcp", async_save=True``: preempted by the real runai-entry drill, and SIGKILLed
during background writes."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from tests.e2e.jobs import ENTRY, TORCHRUN, job_env
from tests.training_scripts import crash_dcp
from tests.training_scripts.procs import script, spawn

pytestmark = pytest.mark.slow

FINISHED = re.compile(r"^finished: step (\d+) weights sha256 ([0-9a-f]{64})$")


def _torchrun(*args: str) -> list[str]:
    return [*TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "0",
            script("fsdp_steps.py"), *args]


def _env() -> dict[str, str]:
    return job_env()


@pytest.mark.timeout(480)  # an uninterrupted run, then the drill's three attempts: ~2 minutes
def test_fsdp2_async_dcp_preempted_by_the_drill_ends_bit_identical(tmp_path: Path) -> None:
    """Two preemptions by ``--simulate-preempt`` mid-training (async saves every 3 steps), each
    saved at the stop signal after the background write in flight finished; every attempt
    resumes at the very step the previous one stopped at (no step lost, none repeated), and the
    final weights, gathered from the shards, equal an uninterrupted run's bit for bit."""
    # Steps slow enough that 20 s hold at most ~150 of them even on a quiet machine: both
    # preemptions land before the end, however fast the start-up.
    steps = ["--steps", "400", "--step-delay", "0.1"]
    with spawn(_torchrun("--ckpt-dir", str(tmp_path / "reference"), *steps), env=_env()) as run:
        assert run.wait(240) == 0, run.tail()
        expected = run.matches(FINISHED)
    assert expected, run.output()[-3000:]
    drill = [*ENTRY, "--simulate-preempt", "20s", "--simulate-requeue", "2", "--resume-flag", "",
             "--grace-period", "30s", "--checkpoint-dir", str(tmp_path / "ckpt"), "--",
             *_torchrun(*steps)]
    with spawn(drill, env=_env()) as run:
        rc = run.wait(400)
        out = run.output()
    assert rc == 0, out[-4000:]
    starts = [int(s) for s in re.findall(r"^start (\d+)$", out, re.M)]
    stops = [int(s) for s in re.findall(r"^stopped at step (\d+)$", out, re.M)]
    print(f"attempts started at {starts}, stopped at {stops}")
    assert len(starts) == 3 and len(stops) == 2, out[-4000:]
    assert starts == [0, *stops], (starts, stops)  # each attempt goes on where the last stopped
    # Not a preemption during start-up only: some attempt trained, and wrote in the background.
    assert max(b - a for a, b in zip(starts[:-1], stops, strict=True)) > 3, (starts, stops)
    assert re.search(r"^published \d+$", out, re.M), out[-3000:]
    assert "verdict: OK" in out, out[-3000:]
    # Each attempt's ranks left with the Checkpointer still alive, its background writer's
    # gloo group made: destroy_process_group() freed that group all the same. (The model,
    # which the Checkpointer holds, keeps the default group: FSDP's mesh refers to it.)
    alive = re.findall(r"^rank \d groups_alive default=\d others=(\d+)$", out, re.M)
    assert len(alive) == 6 and set(alive) == {"0"}, out[-3000:]
    finished = run.matches(FINISHED)
    assert finished and finished[-1].groups() == expected[-1].groups()


def test_sigkills_during_async_dcp_writes_always_restore(tmp_path: Path) -> None:
    """A job saving every step (a background write nearly always in flight) is SIGKILLed,
    workers and torchrun, at a random moment after it saw a write published, three times:
    nothing torn under a final name, and the next start restores every time, from a step at
    least as new as the newest it saw published (bench/crash_consistency.py --backend dcp
    runs more)."""
    seed = int(os.environ.get("CRASH_SEED", "0")) or random.randrange(1 << 30)
    print(f"CRASH_SEED={seed}")
    stats = crash_dcp.kill_loop(tmp_path, 3, random.Random(seed), spawn)
    print(f"async DCP crash consistency: {stats}")
    assert stats["kills"] == stats["restored"] == 3 and stats["max_step"] > 0, stats
    hidden = [p.name for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".")]
    assert len(hidden) <= 1, hidden  # a restore removes what killed writers left


def test_a_failed_async_dcp_write_raises_on_every_rank(tmp_path: Path) -> None:
    """After step 6 is published rank 0 may write no file over 64 KiB (RLIMIT_FSIZE: a real
    EFBIG mid-write). The next background write fails: both ranks raise CheckpointWriteFailed
    with the same message, naming rank 0's error (through DCP's own exception), and step 6 is
    still the newest checkpoint, complete."""
    from runai_entry.checkpoints import discover

    ckpt = tmp_path / "ckpt"
    argv = _torchrun("--ckpt-dir", str(ckpt), "--every", "3", "--width", "256", "--steps", "30",
                     "--fail-after", "6", "--step-delay", "0.02")
    with spawn(argv, env=_env()) as run:
        rc = run.wait(240)
        out = run.output()
    raised = re.findall(r"^rank (\d) raised (\w+): (.*)$", out, re.M)
    assert sorted(r[0] for r in raised) == ["0", "1"], out[-3000:]
    assert {r[1] for r in raised} == {"CheckpointWriteFailed"}, raised
    # The EFBIG of rank 0's shard write (File too large): rank 0's error, on both.
    assert raised[0][2] == raised[1][2], raised
    message = raised[0][2]
    assert message.startswith("a background checkpoint write failed on rank 0: saving "), raised
    assert "failed on rank 0: rank 0: " in raised[0][2], raised
    assert rc != 0
    found = discover(ckpt, timeout=None, max_candidates=None)
    assert found.chosen is not None and found.chosen.step == 6, found
    assert sorted(p.name for p in ckpt.iterdir() if not p.name.startswith(".")) == \
        ["step-00000003", "step-00000006"]
