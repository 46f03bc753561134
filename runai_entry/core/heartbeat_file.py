"""The heartbeat file's layout, shared by the writer (the training library) and the reader
(runai-entry's watchdog and attempt history).

The file (:data:`LAYOUT`, native byte order, one process writes it, runai-entry only reads): pid,
step (-1 unknown), beats, time of the last beat, longest interval between two beats after the
first :data:`WARM_UP_BEATS`, start of the save in progress (0: none), the stack signal, time of
the first beat (the end of the job's start-up, for the attempt's goodput figures); times on
CLOCK_MONOTONIC, which runai-entry shares on the same host. A read may catch a write half done:
at worst it sees the previous beat's time, one step late.
"""

from __future__ import annotations

import signal
import struct

LAYOUT = struct.Struct("=qqqdddqd")
#: The layout before the first beat's time was kept (still read by runai-entry).
OLD_LAYOUT = struct.Struct("=qqqdddq")
#: Beats before the step interval is trusted: the first steps compile, warm caches and fill
#: data-loader queues, and take far longer than the rest.
WARM_UP_BEATS = 5
#: faulthandler dumps every thread's stack on it; a real-time signal, since training code and
#: frameworks take SIGUSR1 and SIGUSR2 for themselves (NCCL, submitit, Lightning on SLURM).
STACK_SIGNAL = signal.SIGRTMIN + 6
