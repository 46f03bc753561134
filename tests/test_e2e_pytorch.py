"""examples/train_pytorch.py under runai-entry, preempted by real SIGTERMs at random steps and
requeued the way the platform does it (the same command again until it exits 0): no step is
lost, and the final weights are bit-identical to an uninterrupted run's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.jobs import (
    FINISHED,
    PYTHON,
    RESUMED,
    STOPPED,
    example,
    reference_weights,
    seeded_rng,
    started,
    stop_at_random_step,
    under_entry,
)

# 6 epochs x 44 steps; a line per step, so the test can preempt at a step of its choosing.
COMMAND = [PYTHON, example("train_pytorch.py"), "--epochs", "6", "--width", "16",
           "--save-every", "25", "--verbose"]
PREEMPTIONS = 3


@pytest.mark.slow
def test_preempted_three_times_resumes_exactly_and_ends_bit_identical(tmp_path: Path) -> None:
    rng = seeded_rng("train_pytorch")
    expected = reference_weights(COMMAND, tmp_path / "reference")
    ckpt = tmp_path / "ckpt"
    resume_at = 0  # where the next attempt must resume
    for attempt in range(1, PREEMPTIONS + 2):
        with started(under_entry(ckpt, COMMAND)) as run:
            if attempt > 1:
                resumed = run.expect(RESUMED)
                assert int(resumed.group(1)) == int(resumed.group(2)) == resume_at, run.tail()
            run.expect(r"^training: ")
            if attempt <= PREEMPTIONS:
                seen = stop_at_random_step(run, rng, resume_at, spread=40)
                saved = run.expect(STOPPED)
                rc = run.wait()
                assert rc == 1, run.tail()
                assert saved.group(1) == "SIGTERM"
                # The save on the stop signal holds every step done: nothing to redo.
                assert int(saved.group(2)) >= seen
                assert run.events("exit")[-1]["reason"] == "preempted"
                resume_at = int(saved.group(2))
            else:
                rc = run.wait()
                assert rc == 0, run.tail()
                finished = run.matches(FINISHED)
    assert finished and finished[-1].group(1) == str(6 * 44)
    assert finished[-1].group(2) == expected


@pytest.mark.slow
def test_with_data_workers_preempted_twice_resumes_exactly(tmp_path: Path) -> None:
    """--workers 2: the stop reaches the trainer, not its DataLoader workers, and the resume is
    exact (the loader's own position): the weights equal an uninterrupted run's with workers."""
    command = [*COMMAND, "--workers", "2"]
    rng = seeded_rng("train_pytorch --workers")
    expected = reference_weights(command, tmp_path / "reference")
    ckpt = tmp_path / "ckpt"
    resume_at = 0
    for attempt in (1, 2, 3):
        with started(under_entry(ckpt, command)) as run:
            if attempt > 1:
                resumed = run.expect(RESUMED)
                assert int(resumed.group(1)) == int(resumed.group(2)) == resume_at, run.tail()
            run.expect(r"^training: ")
            if attempt < 3:
                seen = stop_at_random_step(run, rng, resume_at, spread=40)
                saved = run.expect(STOPPED)
                assert run.wait() == 1, run.tail()
                assert int(saved.group(2)) >= seen
                resume_at = int(saved.group(2))
            else:
                assert run.wait() == 0, run.tail()
                finished = run.matches(FINISHED)
    assert finished and finished[-1].group(2) == expected
