"""Finding the newest complete checkpoint: one listing, lazy probes, best first, bounded."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from runai_entry.checkpoints.found import (
    FAILED_VERIFICATION,
    Candidate,
    Discovery,
    SearchBudget,
    Skipped,
    entry_error,
    unavailable,
)
from runai_entry.checkpoints.layouts import probe_entry, tensorflow_shards
from runai_entry.checkpoints.listing import Entry, by_time, classify
from runai_entry.checkpoints.verify import verify
from runai_entry.core.errors import CheckpointDirUnavailable

#: What discovery may spend looking past damaged or unknown entries (the defaults).
SEARCH_BUDGET = SearchBudget()
#: How many rejected entries a Discovery lists (the first examined: the newest); the rest are
#: counted. Each becomes a log line and a field of the attempt's history line, and a planted
#: directory can hold thousands.
MAX_SKIPPED = 100

if TYPE_CHECKING:
    PathArg = str | os.PathLike[str]
    #: Lists a directory; a parameter so that tests can stand in for a hung mount.
    Lister = Callable[[str], Iterable[os.DirEntry[str]]]


def discover(
    directory: PathArg,
    *,
    pattern: str | None = None,
    verify: bool = False,
    timeout: float | None = 30.0,
    max_candidates: int | None = 10,
    lister: Lister | None = None,
    verify_all: bool = False,
    budget: SearchBudget = SEARCH_BUDGET,
) -> Discovery:
    """Find the newest complete checkpoint in ``directory``.

    ``pattern`` (an fnmatch glob) restricts the entry names considered. ``verify`` checks the
    chosen file's format deeply (see :func:`verify_file`) and falls back to the next candidate
    until one passes; ``verify_all`` checks every file candidate returned, not only the newest
    (retention: a torn file must never count as a checkpoint kept). The walk past damaged and
    unknown entries stops once ``budget`` is spent: the rest are left, counted in
    :attr:`Discovery.gave_up` (and :meth:`Discovery.resume_point` refuses to start fresh over
    them). One entry that cannot be examined (a symlink loop, a name too long for a path, a
    FIFO) is skipped with the reason. The listing and every probe run in a daemon
    thread: when ``timeout`` seconds pass first, :class:`CheckpointDirUnavailable` is raised (a
    hung NFS mount leaves a thread stuck in the kernel, which nothing can kill; it dies with the
    process). ``timeout`` None runs in the calling thread. ``max_candidates`` bounds how many
    complete candidates are confirmed (None: all). ``lister`` replaces ``os.scandir`` (tests use
    it to hang).

    Raises :class:`CheckpointDirUnavailable` when the directory exists but cannot be read: the
    job must not start from scratch over checkpoints it merely failed to see.
    """
    path = os.fspath(directory)
    if max_candidates is not None and max_candidates < 1:
        raise ValueError("max_candidates must be at least 1")

    def work() -> Discovery:
        return _discover(path, pattern, verify or verify_all, verify_all, max_candidates,
                         lister or _scandir, budget)

    if timeout is None:
        return work()
    return _run_with_timeout(work, timeout, path)


def newest_checkpoint(
    directory: PathArg,
    *,
    pattern: str | None = None,
    verify: bool = False,
    timeout: float | None = 30.0,
) -> str | None:
    """Return the path of the newest complete checkpoint in ``directory``, or None.

    Raises :class:`CheckpointSearchExhausted` rather than answer None when the search gave up
    before finding one (:meth:`Discovery.resume_point`).
    """
    found = discover(directory, pattern=pattern, verify=verify, timeout=timeout, max_candidates=1)
    chosen = found.resume_point()
    return chosen.path if chosen else None


def _scandir(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return list(it)


def _run_with_timeout(work: Callable[[], Discovery], timeout: float, path: str) -> Discovery:
    from runai_entry.core.timeout import call_with_timeout

    try:
        return call_with_timeout(work, timeout, name="runai-entry-discover")
    except TimeoutError:
        raise CheckpointDirUnavailable(
            f"checkpoint directory {path!r} did not answer within {timeout:g} s"
            " (hung network mount?)"
        ) from None


class _Spending:
    """What the walk has spent of its :class:`SearchBudget`."""

    def __init__(self, budget: SearchBudget) -> None:
        self.budget = budget
        self.started = time.monotonic()
        self.entries = 0
        self.nbytes = 0

    def charge(self) -> None:
        """One entry examined: a stat, a listdir."""
        self.entries += 1

    def read(self, nbytes: int) -> None:
        """A verification of an entry already charged."""
        self.nbytes += nbytes

    def spent(self) -> str | None:
        """What ran out, for the one line; None while the walk may go on."""
        budget = self.budget
        if self.entries >= budget.entries:
            return f"{self.entries} entries examined"
        if self.nbytes >= budget.nbytes:
            return f"{self.nbytes} bytes read"
        elapsed = time.monotonic() - self.started
        if elapsed >= budget.seconds:
            return f"{elapsed:.1f} s"
        return None


def _listing(directory: str, lister: Lister) -> list[os.DirEntry[str]] | None:
    """The directory's entries; None when it does not exist (a fresh start)."""
    for _ in range(2):
        try:
            return list(lister(directory))
        except FileNotFoundError:
            if os.path.islink(directory) and not os.path.exists(directory):
                # A symlink to storage that is not mounted: starting fresh would write beside
                # (or over) checkpoints the job cannot see.
                raise CheckpointDirUnavailable(
                    f"checkpoint directory {directory!r} is a symlink to a missing target"
                ) from None
            if not os.path.lexists(directory):
                return None
            # Made between the two looks, by another member of the job starting at the same
            # moment: list it again.
    return None


