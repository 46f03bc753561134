"""What discovery reports: a complete checkpoint, a rejected one, and the whole answer."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from runai_entry.core.errors import (
    VANISHED,
    CheckpointDirUnavailable,
    CheckpointSearchExhausted,
    os_error_cause,
)

__all__ = ["EMPTY_FILE", "FAILED_VERIFICATION", "STORAGE_FAILING", "VANISHED", "Candidate",
           "Discovery", "SearchBudget", "Skipped", "entry_error", "unavailable"]

#: errnos that say the storage is failing, not the entry: going back to an older checkpoint
#: over them would throw work away, so discovery stops (exit 75: try again later). Any other
#: error on one entry (a symlink loop, a name too long for a path, permission) is that entry's:
#: it is skipped with the reason.
STORAGE_FAILING = frozenset(
    getattr(errno, name) for name in (
        "EIO", "ETIMEDOUT", "ENOTCONN", "EHOSTDOWN", "EHOSTUNREACH", "ECONNREFUSED",
        "ECONNRESET", "ECONNABORTED", "ENETDOWN", "ENETUNREACH", "ENETRESET", "ENOLINK",
        "EREMOTEIO", "ENOMEDIUM", "EMFILE", "ENFILE", "ENOMEM")
    if hasattr(errno, name))
#: How the reason of an entry that failed verification starts.
FAILED_VERIFICATION = "failed verification: "
#: Why an empty file is no checkpoint (the probe, and verification of an open file).
EMPTY_FILE = "empty file"


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

    @property
    def failed_verification(self) -> bool:
        """A file that looks complete but whose format check failed: torn, or not a checkpoint."""
        return self.reason.startswith(FAILED_VERIFICATION)

    @property
    def torn(self) -> bool:
        """A file under a complete checkpoint's name that is not one: empty, or failing
        verification. What a save cut by a SIGKILL leaves when it writes in place."""
        return self.failed_verification or self.reason == EMPTY_FILE


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
    #: Entries left unexamined because the search's budget (:class:`SearchBudget`) was spent on
    #: damaged or unknown entries before it was done; 0 when discovery did not give up.
    gave_up: int = 0
    #: When it gave up: what was spent ("10000 entries examined", "10 s", ...).
    search_stopped: str | None = None
    #: Rejected entries beyond the first :data:`~.discovery.MAX_SKIPPED`, not listed in
    #: ``skipped``.
    skipped_more: int = 0

    def resume_point(self) -> Candidate | None:
        """The checkpoint to resume from, or None to start fresh.

        Raises :class:`CheckpointSearchExhausted` (exit 75) when the search gave up before it
        found a checkpoint that verifies: older entries, never examined, may hold good work,
        and starting fresh would write over it.
        """
        if self.chosen is None and self.gave_up:
            raise CheckpointSearchExhausted(
                f"checkpoint directory {self.directory!r}: no checkpoint that verifies among the "
                f"entries examined before the search stopped ({self.search_stopped}), and "
                f"{self.gave_up} older ones not examined; not starting fresh over checkpoints "
                "that may be good: move the damaged or unknown entries aside (--inspect lists "
                "them) or narrow the checkpoint glob")
        return self.chosen


@dataclass(frozen=True)
class SearchBudget:
    """How much discovery may spend looking past damaged or unknown entries.

    Every entry examined (a stat for a file, a listdir for a directory) and every byte a
    verification reads is counted, and the walk stops before the next entry once any limit is
    reached (one verification reads at most a safetensors header: 100 MB). A kill mid-save
    tears one file per attempt, so an honest failure leaves a handful of torn files; thousands
    are planted or broken saves, and on a network mount each costs a round trip or more
    (bench/discovery.py, in docs/benchmarks.md).
    """

    #: Seconds of walking; under the default --storage-timeout (30 s), so the one line that
    #: says the search stopped comes before the one that says the mount hung.
    seconds: float = 10.0
    #: Bytes read by verifications (one safetensors header may be up to 100 MB).
    nbytes: int = 256 << 20
    #: Entries examined.
    entries: int = 10_000



def unavailable(path: str, exc: OSError) -> CheckpointDirUnavailable:
    """The one-line error for a directory (or entry) the storage failed to read."""
    return CheckpointDirUnavailable(
        f"cannot read checkpoint directory {path!r}: {os_error_cause(exc)}")


def entry_error(path: str, name: str, exc: OSError, doing: str) -> Skipped:
    """Why one entry was skipped after ``exc`` while ``doing`` ("examined", "verified").

    Raises :func:`unavailable` instead when the errno says the storage itself is failing
    (:data:`STORAGE_FAILING`).
    """
    if exc.errno in VANISHED:
        return Skipped(name, f"vanished while being {doing}")
    if exc.errno in STORAGE_FAILING:
        raise unavailable(path, exc) from exc
    return Skipped(name, f"unreadable: {os_error_cause(exc)}")
