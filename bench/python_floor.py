"""The least a Python supervisor can do: the floor under runai-entry's signal latency.

Not a product, a reference for bench/signal_latency.py: block SIGTERM and SIGCHLD, start the
job in a process group of its own, sleep in sigwaitinfo, and on SIGTERM call killpg — nothing
else before the signal goes out. Its latency is what CPython's wake-up and one system call cost
on this machine; runai-entry's is compared with it as well as with tini's (C).

    python bench/python_floor.py COMMAND [ARG...]
"""

import os
import signal
import sys

WAITED = {signal.SIGTERM, signal.SIGCHLD}

signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
job = os.fork()
if job == 0:
    os.setpgid(0, 0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WAITED)
    os.execvp(sys.argv[1], sys.argv[1:])
try:
    os.setpgid(job, job)  # either side may win the race; both set the same group
except OSError:
    pass
while True:
    if signal.sigwaitinfo(WAITED).si_signo == signal.SIGTERM:
        os.killpg(job, signal.SIGTERM)
    elif os.waitpid(-1, 0)[0] == job:
        sys.exit(0)
