"""A job to supervise in tests (after dumb-init's print_signals.py).

Prints ``<name> ready <pid>`` once its handlers are in place, then one line per signal received:
``<name> signal SIGUSR1``. On the stop signal it "saves a checkpoint": it writes to a hidden
temp file for --save-seconds, renames it to --save-to, prints ``<name> saved``, and exits with
--exit-code. Everything it prints is flushed at once: the tests read it line by line.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

NOT_HANDLED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGTTIN, signal.SIGTTOU,
               signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT,
               signal.SIGTRAP, signal.SIGSYS}


def say(text: str) -> None:
    os.write(1, f"{ARGS.name} {text}\n".encode())


def on_signal(signum: int, frame: object) -> None:
    say(f"signal {signal.Signals(signum).name}")
    if signum == ARGS.stop_signal and not ARGS.ignore_stop:
        save_and_exit()


def save_and_exit() -> None:
    # Block further signals: a second SIGTERM must not re-enter the save.
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    say("saving")
    if ARGS.save_to:
        tmp = os.path.join(os.path.dirname(ARGS.save_to) or ".", f".{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            end = time.monotonic() + ARGS.save_seconds
            while time.monotonic() < end:
                f.write("x" * 1024)
                time.sleep(0.01)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, ARGS.save_to)
    else:
        time.sleep(ARGS.save_seconds)
    say("saved")
    os._exit(ARGS.exit_code)


def main() -> None:
    for signum in signal.valid_signals():
        if signum in NOT_HANDLED or signum not in signal.Signals._value2member_map_:
            continue
        if signum == signal.SIGTERM and ARGS.ignore_term:
            signal.signal(signum, signal.SIG_IGN)
        else:
            signal.signal(signum, on_signal)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    say(f"mask {','.join(sorted(str(int(s)) for s in blocked)) or 'empty'}")
    say(f"ready {os.getpid()}")
    end = time.monotonic() + ARGS.run_seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    say("finished")
    sys.exit(ARGS.exit_code)


parser = argparse.ArgumentParser()
parser.add_argument("--name", default="probe")
parser.add_argument("--stop-signal", type=lambda s: signal.Signals[s], default=signal.SIGTERM)
parser.add_argument("--ignore-term", action="store_true", help="SIG_IGN for SIGTERM")
parser.add_argument("--ignore-stop", action="store_true", help="print the stop signal, no save")
parser.add_argument("--save-seconds", type=float, default=0.0)
parser.add_argument("--save-to")
parser.add_argument("--exit-code", type=int, default=0)
parser.add_argument("--run-seconds", type=float, default=60.0)
ARGS = parser.parse_args()

if __name__ == "__main__":
    main()
