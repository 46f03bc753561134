"""What discovery reports: a complete checkpoint, a rejected one, and the whole answer."""

from __future__ import annotations

from dataclasses import dataclass

from runai_entry.errors import VANISHED, CheckpointDirUnavailable, os_error_cause

__all__ = ["VANISHED", "Candidate", "Discovery", "Skipped", "unavailable"]



@dataclass(frozen=True)
class Candidate:
    """A complete checkpoint."""

    #: The directory joined with the entry name (for TensorFlow, the prefix without ``.index``).
    path: str
    #: The entry's name inside the directory.
    name: str
    #: One of :data:`~runai_entry.checkpoints.layouts.LAYOUTS`.
    layout: str
    #: The step (or epoch, when the name has no step) parsed from the name.
    step: int | None
    #: Seconds since the epoch; only stat'ed when the ordering needed it.
    mtime: float | None
    #: The epoch parsed from the name, when it has one.
    epoch: int | None = None


@dataclass(frozen=True)
class Skipped:
    """An entry that looks like a checkpoint but was rejected."""

    name: str
    #: A short sentence: "in progress: *.distcp without .metadata", "empty file", ...
    reason: str


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover` found."""

    directory: str
    #: False when the directory does not exist: the job starts fresh.
    exists: bool
    #: The newest complete checkpoint (verified, when verification was asked for).
    chosen: Candidate | None
    #: Complete checkpoints, best first, at most ``max_candidates`` of them.
    candidates: tuple[Candidate, ...]
    #: Entries examined and rejected, in the order they were examined.
    skipped: tuple[Skipped, ...]
    #: "numbers" or "mtime": how the candidates were ordered.
    ordered_by: str = "numbers"
    #: Entries never examined: ``max_candidates`` complete ones were found first, or
    #: discovery gave up (below).
    unexamined: int = 0
    #: Entries left unexamined because :data:`~runai_entry.checkpoints.MAX_FAILED_VERIFICATIONS`
    #: candidates in a row failed verification (they are in ``skipped``); 0 when discovery did
    #: not give up. Worth a warning: the checkpoints are being written broken.
    gave_up: int = 0



def unavailable(path: str, exc: OSError) -> CheckpointDirUnavailable:
    """The one-line error for a directory (or entry) the storage failed to read."""
    return CheckpointDirUnavailable(
        f"cannot read checkpoint directory {path!r}: {os_error_cause(exc)}")
