"""How an attempt ended: the one vocabulary of the exit-code policy, the history and its readers.

Here, in the standard-library core, because both sides read it: the supervisor decides it
(:mod:`runai_entry.supervisor.exitcodes`), the history keeps it (the ``outcome`` field of
:class:`~runai_entry.core.attempt_record.AttemptRecord`), and the training library's
``every_seconds="auto"`` counts the preemptions in that history.
"""

from __future__ import annotations

import enum


class Outcome(str, enum.Enum):
    """How the job ended; also the ``outcome`` field of the attempt history."""

    COMPLETED = "completed"  # the command exited 0
    FAILED = "failed"  # the command exited non-zero or was killed by a signal
    PREEMPTED = "preempted"  # stopped on a preemption, every process gone before the deadline
    KILLED_AT_DEADLINE = "killed-at-deadline"  # preempted, and SIGKILL was needed
    FOLLOWED_PEER = "followed-peer"  # another member of the job was preempted, so this one was
    HUNG = "hung"  # the hang watchdog stopped it: a job process missed its heartbeat allowance
    NOT_FOUND = "not-found"  # the command does not exist
    NOT_EXECUTABLE = "not-executable"  # it exists but cannot be executed


#: Outcomes in which the platform took the job away, this member's own preemption or a peer's.
#: The preemption rate counts them (a failure or a hang is not a preemption: a bug that crashes
#: every attempt must not make the job save more often), and the crash-loop guard passes over
#: them (a job preempted during its start-up is not looping).
PREEMPTED = frozenset({Outcome.PREEMPTED, Outcome.KILLED_AT_DEADLINE, Outcome.FOLLOWED_PEER})

#: Outcomes of a member stopped for its own preemption, not one that followed a peer's: the
#: verdict's findings on what a stop saved (and lost) are said of these only; a member that
#: followed a peer is judged with them by its start-up alone.
OWN_PREEMPTION = frozenset({Outcome.PREEMPTED, Outcome.KILLED_AT_DEADLINE})
