"""The crash-consistency test's writer, on killing.py's fork server (torch imported once).

The writer resumes from the newest checkpoint, saves through save_training_state every 2 steps
(Periodic), prunes to 2, and appends ``saved <step>`` to <log> after each save returns.
``--in-place`` writes straight to the final name instead: the control that the test can fail.
"""

from __future__ import annotations

import os
import sys

import torch

from runai_entry.checkpoints import newest_checkpoint
from runai_entry.training.atomic import clean_stale_temps, prune
from runai_entry.training.legacy import save_training_state, training_state_dict
from runai_entry.training.schedule import Periodic
from tests.training_scripts import killing

IN_PLACE = sys.argv[1:] == ["--in-place"]
WIDTH = 128  # 64 KiB of weights: big enough for kills to land mid-write


def writer(directory: str, log: str) -> None:
    clean_stale_temps(directory, older_than=0)  # the previous writer is dead: all temps stale
    newest = newest_checkpoint(directory, timeout=None)
    step = 0
    if newest is not None:
        step = torch.load(newest, map_location="cpu", weights_only=True)["step"]
    model = torch.nn.Linear(WIDTH, WIDTH)
    periodic = Periodic(every_steps=2, start_step=step)
    log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    while True:
        step += 1
        if not periodic.due(step):
            continue
        with torch.no_grad():
            model.weight.fill_(float(step))
            model.bias.fill_(float(-step))
        path = os.path.join(directory, f"ckpt-{step:07d}.pt")
        if IN_PLACE:  # the negative control: what the Run:ai guide's ModelCheckpoint does
            torch.save(training_state_dict(model=model, step=step, extra={"check": step * 7}), path)
        else:
            save_training_state(path, model=model, step=step, extra={"check": step * 7})
        os.write(log_fd, f"saved {step}\n".encode())
        prune(directory, keep=2, pattern="ckpt-*.pt")
        periodic.mark(step)


if __name__ == "__main__":
    killing.serve(writer)
