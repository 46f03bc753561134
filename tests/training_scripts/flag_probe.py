"""Installs a stop handler, prints ``ready <pid>``, spins without system calls until the flag
is set, then writes ``MARK``. Under strace, any I/O between the signal and MARK came from the
handler. ``--handler print`` installs a handler that prints: the control that the check works."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

from runai_entry.training import preemption

if sys.argv[1:] == ["--handler", "print"]:
    got: list[int] = []

    def printing(signum: int, frame: FrameType | None) -> None:
        print("got", signum, flush=True)
        got.append(signum)

    signal.signal(signal.SIGTERM, printing)
    os.write(1, f"ready {os.getpid()}\n".encode())
    while not got:
        pass
else:
    flag = preemption()
    os.write(1, f"ready {os.getpid()}\n".encode())
    while not flag.should_stop():
        pass
os.write(1, b"MARK\n")
