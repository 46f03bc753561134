"""Keras 3 on the torch backend: fit stopped by a real SIGTERM, resumed at the right epoch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.harness.spawning import ENTRY
from tests.training_scripts.procs import PYTHON, child_env, script, spawn


@pytest.mark.slow
def test_fit_stops_on_sigterm_and_resumes_at_the_next_epoch(tmp_path: Path) -> None:
    env = child_env(KERAS_BACKEND="torch")
    argv = [PYTHON, script("train_keras.py"), str(tmp_path)]
    with spawn(argv, env=env) as run:
        run.expect(r"^initial_epoch 0$", timeout=90)
        run.expect(r"^epoch begin 2$")
        run.proc.send_signal(signal.SIGTERM)
        saved = run.expect(r"^stopped (epoch-(\d{5})\.weights\.h5)$")
        assert run.wait(60) == 1
    completed = int(saved.group(2))
    # Mid-epoch 2 the last completed epoch is 2; a signal after the last batch completes 3.
    assert completed in (2, 3)
    names = sorted(os.listdir(tmp_path))
    assert saved.group(1) in names and len(names) <= 2
    assert all(re.fullmatch(r"epoch-\d{5}\.weights\.h5", n) for n in names), names

    with spawn(argv, env=env) as run:
        run.expect(rf"^initial_epoch {completed}$", timeout=90)
        run.expect(r"^epoch begin (\d)$")
        assert run.lines[-1] == f"epoch begin {completed}"
        assert run.wait(60) == 0
        begun = [int(m) for m in re.findall(r"epoch begin (\d)", run.output())]
    assert begun == list(range(completed, 6)) and run.lines[-1] == "finished"
    assert sorted(os.listdir(tmp_path)) == ["epoch-00005.weights.h5", "epoch-00006.weights.h5"]


RESTORE_EXPLICIT = """
import sys
import keras
from runai_entry.training.keras import PreemptionCheckpoint

def build():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model

ckpt = PreemptionCheckpoint(sys.argv[1], keep=5)
ckpt.set_model(build())
older, newer = ckpt.save(2), ckpt.save(5)
print("explicit", ckpt.restore(build(), older), "default", ckpt.restore(build()))
"""


@pytest.mark.slow
def test_restore_takes_the_path_the_script_was_given(tmp_path: Path) -> None:
    """restore(model, path) resumes from that path; without one, from the newest."""
    env = child_env(KERAS_BACKEND="torch")
    with spawn([PYTHON, "-c", RESTORE_EXPLICIT, str(tmp_path)], env=env) as run:
        rc = run.wait(120)
        out = run.output()
    assert rc == 0, out[-3000:]
    assert "explicit 2 default 5" in out


@pytest.mark.slow
def test_heartbeat_measures_start_up_and_the_step_under_the_drill(tmp_path: Path) -> None:
    """Heartbeat() beats at every batch with the optimizer's step: each attempt of the drill
    has its start-up measured (not a bound) and its last step, which the resumed optimizer
    carries on from."""
    ckpt = tmp_path / "ckpt"
    r = subprocess.run(
        [*ENTRY, "--log-format", "json", "--simulate-preempt", "20s", "--simulate-requeue", "1",
         "--resume-flag", "", "--checkpoint-dir", str(ckpt), "--",
         PYTHON, script("train_keras.py"), str(ckpt), "100"],
        capture_output=True, text=True, timeout=240, env=child_env(KERAS_BACKEND="torch"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stopped epoch-" in r.stdout and r.stdout.splitlines()[-1] == "finished", r.stdout
    inspected = subprocess.run([*ENTRY, "--inspect", "--json", "--checkpoint-dir", str(ckpt)],
                               capture_output=True, text=True, timeout=60)
    attempts = json.loads(inspected.stdout)["attempts"]
    assert [type(a["startup_s"]) for a in attempts] == [float, float], attempts
    steps = [a["last_step"] for a in attempts]
    # A stop mid-epoch repeats that epoch from the weights reached: at least 100 epochs of 8.
    assert all(isinstance(s, int) for s in steps) and 0 < steps[0] < 800 <= steps[1], steps