def _discover(
    directory: str,
    pattern: str | None,
    verify: bool,
    verify_all: bool,
    max_candidates: int | None,
    lister: Lister,
    budget: SearchBudget,
) -> Discovery:
    try:
        listing = _listing(directory, lister)
    except NotADirectoryError:
        raise CheckpointDirUnavailable(
            f"checkpoint directory {directory!r} is not a directory"
        ) from None
    except OSError as exc:
        raise unavailable(directory, exc) from exc

    if listing is None:
        return Discovery(directory, False, None, (), ())
    skipped: list[Skipped] = []
    numbered, unnumbered = classify(listing, pattern, skipped)
    shards: dict[str, set[tuple[int, int]]] | None = None
    #: The layout of each entry probed (None: rejected or unknown), by name.
    probed: dict[str, str | None] = {}
    spending = _Spending(budget)

    def probe(entry: Entry) -> str | None:
        nonlocal shards
        if entry.name not in probed:
            if entry.kind == "tensorflow" and shards is None:
                shards = tensorflow_shards(listing)
            spending.charge()
            probed[entry.name] = _probe_logged(entry, shards or {}, skipped)
        return probed[entry.name]

    # Numbers decide only if no complete checkpoint lacks one (the rules: .listing), so the
    # unnumbered entries are probed first, stopping at the first complete one; in practice
    # they are a handful (last.ckpt, a Keras backup directory, logs/).
    stopped = None
    unnumbered_complete = False
    for entry in unnumbered:
        if (stopped := spending.spent()) is not None:
            break
        if probe(entry) is not None:
            unnumbered_complete = True
            break
    scheme = None if unnumbered_complete else numbered.scheme()
    pool: Iterable[Entry]
    if scheme is not None:
        ordered_by = "numbers"
        pool = numbered.best_first(scheme)
    else:
        ordered_by = "mtime"
        pool = by_time(numbered, unnumbered)

    complete: list[Candidate] = []
    verified = False
    for entry in () if stopped else pool:
        if entry.name not in probed and (stopped := spending.spent()) is not None:
            break
        layout = probe(entry)
        if layout is None:
            continue
        step = entry.step if entry.step is not None else entry.epoch
        mtime = entry.mtime if entry.mtime != -math.inf else None
        candidate = Candidate(entry.path, entry.name, layout, step, mtime, entry.epoch)
        # Directories were verified by their marker files; only files need reading, and
        # (unless verify_all) only until one passes.
        if verify and (verify_all or not verified) and layout == "file":
            problem = _verify_logged(candidate, spending)
            if problem is not None:
                skipped.append(Skipped(candidate.name, FAILED_VERIFICATION + problem))
                continue
        verified = True
        complete.append(candidate)
        if max_candidates is not None and len(complete) >= max_candidates:
            break
    unexamined = len(numbered) + len(unnumbered) - len(probed)
    return Discovery(
        directory=directory,
        exists=True,
        chosen=complete[0] if complete else None,
        candidates=tuple(complete),
        skipped=tuple(skipped[:MAX_SKIPPED]),
        skipped_more=max(0, len(skipped) - MAX_SKIPPED),
        ordered_by=ordered_by,
        unexamined=unexamined,
        gave_up=unexamined if stopped else 0,
        search_stopped=stopped,
    )


def _probe_logged(
    entry: Entry, shards: dict[str, set[tuple[int, int]]], skipped: list[Skipped]
) -> str | None:
    """Return the layout of a complete entry; rejected ones go to ``skipped``, unknown ones
    are dropped."""
    try:
        result = probe_entry(entry, shards)
    except OSError as exc:
        # A storage failure (EIO, ETIMEDOUT) raises: going back to an older checkpoint
        # silently would throw work away. Anything else is this entry's own problem.
        result = entry_error(entry.path, entry.name, exc, "examined")
    except ValueError as exc:  # a name or a file that no layout expected: this entry only
        result = Skipped(entry.name, f"cannot be examined: {exc}")
    if isinstance(result, Skipped):
        skipped.append(result)
        return None
    return result


def _verify_logged(candidate: Candidate, spending: _Spending) -> str | None:
    try:
        problem, nbytes = verify(candidate.path)
    except OSError as exc:
        return entry_error(candidate.path, candidate.name, exc, "verified").reason
    except ValueError as exc:  # a file no check expected: this entry's problem only
        return f"cannot be verified: {exc}"
    spending.read(nbytes)
    return problem
