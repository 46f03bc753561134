"""Crash consistency: writers SIGKILLed at random instants never leave a torn checkpoint under
a final name, and discovery always finds a complete one once one was finished."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from runai_entry.checkpoints import newest_checkpoint
from runai_entry.training.atomic import is_temp_name
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
    with pytest.raises((AssertionError, RuntimeError, EOFError)):
        _kill_loop(tmp_path, random.Random(1), in_place=True)


def _kill_loop(tmp_path: Path, rng: random.Random, *, in_place: bool) -> dict[str, int]:
    ckpts, log = tmp_path / "ckpts", tmp_path / "saved.log"
    ckpts.mkdir()
    stats = {"kills": 0, "temps_left": 0, "max_step": 0}
    argv = [PYTHON, script("crash_writer.py")] + (["--in-place"] if in_place else [])
    with spawn(argv, stdin=subprocess.PIPE) as zygote:
        assert zygote.proc.stdin is not None
        for kill in range(KILLS):
            zygote.proc.stdin.write(f"run {ckpts} {log}\n")
            zygote.proc.stdin.flush()
            pid = int(zygote.expect(r"^pid (\d+)").group(1))
            time.sleep(rng.uniform(0.0, 0.05))
            os.kill(pid, signal.SIGKILL)
            zygote.proc.stdin.write("reap\n")
            zygote.proc.stdin.flush()
            status = int(zygote.expect(r"^reaped (\d+)").group(1))
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"kill {kill}: the writer died by itself (status {status}):\n{zygote.output()}"
            )
            stats["kills"] += 1

            names = os.listdir(ckpts)
            temps = [n for n in names if n.startswith(".")]
            assert all(is_temp_name(n) for n in temps), temps
            stats["temps_left"] += len(temps)
            finals = [ckpts / n for n in names if not n.startswith(".")]
            assert all(FINAL.match(p.name) for p in finals), names
            for path in finals:
                _check_file(path)  # a torn file fails to load or to match its name
            saved = (
                [int(x) for x in re.findall(r"saved (\d+)", log.read_text())]
                if (log.exists())
                else []
            )
            newest = newest_checkpoint(ckpts, timeout=None)
            if saved:
                assert newest is not None, f"kill {kill}: nothing to resume after {saved[-1]}"
                assert _check_file(Path(newest)) >= saved[-1]
                stats["max_step"] = max(stats["max_step"], saved[-1])
    return stats
