"""Reading and ordering names: which listed entries may be checkpoints, and which is newest.

Ordering is decided on the *names* because mtimes written by different NFS clients disagree:
when every candidate carries a number (:func:`parse_step`), the highest wins, as ``(epoch,
step)`` when every name has both, else by step, else by epoch; otherwise, newest mtime first.
Only names and ``d_type`` are read here; an mtime is stat'ed only when the ordering needs it.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from runai_entry.checkpoints.found import VANISHED, Skipped, unavailable
from runai_entry.checkpoints.layouts import ORBAX_TMP

#: File extensions that mark a single-file checkpoint. ``.weights.h5`` is covered by ``.h5`` and
#: ``.pth.tar`` by ``.tar``.
FILE_SUFFIXES: tuple[str, ...] = (
    ".pt",
    ".pth",
    ".ckpt",
    ".bin",
    ".safetensors",
    ".h5",
    ".hdf5",
    ".keras",
    ".pkl",
    ".pickle",
    ".npz",
    ".msgpack",
    ".joblib",
    ".tar",
)
#: Names that end like this are being written (or were abandoned mid-write).
PARTIAL_SUFFIXES: tuple[str, ...] = (".tmp", ".partial", ".incomplete", "~")

# A number right after a keyword: "step=1200", "epoch_3", "iter100", "ckpt-7", "checkpoint-500".
# The look-behind keeps "timestep5" from counting as a step.
_KEYWORD_NUMBER = re.compile(
    r"(?<![a-z])(step|iter(?:ation)?|epoch|checkpoint|ckpt)s?[^a-z0-9]{0,3}(\d+)", re.IGNORECASE
)
_NUMBER = re.compile(r"\d+")
# Lightning appends "-v1", "-v2" when a name is taken; it is not a step.
_VERSION_SUFFIX = re.compile(r"-v\d+$")


def parse_step(name: str) -> tuple[int | None, int | None]:
    """Return ``(epoch, step)`` parsed from a checkpoint name (extension already removed).

    The step is the number after ``step``/``iter``/``iteration``; else the one after
    ``checkpoint``/``ckpt``; else, when the name has no epoch either, the last number in the
    name (``000123``, ``model_42``), ignoring a Lightning ``-vN`` suffix. The epoch is the number
    after ``epoch``. The first occurrence of each keyword counts.
    """
    epoch: int | None = None
    step: int | None = None
    counter: int | None = None
    for keyword, digits in _KEYWORD_NUMBER.findall(name):
        first = keyword[0].lower()
        if first == "e":
            epoch = int(digits) if epoch is None else epoch
        elif first == "c":  # checkpoint, ckpt
            counter = int(digits) if counter is None else counter
        elif step is None:
            step = int(digits)
    if step is None:
        step = counter
    if step is None and epoch is None:
        numbers = _NUMBER.findall(_VERSION_SUFFIX.sub("", name))
        if numbers:
            step = int(numbers[-1])
    return epoch, step


def checkpoint_suffix(name: str) -> str | None:
    """Return the checkpoint extension ``name`` ends with, or None."""
    lowered = name.lower()
    if not lowered.endswith(FILE_SUFFIXES):
        return None
    for suffix in FILE_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


@dataclass(slots=True)
class Entry:
    """One listed name, with what the name alone tells."""

    dirent: os.DirEntry[str]
    name: str
    path: str
    kind: str  # "file", "tensorflow" or "dir"
    epoch: int | None
    step: int | None
    mtime: float | None = None
    probed: bool = False
    rank: int = 0
    #: The layout once probed and found complete; None for rejected and unknown entries.
    layout: str | None = None


def classify_names(
    listing: Sequence[os.DirEntry[str]],
    pattern: str | None,
    skipped: list[Skipped],
) -> tuple[list[Entry], list[Entry]]:
    """Sort the listed names into possible candidates, with and without a number in the name,
    using the names (and d_type) only."""
    import fnmatch

    def matches(name: str) -> bool:
        return pattern is None or fnmatch.fnmatch(name, pattern)

    everything = pattern is None

    numbered: list[Entry] = []
    unnumbered: list[Entry] = []
    for dirent in listing:
        name = dirent.name
        if name.startswith("."):
            continue
        if name.endswith(PARTIAL_SUFFIXES):
            _skip_partial(dirent, matches, skipped)
            continue
        # The common case first: this loop runs once per name, 100,000 times in big directories.
        is_dir = _is_dir(dirent)
        if not is_dir and name.lower().endswith(FILE_SUFFIXES):
            if everything or matches(name):
                epoch, step = parse_step(name[: name.rindex(".")])
                entry = Entry(dirent, name, dirent.path, "file", epoch, step)
                (unnumbered if epoch is None and step is None else numbered).append(entry)
        elif not is_dir and name.endswith(".index") and len(name) > len(".index"):
            prefix = name[: -len(".index")]
            if matches(name) or matches(prefix):
                epoch, step = parse_step(prefix)
                path = dirent.path[: -len(".index")]
                entry = Entry(dirent, name, path, "tensorflow", epoch, step)
                (unnumbered if epoch is None and step is None else numbered).append(entry)
        elif is_dir and ORBAX_TMP in name:
            if matches(name):
                skipped.append(Skipped(name, "in progress: Orbax temporary directory"))
        elif is_dir and matches(name):
            suffix = checkpoint_suffix(name)  # Lightning's sharded "epoch=3.ckpt/" directories
            epoch, step = parse_step(name[: -len(suffix)] if suffix else name)
            entry = Entry(dirent, name, dirent.path, "dir", epoch, step)
            (unnumbered if epoch is None and step is None else numbered).append(entry)
    return numbered, unnumbered


def _skip_partial(
    dirent: os.DirEntry[str], matches: Callable[[str], bool], skipped: list[Skipped]
) -> None:
    """Report a name being written (``model.pt.tmp``) when the rest looks like a checkpoint."""
    name = dirent.name
    stripped, ending = (name[:-1], "~") if name.endswith("~") else name.rsplit(".", 1)
    if not name.endswith("~"):
        ending = "." + ending
    if matches(stripped) and (
        checkpoint_suffix(stripped) or stripped.endswith(".index") or _is_dir(dirent)
    ):
        skipped.append(Skipped(name, f"in progress: name ends with {ending}"))


def _is_dir(dirent: os.DirEntry[str]) -> bool:
    try:
        return dirent.is_dir()
    except OSError as exc:  # d_type unknown and the stat failed: probe it as a file, later
        if exc.errno in VANISHED:
            return False
        raise


def rank_by_number(entries: Sequence[Entry]) -> bool:
    """Set each entry's rank from its numbers; False when the names share no scheme."""
    if all(e.epoch is not None and e.step is not None for e in entries):
        for e in entries:
            # (epoch, step) packed into one int: sorting 100,000 ints beats sorting tuples.
            e.rank = ((e.epoch or 0) << 64) | min(e.step or 0, (1 << 64) - 1)
    elif all(e.step is not None for e in entries):
        for e in entries:
            e.rank = e.step or 0
    elif all(e.epoch is not None for e in entries):
        for e in entries:
            e.rank = e.epoch or 0
    else:
        return False
    return True


def order_by_number(entries: list[Entry]) -> Iterator[Entry]:
    """Yield entries by rank, highest first; equal ranks by mtime (stat'ed only then)."""
    rank = operator.attrgetter("rank")
    entries.sort(key=rank, reverse=True)
    for _, group_iter in itertools.groupby(entries, key=rank):
        group = list(group_iter)
        if len(group) > 1:
            for entry in group:
                entry.mtime = mtime_of(entry)
            group.sort(key=BY_TIME, reverse=True)
        yield from group


def mtime_of(entry: Entry) -> float:
    try:
        return entry.dirent.stat().st_mtime
    except OSError as exc:
        if exc.errno in VANISHED or isinstance(exc, PermissionError):
            return -math.inf  # sorts last; the probe reports why
        raise unavailable(entry.path, exc) from exc


# (mtime, name) built in C: in mtime mode this key runs once per entry, 100,000 times.
BY_TIME = operator.attrgetter("mtime", "name")


