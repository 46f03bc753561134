"""Which checkpoint in a directory is the newest *complete* one: names, layouts, verify, discover.

A preempted job is killed at the end of its grace window, often in the middle of a save, so the
newest entry in the checkpoint directory is frequently a torn one. This module lists the
directory once, orders the entries, and walks them best first until it finds one that the
framework that wrote it would call complete. It never logs: it returns a :class:`Discovery` with
the facts (what was chosen, what was rejected and why) and the caller logs them.

The training-side library imports this module, so it costs nothing at import: stdlib only, and
the modules only some paths need (``threading``, ``zipfile``, ``json``, ``struct``) are imported
inside the functions that use them.

What counts as a candidate (entries directly inside the directory, nothing recursive):

* a regular, non-empty file whose name ends in a checkpoint extension (:data:`FILE_SUFFIXES`);
* ``<prefix>.index`` of a TensorFlow checkpoint, with every ``<prefix>.data-NNNNN-of-MMMMM``
  shard it names listed beside it; the candidate's ``path`` is the *prefix* (``.../ckpt-7``),
  which is what ``tf.train.Checkpoint.restore`` expects, and its ``name`` the ``.index`` file;
* a directory one of the known layouts calls complete (the table in :mod:`.layouts`).

Never candidates: hidden names (this keeps runai-entry's ``.runai-entry/`` state directory and
the training library's temporary files out), and names ending ``.tmp .partial .incomplete ~``.
Unknown files and directories are ignored silently; only entries that look like checkpoints but
are rejected are reported in :attr:`Discovery.skipped`.

Ordering (best first), decided on the *names* because mtimes written by different NFS clients
disagree with each other:

1. Every name is parsed for an epoch and a step (:func:`parse_step`). If every complete
   candidate has a number, the highest number wins whatever the mtimes: compared as
   ``(epoch, step)`` when every name has both (correct both for a global step and for a step
   that restarts each epoch), else by step alone when every name has one, else by epoch alone.
   Equal numbers fall back to the rule below.
2. Otherwise (some complete candidate has no number, e.g. Lightning's ``last.ckpt``, or the
   names mix epoch-only and step-only schemes): newest mtime first, ties broken by name,
   greatest first.

Cost: exactly one ``scandir`` of the directory, and one pass over the names. Names without a
number are probed first, stopping at the first complete one (usually a handful: ``last.ckpt``,
``logs/``), because whether one of them is complete decides the ordering mode. Numbered entries
are then probed lazily, best first: a file costs one ``stat`` (size and type), a directory one
``listdir`` (plus one small read for Orbax), and probing stops once ``max_candidates`` complete
ones are confirmed; the rest are counted in :attr:`Discovery.unexamined`. So 10,000 step
directories whose newest is complete cost one scandir and ``max_candidates`` listdirs, and
100,000 numbered files cost no stat beyond those. In mtime mode every entry is stat'ed once
(``DirEntry.stat()`` caches), which is the price of having no numbers to go by.
"""

from __future__ import annotations

from runai_entry.checkpoints.discovery import discover, newest_checkpoint
from runai_entry.checkpoints.found import Candidate, Discovery, Skipped
from runai_entry.checkpoints.layouts import LAYOUTS
from runai_entry.checkpoints.names import (
    FILE_SUFFIXES,
    PARTIAL_SUFFIXES,
    checkpoint_suffix,
    parse_step,
)
from runai_entry.checkpoints.verify import verify_file

__all__ = [
    "FILE_SUFFIXES",
    "LAYOUTS",
    "PARTIAL_SUFFIXES",
    "Candidate",
    "Discovery",
    "Skipped",
    "checkpoint_suffix",
    "discover",
    "newest_checkpoint",
    "parse_step",
    "verify_file",
]
