"""Which checkpoint in a directory is the newest *complete* one: names, layouts, verify, discover.

A preempted job is killed at the end of its grace window, often in the middle of a save, so the
newest entry in the checkpoint directory is frequently a torn one. This module lists the
directory once, orders the entries, and walks them best first until it finds one that the
framework that wrote it would call complete. It never logs: it returns a :class:`Discovery` with
the facts (what was chosen, what was rejected and why) and the caller logs them.

What counts as a candidate, and the ordering rules, are written in one place: the docstring of
:mod:`runai_entry.checkpoints.listing`. Which directory layouts are complete: the table in
:mod:`runai_entry.checkpoints.layouts`.

The training-side library imports this module, so it costs nothing at import: stdlib only, and
the modules only some paths need (``threading``, ``zipfile``, ``json``, ``struct``) are imported
inside the functions that use them.

Cost: exactly one ``scandir`` of the directory, and one C pass over the names
(:func:`~runai_entry.checkpoints.names.shapes`). Numbered entries are probed lazily, best first:
a file costs one ``stat`` (size and type), a directory one ``listdir`` (plus one small read for
Orbax), and probing stops once ``max_candidates`` complete ones are confirmed; the rest are
counted in :attr:`Discovery.unexamined`. So 10,000 step directories whose newest is complete
cost one scandir and ``max_candidates`` listdirs, and 100,000 numbered files cost no stat beyond
those. The walk past damaged and unknown entries is bounded by a :class:`SearchBudget` (entries
examined, bytes read, seconds); when it runs out first, :attr:`Discovery.gave_up` counts what was
left and :meth:`Discovery.resume_point` refuses to start fresh over it (exit 75). One entry that
cannot be examined (a symlink loop, a FIFO, a name too long for a path) is skipped with the
reason; only errnos that say the storage is failing stop discovery.
"""

from __future__ import annotations

from runai_entry.checkpoints.discovery import (
    SEARCH_BUDGET,
    discover,
    newest_checkpoint,
)
from runai_entry.checkpoints.found import Candidate, Discovery, SearchBudget, Skipped
from runai_entry.checkpoints.layouts import LAYOUTS
from runai_entry.checkpoints.names import (
    FILE_SUFFIXES,
    PARTIAL_SUFFIXES,
    checkpoint_suffix,
    parse_step,
)
from runai_entry.checkpoints.verify import verify, verify_file

__all__ = [
    "FILE_SUFFIXES",
    "LAYOUTS",
    "PARTIAL_SUFFIXES",
    "SEARCH_BUDGET",
    "Candidate",
    "Discovery",
    "SearchBudget",
    "Skipped",
    "checkpoint_suffix",
    "discover",
    "newest_checkpoint",
    "parse_step",
    "verify",
    "verify_file",
]
