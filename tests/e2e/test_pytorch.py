"""examples/train_pytorch.py under runai-entry, preempted by real SIGTERMs at random steps and
requeued the way the platform does it (the same command again until it exits 0): no step is
lost, and the final weights are bit-identical to an uninterrupted run's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.jobs import PYTHON, example, preempted_then_finished, reference_weights, seeded_rng

# 6 epochs x 44 steps; a line per step, so the test can preempt at a step of its choosing.
COMMAND = [PYTHON, example("train_pytorch.py"), "--epochs", "6", "--width", "16",
           "--save-every", "25", "--verbose"]
PREEMPTIONS = 3


@pytest.mark.slow
def test_preempted_three_times_resumes_exactly_and_ends_bit_identical(tmp_path: Path) -> None:
    expected = reference_weights(COMMAND, tmp_path / "reference")
    finished = preempted_then_finished(tmp_path / "ckpt", COMMAND, seeded_rng("train_pytorch"),
                                       PREEMPTIONS)
    assert finished.group(1) == str(6 * 44)
    assert finished.group(2) == expected


@pytest.mark.slow
def test_with_data_workers_preempted_twice_resumes_exactly(tmp_path: Path) -> None:
    """--workers 2: the stop reaches the trainer, not its DataLoader workers, and the resume is
    exact (the loader's own position): the weights equal an uninterrupted run's with workers."""
    command = [*COMMAND, "--workers", "2"]
    expected = reference_weights(command, tmp_path / "reference")
    finished = preempted_then_finished(tmp_path / "ckpt", command,
                                       seeded_rng("train_pytorch --workers"), 2)
    assert finished.group(2) == expected
