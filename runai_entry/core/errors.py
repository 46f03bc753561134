"""Errors runai-entry reports to the user. Imports nothing of ours, so any module (the
training library too) may raise them.

Each carries the one line the user reads and the exit code runai-entry ends with; the CLI prints
the line and exits, never a traceback.
"""

from __future__ import annotations

import errno
import os

#: Bad usage or configuration (the shell's convention, and click's).
EXIT_USAGE = 2
#: The checkpoint directory exists but cannot be read: the job must not start from scratch.
EXIT_CHECKPOINT_DIR_UNAVAILABLE = 75  # EX_TEMPFAIL: the platform should retry later
#: The crash-loop guard refused to start another attempt that would make no progress either:
#: not the requeue code, so a podFailurePolicy can fail the job on it (``FailJob``). Nothing
#: else uses it: not Python (1), usage (2), sysexits (64-78), the shell (126, 127, 128+N).
EXIT_CRASH_LOOP = 86
#: A bug in runai-entry: an exception nothing expected reached ``main`` (sysexits' EX_SOFTWARE).
#: Never the requeue code: a job whose supervisor crashes the same way at every start must not
#: be requeued for ever, and a podFailurePolicy can fail the job on it.
EXIT_INTERNAL_ERROR = 70
#: The command was found but cannot be executed.
EXIT_NOT_EXECUTABLE = 126
#: The command was not found.
EXIT_NOT_FOUND = 127


#: errnos that mean a file vanished between a listing and its use: a trainer rotating old
#: checkpoints away while we look (ESTALE is NFS's way of saying the same).
VANISHED = (errno.ENOENT, errno.ESTALE)


def os_error_cause(exc: OSError) -> str:
    """``ENOENT No such file or directory``: the errno's name and text, for one-line errors."""
    if exc.errno is not None and exc.errno in errno.errorcode:
        # strerror: the kernel's text, or ours (an OSError raised with a message of its own).
        return f"{errno.errorcode[exc.errno]} {exc.strerror or os.strerror(exc.errno)}"
    return str(exc)


def describe_bug(exc: BaseException) -> str:
    """``KeyError: 'x' at goodput.py:120``: what was raised, and where (the innermost frame)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    message = str(exc).splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{': ' if message else ''}{message}{where}"


class RunaiEntryError(Exception):
    """A failure with a one-line message and an exit code."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(RunaiEntryError):
    """A flag, environment variable or configuration file key holds a bad value."""

    exit_code = EXIT_USAGE


class CheckpointDirUnavailable(RunaiEntryError):
    """The checkpoint directory exists but cannot be read (permissions, I/O error, hung mount)."""

    exit_code = EXIT_CHECKPOINT_DIR_UNAVAILABLE


class CheckpointSearchExhausted(CheckpointDirUnavailable):
    """Discovery spent its budget on damaged or unknown entries before it found a checkpoint
    that verifies: older ones may be good, so the job must not start fresh over them."""


class FreshStartRefused(CheckpointDirUnavailable):
    """The job would start from scratch over a checkpoint that failed verification, of which
    no verified copy was kept, and ``--refuse-fresh-start`` says not to."""


class SpawnError(RunaiEntryError):
    """The command could not be started (not found, not executable)."""

    def __init__(self, message: str, exit_code: int, outcome: str) -> None:
        super().__init__(message, exit_code)
        #: The history's name for it: "not-found" or "not-executable".
        self.outcome = outcome


class StoppedBeforeStart(RunaiEntryError):
    """SIGTERM arrived before the job started: the attempt is a preemption, and the job is not
    started (the caller logs it and exits with the preempt code)."""


class CrashLoop(RunaiEntryError):
    """The last attempts all ended without a newer checkpoint: starting another would burn GPUs
    for nothing (``--max-attempts-without-progress``)."""

    exit_code = EXIT_CRASH_LOOP
