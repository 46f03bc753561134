"""Crash consistency of the Checkpointer's async saves, for tests/training/test_checkpointer.py
(a few kills) and bench/crash_consistency.py (200), on killing.py's server and loop.

The writer trains a fake model whose every value encodes the step, saves through
``Checkpointer(async_save=True, every_steps=2, keep=2)`` and logs ``published <step>`` each time
a background write was seen published.
"""

from __future__ import annotations

import os
import random
import re
import sys
from pathlib import Path

from tests.training_scripts import killing

FINAL = re.compile(r"^step-(\d{8})\.safetensors$")
WIDTH = 512  # 1 MiB of weights: writes long enough for kills to land in them


def writer(directory: str, log: str) -> None:
    import torch

    from runai_entry.training.checkpointer import Checkpointer
    from runai_entry.training.stop import StopFlag

    model = torch.nn.Linear(WIDTH, WIDTH)
    # No signal handler: the test's SIGKILL is the only way out.
    ckpt = Checkpointer(directory, keep=2, every_steps=2, async_save=True,
                        flag=StopFlag(signals=[], timeout=None))
    step = ckpt.restore(model=model)
    log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    seen = ckpt.published
    while True:
        step += 1
        with torch.no_grad():
            model.weight.fill_(float(step))
            model.bias.fill_(float(-step))
        ckpt.step(step)
        if ckpt.published != seen:
            seen = ckpt.published
            os.write(log_fd, f"published {seen}\n".encode())


def check_file(path: Path) -> int:
    """Load a published checkpoint; its content must be the step its name says."""
    import torch

    from runai_entry.training._io import tensorfile

    state = tensorfile.load(str(path))
    match = FINAL.match(path.name)
    assert match is not None, path
    step = int(match.group(1))
    assert state["step"] == step, (path, state["step"])
    assert torch.equal(state["model"]["weight"], torch.full((WIDTH, WIDTH), float(step))), path
    assert torch.equal(state["model"]["bias"], torch.full((WIDTH,), float(-step))), path
    return step


def kill_loop(tmp: Path, kills: int, rng: random.Random, spawn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """SIGKILL async writers at random instants (killing.kill_loop). The first writer gets long
    enough to publish something even on a loaded machine, or the loop would check nothing."""
    return killing.kill_loop([sys.executable, __file__], tmp, kills,
                             killing.uniform(rng, 0.05, 0.6, first=2.0), FINAL, check_file,
                             "published", spawn)


if __name__ == "__main__":
    import torch  # noqa: F401  (once, before the forks)

    killing.serve(writer)
