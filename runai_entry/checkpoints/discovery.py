"""Finding the newest complete checkpoint: one listing, lazy probes, best first, bounded."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from runai_entry.checkpoints.found import (
    VANISHED,
    Candidate,
    Discovery,
    Skipped,
    unavailable,
)
from runai_entry.checkpoints.layouts import probe_entry, tensorflow_shards
from runai_entry.checkpoints.names import (
    BY_TIME,
    Entry,
    classify_names,
    mtime_of,
    order_by_number,
    rank_by_number,
)
from runai_entry.checkpoints.verify import verify_file
from runai_entry.errors import CheckpointDirUnavailable

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
) -> Discovery:
    """Find the newest complete checkpoint in ``directory``.

    ``pattern`` (an fnmatch glob) restricts the entry names considered. ``verify`` checks the
    chosen file's format deeply (see :func:`verify_file`) and falls back to the next candidate
    until one passes. The listing and every probe run in a daemon thread: when ``timeout``
    seconds pass first, :class:`CheckpointDirUnavailable` is raised (a hung NFS mount leaves a
    thread stuck in the kernel, which nothing can kill; it dies with the process). ``timeout``
    None runs in the calling thread. ``max_candidates`` bounds how many complete candidates are
    confirmed (None: all). ``lister`` replaces ``os.scandir`` (tests use it to hang).

    Raises :class:`CheckpointDirUnavailable` when the directory exists but cannot be read: the
    job must not start from scratch over checkpoints it merely failed to see.
    """
    path = os.fspath(directory)
    if max_candidates is not None and max_candidates < 1:
        raise ValueError("max_candidates must be at least 1")

    def work() -> Discovery:
        return _discover(path, pattern, verify, max_candidates, lister or _scandir)

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
    """Return the path of the newest complete checkpoint in ``directory``, or None."""
    found = discover(directory, pattern=pattern, verify=verify, timeout=timeout, max_candidates=1)
    return found.chosen.path if found.chosen else None


def _scandir(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return list(it)


def _run_with_timeout(work: Callable[[], Discovery], timeout: float, path: str) -> Discovery:
    from runai_entry.bounded import call_with_timeout

    try:
        return call_with_timeout(work, timeout, name="runai-entry-discover")
    except TimeoutError:
        raise CheckpointDirUnavailable(
            f"checkpoint directory {path!r} did not answer within {timeout:g} s"
            " (hung network mount?)"
        ) from None


def _discover(
    directory: str,
    pattern: str | None,
    verify: bool,
    max_candidates: int | None,
    lister: Lister,
) -> Discovery:
    try:
        listing = list(lister(directory))
    except FileNotFoundError:
        if os.path.lexists(directory):
            # A symlink to storage that is not mounted: starting fresh would write beside (or
            # over) checkpoints the job cannot see.
            raise CheckpointDirUnavailable(
                f"checkpoint directory {directory!r} is a symlink to a missing target"
            ) from None
        return Discovery(directory, False, None, (), ())
    except NotADirectoryError:
        raise CheckpointDirUnavailable(
            f"checkpoint directory {directory!r} is not a directory"
        ) from None
    except OSError as exc:
        raise unavailable(directory, exc) from exc

    skipped: list[Skipped] = []
    numbered, unnumbered = classify_names(listing, pattern, skipped)
    shards = tensorflow_shards(listing)

    def probe(entry: Entry) -> str | None:
        if not entry.probed:
            entry.layout = _probe_logged(entry, shards, skipped)
            entry.probed = True
        return entry.layout

    # Numbers decide only if no complete checkpoint lacks one, so the unnumbered entries are
    # probed first, stopping at the first complete one; in practice they are a handful
    # (last.ckpt, a Keras backup directory, logs/).
    unnumbered_complete = any(probe(e) is not None for e in unnumbered)
    pool: Iterable[Entry]
    if not unnumbered_complete and rank_by_number(numbered):
        ordered_by = "numbers"
        pool = order_by_number(numbered)
    else:
        ordered_by = "mtime"
        entries = numbered + unnumbered
        for entry in entries:
            entry.mtime = mtime_of(entry)
        entries.sort(key=BY_TIME, reverse=True)
        pool = entries

    complete: list[Candidate] = []
    verified = False
    for entry in pool:
        layout = probe(entry)
        if layout is None:
            continue
        step = entry.step if entry.step is not None else entry.epoch
        mtime = entry.mtime if entry.mtime != -math.inf else None
        candidate = Candidate(entry.path, entry.name, layout, step, mtime, entry.epoch)
        # Directories were verified by their marker files; only the best file needs reading.
        if verify and not verified and layout == "file":
            problem = _verify_logged(candidate)
            if problem is not None:
                skipped.append(Skipped(candidate.name, f"failed verification: {problem}"))
                continue
        verified = True
        complete.append(candidate)
        if max_candidates is not None and len(complete) >= max_candidates:
            break
    return Discovery(
        directory=directory,
        exists=True,
        chosen=complete[0] if complete else None,
        candidates=tuple(complete),
        skipped=tuple(skipped),
        ordered_by=ordered_by,
        unexamined=sum(1 for e in itertools.chain(numbered, unnumbered) if not e.probed),
    )


def _probe_logged(
    entry: Entry, shards: dict[str, set[tuple[int, int]]], skipped: list[Skipped]
) -> str | None:
    """Return the layout of a complete entry; rejected ones go to ``skipped``, unknown ones
    are dropped."""
    try:
        result = probe_entry(entry, shards)
    except OSError as exc:
        if exc.errno in VANISHED:
            skipped.append(Skipped(entry.name, "vanished while being examined"))
            return None
        if isinstance(exc, PermissionError):
            skipped.append(Skipped(entry.name, "unreadable: permission denied"))
            return None
        # Anything else (EIO, ETIMEDOUT) is the storage failing, not this checkpoint: going
        # back to an older checkpoint silently would throw work away.
        raise unavailable(entry.path, exc) from exc
    if isinstance(result, Skipped):
        skipped.append(result)
        return None
    return result


def _verify_logged(candidate: Candidate) -> str | None:
    try:
        return verify_file(candidate.path)
    except OSError as exc:
        if exc.errno in VANISHED:
            return "vanished while being verified"
        raise unavailable(candidate.path, exc) from exc


