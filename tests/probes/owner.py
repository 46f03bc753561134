"""A trainer-like owner of a child, for the stop signal's delivery tests.

Installs a SIGTERM handler, starts ``probe.py --name child`` and prints ``owner ready <pid>``.
On SIGTERM it prints ``owner signal SIGTERM``, then, by ``--on-stop``:
``save``: "saves" for a second while it still needs its child (the child must not have been
signalled: it prints every signal it gets), then stops the child itself and exits 1;
``leave``: exits 1 at once, leaving its child behind (a leftover: runai-entry must stop it);
``crash``: its child is killed under it (as a DataLoader worker was) and it exits 1 unsaved,
the way a trainer's main thread raises then.
``--launcher`` starts the child as torch elastic starts a worker (with a `sleep` of its own in its
session, as a data worker is): in a session of its own, with
TORCHELASTIC_RUN_ID set; ``--detached``, in a session of its own only (a service, as W&B's is).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe.py")

parser = argparse.ArgumentParser()
parser.add_argument("--on-stop", choices=("save", "leave", "crash"), default="save")
parser.add_argument("--launcher", action="store_true")
parser.add_argument("--detached", action="store_true")
parser.add_argument("--stuck-child", action="store_true",
                    help="the child prints the stop signal and carries on (a rank stuck in a "
                    "collective after its save)")
ARGS = parser.parse_args()

stopping = False


def on_term(signum: int, frame: object) -> None:
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, on_term)
env = dict(os.environ, **({"TORCHELASTIC_RUN_ID": "test"} if ARGS.launcher else {}))
stuck = ["--ignore-stop"] if ARGS.stuck_child else []
probe = [sys.executable, PROBE, "--name", "child", "--exit-code", "0", *stuck]
if ARGS.launcher:  # a worker with a process of its own in its session, as a data worker is
    probe = ["sh", "-c", 'sleep 30 & exec "$@"', "sh", *probe]
child = subprocess.Popen(probe, env=env,
                         start_new_session=ARGS.launcher or ARGS.detached)
os.write(1, f"owner ready {os.getpid()}\n".encode())
while not stopping:
    time.sleep(0.01)
os.write(1, f"owner signal SIGTERM (child {'running' if child.poll() is None else 'gone'})\n"
         .encode())
if ARGS.on_stop == "leave":
    os._exit(1)
if ARGS.on_stop == "crash":
    child.kill()  # the probe saves on SIGTERM: SIGKILL is what ends it unsaved
    # Not reaped: torch's SIGCHLD handler looks with WNOWAIT, and the trainer raises at once.
    os.write(1, f"child {child.pid} died; owner raises\n".encode())
    time.sleep(0.3)
    os._exit(1)
time.sleep(1.0)  # the save, during which the child must still answer
os.write(1, f"owner saved (child {'running' if child.poll() is None else 'gone'})\n".encode())
child.kill()
child.wait()
sys.exit(1)
