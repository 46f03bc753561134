"""Crash consistency: writers SIGKILLed at random instants never leave a torn checkpoint under
a final name, and discovery always finds a complete one once one was finished."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest
import torch

from tests.training_scripts import killing
from tests.training_scripts.procs import PYTHON, script, spawn

KILLS = 200
FINAL = re.compile(r"^ckpt-(\d{7})\.pt$")


def _check_file(path: Path) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    step = int(FINAL.match(path.name).group(1))  # type: ignore[union-attr]
    assert state["step"] == step and state["extra"]["check"] == 7 * step
    assert torch.equal(state["model"]["weight"], torch.full((128, 128), float(step)))
    assert torch.equal(state["model"]["bias"], torch.full((128,), float(-step)))
    return step


@pytest.mark.slow
def test_sigkill_at_random_points_never_tears_a_checkpoint(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED", "20240611"))
    print(f"crash-consistency seed {seed} (rerun with CRASH_SEED={seed})")
    stats = _kill_loop(tmp_path, random.Random(seed), in_place=False)
    print(f"crash-consistency: {stats}")
    assert stats["max_step"] > 0, "no writer ever finished a save: the test proved nothing"
    assert stats["temps_left"] > 0, "no kill landed mid-save: the test proved nothing"


@pytest.mark.slow
def test_control_in_place_writes_are_caught(tmp_path: Path) -> None:
    """The same loop with torch.save straight to the final name must be caught tearing files."""
    # A torn zip fails torch.load as RuntimeError, EOFError or OSError (EINVAL), by where it
    # was cut.
    with pytest.raises((AssertionError, RuntimeError, EOFError, OSError)):
        _kill_loop(tmp_path, random.Random(1), in_place=True)


def _kill_loop(tmp_path: Path, rng: random.Random, *, in_place: bool) -> dict[str, int]:
    argv = [PYTHON, script("crash_writer.py")] + (["--in-place"] if in_place else [])
    return killing.kill_loop(argv, tmp_path, KILLS, killing.uniform(rng, 0.0, 0.05), FINAL,
                             _check_file, "saved", spawn)
