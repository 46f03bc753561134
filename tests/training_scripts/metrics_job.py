"""A job for the metrics tests: five steps that beat, then one checkpoint, then it waits.

Attempt 1 saves step 5 and sleeps until the stop signal ends it (no handler: the save before it
is what the next attempt resumes from). Later attempts resume, beat five more steps, save, print
``waiting at step N`` and wait for the file ``$METRICS_JOB_GO`` (so the test can look at the
metrics while the job runs), then exit 0.

    python metrics_job.py [--resume-from PATH]
"""

from __future__ import annotations

import os
import re
import sys
import time

from runai_entry.training import heartbeat
from runai_entry.training.atomic import atomic_write_bytes


def save(directory: str, step: int) -> None:
    atomic_write_bytes(os.path.join(directory, f"step-{step:08d}.pt"), b"\x80\x04N.")
    print(f"saved {step}", flush=True)


def main() -> int:
    directory = os.environ["RUNAI_ENTRY_CHECKPOINT_DIR"]
    step = 0
    if "--resume-from" in sys.argv:
        step = int(re.findall(r"step-(\d+)", sys.argv[sys.argv.index("--resume-from") + 1])[0])
    for _ in range(5):
        time.sleep(0.05)
        step += 1
        heartbeat(step)
    if step == 5:
        save(directory, step)
        time.sleep(600)  # until the preemption's SIGTERM
        return 2
    save(directory, step)
    print(f"waiting at step {step}", flush=True)
    while not os.path.exists(os.environ["METRICS_JOB_GO"]):
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
