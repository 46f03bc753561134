"""Finding the newest complete checkpoint: one listing, lazy probes, best first, bounded."""

from __future__ import annotations

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
from runai_entry.checkpoints.listing import Entry, by_time, classify
from runai_entry.checkpoints.verify import verify_file
from runai_entry.errors import CheckpointDirUnavailable

#: How many candidates in a row may fail verification before discovery gives up on the older
#: ones. A kill mid-save tears one file per attempt, and the crash-loop guard stops a job after
#: a few attempts without progress, so a handful of torn files in a row is the most an honest
#: failure leaves. Dozens mean the saves themselves are broken (a format verification cannot
#: read): walking back through all of them costs an open and a read each (100,000 of them on a
#: network mount is minutes before the start) and would end, if ever, in a checkpoint far in
#: the past. 32 bounds the walk to well under a second locally and keeps the skipped list short
#: enough to log.
MAX_FAILED_VERIFICATIONS = 32

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
    until one passes, or :data:`MAX_FAILED_VERIFICATIONS` in a row fail (then the rest are left,
    and counted in :attr:`Discovery.gave_up`). The listing and every probe run in a daemon
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
    numbered, unnumbered = classify(listing, pattern, skipped)
    shards: dict[str, set[tuple[int, int]]] | None = None
    #: The layout of each entry probed (None: rejected or unknown), by name.
    probed: dict[str, str | None] = {}

    def probe(entry: Entry) -> str | None:
        nonlocal shards
        if entry.name not in probed:
            if entry.kind == "tensorflow" and shards is None:
                shards = tensorflow_shards(listing)
            probed[entry.name] = _probe_logged(entry, shards or {}, skipped)
        return probed[entry.name]

    # Numbers decide only if no complete checkpoint lacks one (the rules: .listing), so the
    # unnumbered entries are probed first, stopping at the first complete one; in practice
    # they are a handful (last.ckpt, a Keras backup directory, logs/).
    unnumbered_complete = any(probe(e) is not None for e in unnumbered)
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
    failed = 0
    gave_up = False
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
                failed += 1
                if failed >= MAX_FAILED_VERIFICATIONS:
                    gave_up = True
                    break
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
        skipped=tuple(skipped),
        ordered_by=ordered_by,
        unexamined=unexamined,
        gave_up=unexamined if gave_up else 0,
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


