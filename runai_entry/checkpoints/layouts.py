"""Which directory layouts (and TensorFlow file sets) are complete checkpoints: a table.

Each framework writes one name last, so its presence means the checkpoint is complete; other
names present without it mean a save was cut short. The table below is the specification:
:func:`probe_directory` only reads it, row by row, first match wins.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
import stat
from collections.abc import Callable, Sequence
from typing import NamedTuple

from runai_entry.checkpoints.found import EMPTY_FILE, Skipped
from runai_entry.checkpoints.listing import Entry
from runai_entry.checkpoints.names import TF_INDEX

LAYOUTS = ("file", "dcp", "huggingface", "orbax", "tensorflow", "keras-backup")

ORBAX_METADATA = "_CHECKPOINT_METADATA"
HF_JIT_SENTINEL = "checkpoint-is-incomplete.txt"

_HF_NAME = re.compile(r"checkpoint-\d+$")
_TF_SHARD = re.compile(r"(.+)\.data-(\d+)-of-(\d+)$")


def _orbax_committed(path: str, names: set[str]) -> str | None:
    return _orbax_uncommitted(os.path.join(path, ORBAX_METADATA))


def _hf_jit_in_progress(path: str, names: set[str]) -> str | None:
    # The Trainer's JIT checkpoint (enable_jit_checkpoint, on SIGTERM) marks the directory with
    # this file for as long as the save runs, and removes it once the save is whole.
    if HF_JIT_SENTINEL in names:
        return f"in progress: {HF_JIT_SENTINEL} (a JIT checkpoint cut short)"
    return None


class Complete(NamedTuple):
    """A directory is a complete ``layout`` checkpoint when every one of ``names`` is in it
    (and ``problem``, given the path and the names listed, finds nothing wrong with it)."""

    layout: str
    names: tuple[str, ...]
    why: str
    problem: Callable[[str, set[str]], str | None] | None = None


class InProgress(NamedTuple):
    """A directory holding ``pattern`` (a name or a glob) but no complete row: ``reason``."""

    pattern: str
    reason: str


COMPLETE: tuple[Complete, ...] = (
    Complete("huggingface", ("trainer_state.json",),
             "the Trainer writes it last (transformers #35782)", _hf_jit_in_progress),
    Complete("dcp", (".metadata",), "torch.distributed.checkpoint writes it last, by rename"),
    Complete("orbax", ("commit_success.txt",), "Orbax's commit file (object stores)"),
    Complete("orbax", (ORBAX_METADATA,), "a finalised name whose commit timestamp is set",
             _orbax_committed),
    Complete("keras-backup", ("training_metadata.json", "latest.weights.h5"),
             "BackupAndRestore writes the metadata after the weights"),
)
IN_PROGRESS: tuple[InProgress, ...] = (
    InProgress("latest.weights.h5", "in progress: latest.weights.h5 without "
               "training_metadata.json"),
    InProgress("training_metadata.json", "incomplete: training_metadata.json without "
               "latest.weights.h5"),
    InProgress("*.distcp", "in progress: *.distcp without .metadata"),
)


#: A checkpoint directory holds a file per rank and a few more; a directory holding more names
#: than this is not read further (a planted one may hold millions).
MAX_DIRECTORY_NAMES = 100_000


def probe_directory(path: str, name: str) -> str | Skipped | None:
    """The layout of a complete checkpoint directory, a Skipped, or None if it is unknown."""
    with os.scandir(path) as it:
        names = {d.name for d in itertools.islice(it, MAX_DIRECTORY_NAMES + 1)}
    if len(names) > MAX_DIRECTORY_NAMES:
        return Skipped(name, f"holds over {MAX_DIRECTORY_NAMES} entries: not examined")
    for row in COMPLETE:
        if all(n in names for n in row.names):
            problem = row.problem(path, names) if row.problem else None
            return Skipped(name, problem) if problem else row.layout
    for sign in IN_PROGRESS:
        if any(fnmatch.fnmatchcase(n, sign.pattern) for n in names):
            return Skipped(name, sign.reason)
    if _HF_NAME.match(name):  # the Trainer's name, without the file it writes last
        return Skipped(name, f"in progress: {name} without trainer_state.json")
    return None


def tensorflow_shards(listing: Sequence[os.DirEntry[str]]) -> dict[str, set[tuple[int, int]]]:
    """Map each TensorFlow prefix to the ``(shard, of)`` data files listed for it."""
    shards: dict[str, set[tuple[int, int]]] = {}
    for dirent in listing:
        if ".data-" not in dirent.name:
            continue
        match = _TF_SHARD.match(dirent.name)
        if match:
            prefix, shard, total = match.group(1), int(match.group(2)), int(match.group(3))
            shards.setdefault(prefix, set()).add((shard, total))
    return shards


def probe_entry(entry: Entry, shards: dict[str, set[tuple[int, int]]]) -> str | Skipped | None:
    if entry.kind == "dir":
        return probe_directory(entry.path, entry.name)
    info = entry.dirent.stat()
    if not stat.S_ISREG(info.st_mode):
        return Skipped(entry.name, "not a regular file")
    if info.st_size == 0:
        return Skipped(entry.name, EMPTY_FILE)
    if entry.kind == "tensorflow":
        missing = _missing_shards(shards.get(entry.name[:-len(TF_INDEX)], set()))
        return Skipped(entry.name, f"incomplete: {missing}") if missing else "tensorflow"
    return "file"


def _missing_shards(present: set[tuple[int, int]]) -> str | None:
    # TensorFlow writes the data shards first and the .index last (MergeV2Checkpoints), so an
    # .index whose shards are absent was copied or cleaned up halfway.
    if not present:
        return "no .data-NNNNN-of-MMMMM shard beside the .index"
    totals = {total for _, total in present}
    if len(totals) != 1:
        return "data shards disagree on their count"
    total = totals.pop()
    # Counted from the shards present, never by walking range(total): the count is read from
    # a name anyone may have written ("-of-99999999999").
    absent = total - len({shard for shard, _ in present if shard < total})
    if absent:
        return f"{absent} of {total} data shards missing"
    return None


def _orbax_uncommitted(metadata_path: str) -> str | None:
    """Why an Orbax step directory without ``commit_success.txt`` is not complete, or None.

    Orbax writes ``_CHECKPOINT_METADATA`` when it creates the (temporary) step directory and
    sets ``commit_timestamp_nsecs`` when it finalises, in both of its modes: rename (local and
    NFS) and commit file (object stores, where the final name exists from the start). A null
    timestamp therefore means "still being written"; a file without the key (older Orbax) is
    trusted on its finalised name.
    """
    import json

    # O_NONBLOCK and S_ISREG: a FIFO under that name must not block the open, nor a device the
    # read.
    fd = os.open(metadata_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return f"{ORBAX_METADATA} is not a regular file"
        raw = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    try:
        metadata = json.loads(raw)
    except (ValueError, RecursionError):  # also UnicodeDecodeError; RecursionError: [[[[...
        return f"in progress: {ORBAX_METADATA} is not valid JSON"
    if isinstance(metadata, dict) and metadata.get("commit_timestamp_nsecs", 0) is None:
        return f"in progress: not committed ({ORBAX_METADATA} has no commit timestamp)"
    return None


