"""examples/train_keras.py under runai-entry: fit stopped by a real SIGTERM mid-run, requeued,
resumed at the epoch the checkpoint holds, and finished at the last epoch."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.jobs import PYTHON, example, seeded_rng, started, under_entry

# Enough epochs that a stop in the second lands before the end: on a quiet machine an epoch
# takes ~0.4 s, and four were once over before the stop signal came.
EPOCHS = 8
COMMAND = [PYTHON, example("train_keras.py"), "--epochs", str(EPOCHS)]
EPOCH_LINE = re.compile(r"^epoch +(\d+)/(\d+) ")


@pytest.mark.slow
def test_fit_preempted_resumes_at_the_saved_epoch_and_ends_at_the_last(tmp_path: Path) -> None:
    rng = seeded_rng("train_keras")
    ckpt = tmp_path / "ckpt"
    with started(under_entry(ckpt, COMMAND)) as run:
        run.expect(rf"^training: \d+ digits, {EPOCHS} epochs, from epoch 0$")
        run.expect(EPOCH_LINE)  # the first epoch is done; stop somewhere in the second
        time.sleep(rng.uniform(0.0, 1.0))
        run.signal()
        saved = run.expect(r"^stop signal: saved (epoch-(\d{5})\.weights\.h5); exiting 1")
        assert run.wait() == 1, run.tail()
        completed = [int(m.group(1)) for m in run.matches(EPOCH_LINE)]
        assert run.events("exit")[-1]["reason"] == "preempted"
    epoch = int(saved.group(2))
    # The checkpoint is named after the epochs fully done: a stop mid-epoch saves the weights
    # reached so far under the previous number, and that epoch is trained again.
    assert epoch == completed[-1] and 1 <= epoch < EPOCHS, run.tail()
    assert saved.group(1) in {p.name for p in ckpt.iterdir()}

    with started(under_entry(ckpt, COMMAND)) as run:
        resumed = run.expect(r"^resumed from (epoch-\d{5}\.weights\.h5) at epoch (\d+)$")
        assert resumed.group(1) == saved.group(1) and int(resumed.group(2)) == epoch
        assert run.events("resuming")[-1]["checkpoint"].endswith(saved.group(1))
        assert run.wait() == 0, run.tail()
        done = [int(m.group(1)) for m in run.matches(EPOCH_LINE)]
        assert done == list(range(epoch + 1, EPOCHS + 1)), run.tail()
        assert run.matches(re.compile(rf"^finished: {EPOCHS} epochs, test accuracy"))
    assert f"epoch-{EPOCHS:05d}.weights.h5" in {p.name for p in ckpt.iterdir()}
