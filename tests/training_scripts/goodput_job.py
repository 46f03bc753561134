"""A job whose costs are known: it sleeps STARTUP seconds before its first step, steps every
STEP seconds, saves every EVERY steps, and (with --save-at-stop) saves once more on the stop
signal. It prints the wall time of its first beat and of each save, the ground truth the
goodput figures are checked against. With --save-estimate S it leaves, at its first save, the
figures the Checkpointer would for a save of S seconds (the interval advice's save cost).

    python goodput_job.py [--save-at-stop] [--save-estimate SECONDS] [--resume-from PATH]
"""

from __future__ import annotations

import os
import re
import sys
import time

from runai_entry.training import heartbeat, preemption
from runai_entry.training.atomic import atomic_write_bytes

STARTUP, STEP, EVERY, TOTAL = 1.5, 0.1, 10, 60


def save(directory: str, step: int) -> None:
    path = os.path.join(directory, f"step-{step:08d}.pt")
    atomic_write_bytes(path, b"\x80\x04N.")  # a pickle of None: verification passes it
    print(f"saved {step} at {time.time():.3f}", flush=True)
    if "--save-estimate" in sys.argv:
        from runai_entry.training._io.budget import SaveBudget

        budget = SaveBudget(float(os.environ["RUNAI_ENTRY_STOP_TIMEOUT"]))
        budget.record(1_000_000, float(sys.argv[sys.argv.index("--save-estimate") + 1]))
        budget.publish(directory)


def main() -> int:
    save_at_stop = "--save-at-stop" in sys.argv
    flag = preemption() if save_at_stop else None  # without it, SIGTERM ends us unsaved
    directory = os.environ["RUNAI_ENTRY_CHECKPOINT_DIR"]
    step = 0
    if "--resume-from" in sys.argv:
        resumed = sys.argv[sys.argv.index("--resume-from") + 1]
        step = int(re.search(r"step-(\d+)", resumed).group(1))
    time.sleep(STARTUP)
    first = True
    while step < TOTAL:
        time.sleep(STEP)
        step += 1
        heartbeat(step)
        if first:
            print(f"first beat at {time.time():.3f}", flush=True)
            first = False
        if step % EVERY == 0:
            save(directory, step)
        if flag is not None and flag.should_stop():
            save(directory, step)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
