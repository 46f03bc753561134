"""A stand-in trainer for drill tests: counts steps, checkpoints atomically, resumes.

Each step takes --step-seconds. Every --save-every steps, and on SIGTERM unless --no-save-on-stop,
it writes ``step-<N>.ckpt`` (hidden temp file, fsync, rename) holding N as a pickle (a format
runai-entry's default verification reads). It resumes from
``--resume-from PATH`` when given, prints ``resumed <N>`` / ``fresh``, and exits 0 once
step --finish-at is reached.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--resume-from")
parser.add_argument("--dir", default=os.environ.get("RUNAI_ENTRY_CHECKPOINT_DIR", "."))
parser.add_argument("--step-seconds", type=float, default=0.02)
parser.add_argument("--save-every", type=int, default=0)
parser.add_argument("--save-seconds", type=float, default=0.0)
parser.add_argument("--no-save-on-stop", action="store_true")
parser.add_argument("--finish-at", type=int, default=10**9)
args = parser.parse_args()

stop = False


def on_stop(signum: int, frame: object) -> None:
    global stop
    stop = True


def save(step: int) -> None:
    os.makedirs(args.dir, exist_ok=True)
    final = os.path.join(args.dir, f"step-{step}.ckpt")
    tmp = os.path.join(args.dir, f".step-{step}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(step, f)
        f.flush()
        time.sleep(args.save_seconds)
        os.fsync(f.fileno())
    os.replace(tmp, final)
    print(f"saved {step}", flush=True)


signal.signal(signal.SIGTERM, on_stop)
step = 0
if args.resume_from:
    with open(args.resume_from, "rb") as f:
        step = pickle.load(f)
    print(f"resumed {step} attempt {os.environ.get('RUNAI_ENTRY_ATTEMPT')}", flush=True)
else:
    print(f"fresh attempt {os.environ.get('RUNAI_ENTRY_ATTEMPT')}", flush=True)
while step < args.finish_at:
    if stop:
        if not args.no_save_on_stop:
            save(step)
        sys.exit(143)
    time.sleep(args.step_seconds)
    step += 1
    if args.save_every and step % args.save_every == 0:
        save(step)
save(step)
print(f"finished {step}", flush=True)
