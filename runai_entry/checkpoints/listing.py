"""Which listed entries may be checkpoints, and in which order: the rules, written once, here.

What counts as a candidate (entries directly inside the directory, nothing recursive):

* a regular, non-empty file whose name ends in a checkpoint extension
  (:data:`~runai_entry.checkpoints.names.FILE_SUFFIXES`);
* ``<prefix>.index`` of a TensorFlow checkpoint, with every ``<prefix>.data-NNNNN-of-MMMMM``
  shard it names listed beside it; the candidate's ``path`` is the *prefix* (``.../ckpt-7``),
  which is what ``tf.train.Checkpoint.restore`` expects, and its ``name`` the ``.index`` file;
* a directory one of the known layouts calls complete (the table in :mod:`.layouts`).

Never candidates: hidden names (this keeps runai-entry's ``.runai-entry/`` state directory and
the training library's temporary files out), and names ending ``.tmp .partial .incomplete ~``.
Unknown files and directories are ignored silently; only entries that look like checkpoints but
are rejected, and entries whose type cannot be told (a symlink loop, a path too long), are
reported in :attr:`Discovery.skipped`.

Ordering (best first), decided on the *names* because mtimes written by different NFS clients
disagree with each other:

1. Every name is parsed for an epoch and a step (:func:`~.names.parse_step`). If every complete
   candidate has a number, the highest number wins whatever the mtimes: compared as
   ``(epoch, step)`` when every name has both (correct both for a global step and for a step
   that restarts each epoch), else by step alone when every name has one, else by epoch alone.
   Equal numbers fall back to the rule below.
2. Otherwise (some complete candidate has no number, e.g. Lightning's ``last.ckpt``, or the
   names mix epoch-only and step-only schemes): newest mtime first, ties broken by name,
   greatest first.

Names without a number are probed first (by :mod:`.discovery`), stopping at the first complete
one, because whether one of them is complete decides between the two rules.

Cost: the names are sorted by *shape* (:func:`~.names.shapes`: digits made equal) in one C
pass, and each shape is parsed once, so 100,000 ``step-NNNNNNNN.pt`` files cost one regex
search, not 100,000. Only names and ``d_type`` are read here; an ``Entry`` is built for an
entry only when the walk best first reaches it, and an mtime is stat'ed only when the ordering
needs it (equal numbers, or rule 2, where every entry is stat'ed once: the price of having no
numbers to go by).
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import math
import operator
import os
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from runai_entry.checkpoints.found import STORAGE_FAILING, Skipped, entry_error, unavailable
from runai_entry.checkpoints.names import (
    DIGIT_SUFFIX_SHAPES,
    FILE_SUFFIXES,
    ORBAX_TMP,
    PARTIAL_SUFFIXES,
    TF_INDEX,
    Span,
    checkpoint_suffix,
    number_spans,
    shapes,
)

#: How many of the best numbered entries are picked out first: the walk best first usually
#: stops within them (max_candidates is 10 by default), and picking 16 of 100,000 ranks costs
#: a third of sorting them all.
_FIRST = 16
#: The largest step that fits beside an epoch in one packed rank.
_STEP_LIMIT = (1 << 64) - 1


class Entry(NamedTuple):
    """One listed name that may be a checkpoint, with what the name alone tells.

    Immutable: the walk that probes entries keeps its findings beside them, and the ordering
    sets an mtime with ``_replace``. The price is nothing, since an Entry is built only for the
    entries the walk reaches (or, in mtime order, once per entry, as the stat is anyway).
    """

    dirent: os.DirEntry[str]
    name: str
    path: str
    kind: str  # "file", "tensorflow" or "dir"
    epoch: int | None
    step: int | None
    #: Seconds since the epoch, once the ordering stat'ed it (``-inf`` when the stat failed).
    mtime: float | None = None


class _Group:
    """Numbered entries of one shape and kind: their numbers lie at the same spans."""

    __slots__ = ("cut", "dirents", "epoch", "kind", "names", "shape", "step")

    def __init__(self, shape: str, kind: str, dirents: list[os.DirEntry[str]],
                 epoch: Span | None, step: Span | None, cut: int) -> None:
        self.shape = shape
        self.kind = kind
        self.dirents = dirents
        self.names: list[str] = [d.name for d in dirents]
        self.epoch = epoch
        self.step = step
        self.cut = cut  # characters cut from the end of the path: ".index" for TensorFlow

    def numbers(self, span: Span) -> list[int]:
        return list(map(int, map(operator.itemgetter(slice(*span)), self.names)))

    def entry(self, i: int) -> Entry:
        name, dirent, epoch, step = self.names[i], self.dirents[i], self.epoch, self.step
        return Entry(dirent, name, dirent.path[:len(dirent.path) - self.cut], self.kind,
                     int(name[epoch[0]:epoch[1]]) if epoch else None,
                     int(name[step[0]:step[1]]) if step else None)


class Numbered:
    """The entries whose names carry a number, parsed only as far as the ordering needs."""

    def __init__(self) -> None:
        self.groups: list[_Group] = []
        self._ends: list[int] | None = None  # where each group ends, counted across them

    def __len__(self) -> int:
        return sum(len(g.names) for g in self.groups)

    def scheme(self) -> str | None:
        """Which numbers every name shares ("epoch+step", "step", "epoch"); None: no scheme."""
        if all(g.epoch and g.step for g in self.groups):
            return "epoch+step"
        if all(g.step for g in self.groups):
            return "step"
        if all(g.epoch for g in self.groups):
            return "epoch"
        return None

    def entry(self, i: int) -> Entry:
        """The ``i``-th numbered entry, counted across the groups in order."""
        if self._ends is None:
            self._ends = list(itertools.accumulate(len(g.names) for g in self.groups))
        k = bisect_right(self._ends, i)
        group = self.groups[k]
        return group.entry(i - self._ends[k] + len(group.names))

    def best_first(self, scheme: str) -> Iterator[Entry]:
        """Entries by number, highest first; equal numbers by mtime (stat'ed only then)."""
        ranks = self._ranks(scheme)
        rest: Sequence[int] = range(len(ranks))
        batch = _FIRST
        # The best batch is picked out and walked; only when the walk goes on (rejected and
        # failed candidates) is the next, four times larger, picked from the rest.
        while len(rest) > 4 * batch:
            values = ranks if batch == _FIRST else list(map(ranks.__getitem__, rest))
            threshold = heapq.nlargest(batch, values)[-1]
            yield from _by_rank([i for i, r in zip(rest, values, strict=True) if r >= threshold],
                                ranks, self.entry)
            rest = [i for i, r in zip(rest, values, strict=True) if r < threshold]
            batch *= 4
        yield from _by_rank(rest, ranks, self.entry)

    def _ranks(self, scheme: str) -> list[Any]:
        """One sortable rank per entry, in group order."""
        spans = {"epoch+step": ("epoch", "step"), "step": ("step",), "epoch": ("epoch",)}[scheme]
        if len(self.groups) == 1:
            # One shape: the digits to compare have the same width in every name, so the
            # strings order as their numbers do, and 100,000 int() calls are saved. When they
            # are all the digits the names have, in rank order, the names order as the ranks.
            group = self.groups[0]
            cuts = [slice(*getattr(group, s)) for s in spans]
            width = sum(c.stop - c.start for c in cuts)
            if group.shape.count("0") == width and cuts == sorted(cuts, key=lambda c: c.start):
                return group.names
            return list(map(operator.itemgetter(*cuts), group.names))
        ranks: list[int] = []
        for g in self.groups:
            if scheme == "epoch+step":
                assert g.epoch and g.step
                steps = g.numbers(g.step)
                if steps and max(steps) > _STEP_LIMIT:
                    steps = [min(s, _STEP_LIMIT) for s in steps]
                # (epoch, step) packed into one int: sorting ints beats sorting tuples.
                ranks += [(e << 64) | s for e, s in zip(g.numbers(g.epoch), steps, strict=True)]
            else:
                span = g.step if scheme == "step" else g.epoch
                assert span
                ranks += g.numbers(span)
        return ranks


def _by_rank(indices: Sequence[int], ranks: list[Any],
             entry: Callable[[int], Entry]) -> Iterator[Entry]:
    order = sorted(indices, key=ranks.__getitem__, reverse=True)
    for _, tied in itertools.groupby(order, key=ranks.__getitem__):
        group = [entry(i) for i in tied]
        if len(group) > 1:
            group = sorted((e._replace(mtime=mtime_of(e.dirent)) for e in group), key=BY_TIME,
                           reverse=True)
        yield from group


def by_time(numbered: Numbered, unnumbered: list[Entry]) -> Iterator[Entry]:
    """Rule 2: newest mtime first, ties by name, greatest first (every entry stat'ed once)."""
    dirents = [d for group in numbered.groups for d in group.dirents]
    dirents += [e.dirent for e in unnumbered]
    mtimes = [mtime_of(d) for d in dirents]
    keys = list(zip(mtimes, [d.name for d in dirents], strict=True))
    count = len(dirents) - len(unnumbered)
    for i in sorted(range(len(dirents)), key=keys.__getitem__, reverse=True):
        entry = numbered.entry(i) if i < count else unnumbered[i - count]
        yield entry._replace(mtime=mtimes[i])


def classify(
    listing: Sequence[os.DirEntry[str]],
    pattern: str | None,
    skipped: list[Skipped],
) -> tuple[Numbered, list[Entry]]:
    """Sort the listed names into possible candidates, with and without a number in the name,
    using the names (and d_type) only; names being written go to ``skipped``."""
    matches: Callable[[str], bool] | None = None
    if pattern is not None:
        match = re.compile(fnmatch.translate(pattern)).match

        def matches(name: str) -> bool:
            return match(name) is not None

        # Kept: what may match; a TensorFlow checkpoint matches by its prefix too, and a name
        # being written by the name it will have.
        listing = [d for d in listing if matches(d.name) or d.name.endswith(PARTIAL_SUFFIXES)
                   or (d.name.endswith(TF_INDEX) and matches(d.name[:-len(TF_INDEX)]))]

    shape_of = shapes([d.name for d in listing])
    distinct = dict.fromkeys(shape_of)
    visible = [shape for shape in distinct if not shape.startswith(".")]
    by_shape: dict[str, list[os.DirEntry[str]]]
    if len(visible) == 1:  # the common case: step-N.pt files, and .runai-entry/ beside them
        only = visible[0]
        by_shape = {only: list(listing) if len(distinct) == 1 else
                    [d for d, shape in zip(listing, shape_of, strict=True) if shape == only]}
    else:
        by_shape = {shape: [] for shape in visible}
        for dirent, shape in zip(listing, shape_of, strict=True):
            if shape in by_shape:
                by_shape[shape].append(dirent)

    numbered = Numbered()
    unnumbered: list[Entry] = []
    for shape, dirents in by_shape.items():
        if shape.endswith(PARTIAL_SUFFIXES):
            for dirent in dirents:
                _skip_partial(dirent, matches, skipped)
            continue
        parts = [dirents]
        if shape.lower().endswith(DIGIT_SUFFIX_SHAPES):  # "x.h5" is a checkpoint, "x.h7" not
            suffixed = [d.name.lower().endswith(FILE_SUFFIXES) for d in dirents]
            parts = [[d for d, s in zip(dirents, suffixed, strict=True) if s is want]
                     for want in (True, False)]
        for part in parts:
            if part:
                _classify_shape(shape, part, matches, numbered, unnumbered, skipped)
    return numbered, unnumbered


def _classify_shape(
    shape: str,
    dirents: list[os.DirEntry[str]],
    matches: Callable[[str], bool] | None,
    numbered: Numbered,
    unnumbered: list[Entry],
    skipped: list[Skipped],
) -> None:
    """Names of one shape: any one of them tells what all are, but for d_type."""

    def add(dirents: list[os.DirEntry[str]], kind: str, parsed: str, cut: int) -> None:
        epoch, step = number_spans(parsed)
        if epoch is None and step is None:
            unnumbered.extend(Entry(d, d.name, d.path[:len(d.path) - cut], kind, None, None)
                              for d in dirents)
        else:
            numbered.groups.append(_Group(shape, kind, dirents, epoch, step, cut))

    is_dir = _dir_flags(dirents, skipped)
    files, dirs = dirents, []
    if not all(flag is False for flag in is_dir):
        files = [d for d, flag in zip(dirents, is_dir, strict=True) if flag is False]
        dirs = [d for d, flag in zip(dirents, is_dir, strict=True) if flag]
    if files:
        name = files[0].name
        if name.lower().endswith(FILE_SUFFIXES):
            add(files, "file", name[:name.rindex(".")], 0)
        elif name.endswith(TF_INDEX) and len(name) > len(TF_INDEX):
            add(files, "tensorflow", name[:-len(TF_INDEX)], len(TF_INDEX))
    if matches is not None:
        dirs = [d for d in dirs if matches(d.name)]
    if dirs:
        name = dirs[0].name
        if ORBAX_TMP in name:
            skipped.extend(Skipped(d.name, "in progress: Orbax temporary directory") for d in dirs)
        else:
            suffix = checkpoint_suffix(name)  # Lightning's sharded "epoch=3.ckpt/" directories
            add(dirs, "dir", name[:-len(suffix)] if suffix else name, 0)


def _skip_partial(
    dirent: os.DirEntry[str], matches: Callable[[str], bool] | None, skipped: list[Skipped]
) -> None:
    """Report a name being written (``model.pt.tmp``) when the rest looks like a checkpoint."""
    name = dirent.name
    stripped, ending = (name[:-1], "~") if name.endswith("~") else name.rsplit(".", 1)
    if not name.endswith("~"):
        ending = "." + ending
    if (matches is None or matches(stripped)) and (
        checkpoint_suffix(stripped) or stripped.endswith(TF_INDEX) or _is_dir(dirent)
    ):
        skipped.append(Skipped(name, f"in progress: name ends with {ending}"))


def _dir_flags(dirents: list[os.DirEntry[str]], skipped: list[Skipped]) -> list[bool | None]:
    """Which entries are directories (following symlinks); None: it cannot be told, and the
    entry went to ``skipped`` with the reason."""
    try:
        return [d.is_dir() for d in dirents]
    except OSError:  # d_type unknown and a stat failed: one by one, to learn which
        return [_is_dir(d, skipped) for d in dirents]


def _is_dir(dirent: os.DirEntry[str], skipped: list[Skipped] | None = None) -> bool | None:
    try:
        return dirent.is_dir()
    except OSError as exc:
        # A symlink loop (ELOOP), a path too long (ENAMETOOLONG), gone: this entry's problem,
        # skipped with the reason. A failing storage raises.
        problem = entry_error(dirent.path, dirent.name, exc, "examined")
        if skipped is not None:
            skipped.append(problem)
        return None


def mtime_of(dirent: os.DirEntry[str]) -> float:
    try:
        return dirent.stat().st_mtime
    except OSError as exc:
        if exc.errno in STORAGE_FAILING:
            raise unavailable(dirent.path, exc) from exc
        return -math.inf  # gone, a symlink loop, ...: sorts last; the probe reports why


# (mtime, name) built in C, for entries of equal number.
BY_TIME = operator.attrgetter("mtime", "name")
