"""What runai-entry exits with: a pure function of how the job ended, tested by a table.

Run:ai requeues a job whose pod exits non-zero after preemption; the platform guide insists on
1 ("exit with status 1 is important for the Job to return later"). A job that exits 0 or 143
(128+SIGTERM) while being preempted is marked Succeeded or Failed and never comes back.

So nothing else may exit 1: configuration errors exit 2, an unreadable checkpoint directory 75,
the crash-loop guard 86, and a bug in runai-entry itself (an exception nothing expected) 70
(:data:`~runai_entry.core.errors.EXIT_INTERNAL_ERROR`) rather than Python's 1, which the platform
would take for a preemption and requeue for ever.
"""

from __future__ import annotations

from runai_entry.core.errors import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND
from runai_entry.core.outcome import Outcome as Outcome  # re-exported: the policy's vocabulary


def decide(
    returncode: int | None,
    *,
    preempted: bool,
    escalated: bool,
    preempt_exit_code: int,
    followed_peer: bool = False,
    hung: bool = False,
    hang_exit_code: int | None = None,
) -> tuple[int, Outcome]:
    """Return runai-entry's exit code and the outcome.

    ``returncode`` follows :mod:`subprocess`: the command's exit status, or -N when signal N
    killed it; ``None`` only when the command was never reaped (runai-entry gave up waiting for
    a process stuck in the kernel after SIGKILL), which can happen only on a preemption.
    ``preempted`` wins over everything the job returned: during a preemption the job's own
    status (0 for a handler that exits cleanly, 143 for one that dies of SIGTERM) says nothing
    about whether it should come back, and it should. ``followed_peer``: another member of the
    job announced its preemption during this attempt, so this member's job is preempted too,
    whether it stopped on our stop signal or ended by itself (a trainer whose ranks agreed to
    stop exits 0; one whose peer's ranks vanished dies in a collective). ``hung``: the watchdog
    stopped it; that is the news, whatever followed, and it exits ``hang_exit_code`` (default:
    the preempt code, so the platform restarts it).
    """
    if hung:
        return (preempt_exit_code if hang_exit_code is None else hang_exit_code), Outcome.HUNG
    if escalated and preempted:
        return preempt_exit_code, Outcome.KILLED_AT_DEADLINE
    if followed_peer:
        return preempt_exit_code, Outcome.FOLLOWED_PEER
    if preempted:
        return preempt_exit_code, Outcome.PREEMPTED
    if returncode is None:
        raise ValueError("the command's status is unknown and no preemption happened")
    if returncode < 0:
        return 128 - returncode, Outcome.FAILED  # the shell's convention: 128 + signal number
    return returncode, Outcome.COMPLETED if returncode == 0 else Outcome.FAILED


def spawn_failure(not_found: bool) -> tuple[int, Outcome]:
    """The shell's codes for a command that could not start: 127 not found, 126 not executable."""
    if not_found:
        return EXIT_NOT_FOUND, Outcome.NOT_FOUND
    return EXIT_NOT_EXECUTABLE, Outcome.NOT_EXECUTABLE
