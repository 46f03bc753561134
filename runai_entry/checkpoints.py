"""Which checkpoint in a directory is the newest *complete* one.

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
* a directory one of the known layouts calls complete (see :func:`_probe_directory`).

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

import errno
import itertools
import math
import operator
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runai_entry.errors import CheckpointDirUnavailable

if TYPE_CHECKING:
    PathArg = str | os.PathLike[str]
    #: Lists a directory; a parameter so that tests can stand in for a hung mount.
    Lister = Callable[[str], Iterable[os.DirEntry[str]]]

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

LAYOUTS = ("file", "dcp", "huggingface", "orbax", "tensorflow", "keras-backup")

_ORBAX_TMP = ".orbax-checkpoint-tmp"
_DCP_METADATA = ".metadata"
_HF_STATE = "trainer_state.json"
_ORBAX_METADATA = "_CHECKPOINT_METADATA"
_ORBAX_COMMIT = "commit_success.txt"
_KERAS_METADATA = "training_metadata.json"
_KERAS_WEIGHTS = "latest.weights.h5"

# A number right after a keyword: "step=1200", "epoch_3", "iter100", "ckpt-7", "checkpoint-500".
# The look-behind keeps "timestep5" from counting as a step.
_KEYWORD_NUMBER = re.compile(
    r"(?<![a-z])(step|iter(?:ation)?|epoch|checkpoint|ckpt)s?[^a-z0-9]{0,3}(\d+)", re.IGNORECASE
)
_NUMBER = re.compile(r"\d+")
# Lightning appends "-v1", "-v2" when a name is taken; it is not a step.
_VERSION_SUFFIX = re.compile(r"-v\d+$")
_HF_NAME = re.compile(r"checkpoint-\d+$")
_TF_SHARD = re.compile(r"(.+)\.data-(\d+)-of-(\d+)$")

# Errors on one entry that mean it disappeared between the listing and the probe: the trainer
# rotates old checkpoints away while we look (ESTALE is NFS's way of saying the same).
_VANISHED = (errno.ENOENT, errno.ESTALE)


@dataclass(frozen=True)
class Candidate:
    """A complete checkpoint."""

    #: The directory joined with the entry name (for TensorFlow, the prefix without ``.index``).
    path: str
    #: The entry's name inside the directory.
    name: str
    #: One of :data:`LAYOUTS`.
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
    #: Entries never examined because ``max_candidates`` complete ones were found first.
    unexamined: int = 0


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
class _Entry:
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


def _unavailable(path: str, exc: OSError) -> CheckpointDirUnavailable:
    if exc.errno is not None and exc.errno in errno.errorcode:
        cause = f"{errno.errorcode[exc.errno]} {os.strerror(exc.errno)}"
    else:
        cause = str(exc)
    return CheckpointDirUnavailable(f"cannot read checkpoint directory {path!r}: {cause}")


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
        raise _unavailable(directory, exc) from exc

    skipped: list[Skipped] = []
    numbered, unnumbered = _classify_names(listing, pattern, skipped)
    shards = _tensorflow_shards(listing)

    def probe(entry: _Entry) -> str | None:
        if not entry.probed:
            entry.layout = _probe_logged(entry, shards, skipped)
            entry.probed = True
        return entry.layout

    # Numbers decide only if no complete checkpoint lacks one, so the unnumbered entries are
    # probed first, stopping at the first complete one; in practice they are a handful
    # (last.ckpt, a Keras backup directory, logs/).
    unnumbered_complete = any(probe(e) is not None for e in unnumbered)
    pool: Iterable[_Entry]
    if not unnumbered_complete and _rank_by_number(numbered):
        ordered_by = "numbers"
        pool = _order_by_number(numbered)
    else:
        ordered_by = "mtime"
        entries = numbered + unnumbered
        for entry in entries:
            entry.mtime = _mtime(entry)
        entries.sort(key=_BY_TIME, reverse=True)
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


def _classify_names(
    listing: Sequence[os.DirEntry[str]],
    pattern: str | None,
    skipped: list[Skipped],
) -> tuple[list[_Entry], list[_Entry]]:
    """Sort the listed names into possible candidates, with and without a number in the name,
    using the names (and d_type) only."""
    import fnmatch

    def matches(name: str) -> bool:
        return pattern is None or fnmatch.fnmatch(name, pattern)

    everything = pattern is None

    numbered: list[_Entry] = []
    unnumbered: list[_Entry] = []
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
                entry = _Entry(dirent, name, dirent.path, "file", epoch, step)
                (unnumbered if epoch is None and step is None else numbered).append(entry)
        elif not is_dir and name.endswith(".index") and len(name) > len(".index"):
            prefix = name[: -len(".index")]
            if matches(name) or matches(prefix):
                epoch, step = parse_step(prefix)
                path = dirent.path[: -len(".index")]
                entry = _Entry(dirent, name, path, "tensorflow", epoch, step)
                (unnumbered if epoch is None and step is None else numbered).append(entry)
        elif is_dir and _ORBAX_TMP in name:
            if matches(name):
                skipped.append(Skipped(name, "in progress: Orbax temporary directory"))
        elif is_dir and matches(name):
            suffix = checkpoint_suffix(name)  # Lightning's sharded "epoch=3.ckpt/" directories
            epoch, step = parse_step(name[: -len(suffix)] if suffix else name)
            entry = _Entry(dirent, name, dirent.path, "dir", epoch, step)
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
        if exc.errno in _VANISHED:
            return False
        raise


def _tensorflow_shards(listing: Sequence[os.DirEntry[str]]) -> dict[str, set[tuple[int, int]]]:
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


def _rank_by_number(entries: Sequence[_Entry]) -> bool:
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


def _order_by_number(entries: list[_Entry]) -> Iterator[_Entry]:
    """Yield entries by rank, highest first; equal ranks by mtime (stat'ed only then)."""
    rank = operator.attrgetter("rank")
    entries.sort(key=rank, reverse=True)
    for _, group_iter in itertools.groupby(entries, key=rank):
        group = list(group_iter)
        if len(group) > 1:
            for entry in group:
                entry.mtime = _mtime(entry)
            group.sort(key=_BY_TIME, reverse=True)
        yield from group


def _mtime(entry: _Entry) -> float:
    try:
        return entry.dirent.stat().st_mtime
    except OSError as exc:
        if exc.errno in _VANISHED or isinstance(exc, PermissionError):
            return -math.inf  # sorts last; the probe reports why
        raise _unavailable(entry.path, exc) from exc


# (mtime, name) built in C: in mtime mode this key runs once per entry, 100,000 times.
_BY_TIME = operator.attrgetter("mtime", "name")


def _probe_logged(
    entry: _Entry, shards: dict[str, set[tuple[int, int]]], skipped: list[Skipped]
) -> str | None:
    """Return the layout of a complete entry; rejected ones go to ``skipped``, unknown ones
    are dropped."""
    try:
        result = _probe(entry, shards)
    except OSError as exc:
        if exc.errno in _VANISHED:
            skipped.append(Skipped(entry.name, "vanished while being examined"))
            return None
        if isinstance(exc, PermissionError):
            skipped.append(Skipped(entry.name, "unreadable: permission denied"))
            return None
        # Anything else (EIO, ETIMEDOUT) is the storage failing, not this checkpoint: going
        # back to an older checkpoint silently would throw work away.
        raise _unavailable(entry.path, exc) from exc
    if isinstance(result, Skipped):
        skipped.append(result)
        return None
    return result


def _probe(entry: _Entry, shards: dict[str, set[tuple[int, int]]]) -> str | Skipped | None:
    if entry.kind == "dir":
        return _probe_directory(entry.path, entry.name)
    info = entry.dirent.stat()
    if not stat.S_ISREG(info.st_mode):
        return Skipped(entry.name, "not a regular file")
    if info.st_size == 0:
        return Skipped(entry.name, "empty file")
    if entry.kind == "tensorflow":
        missing = _missing_shards(shards.get(entry.name[: -len(".index")], set()))
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
    have = {shard for shard, _ in present}
    absent = [i for i in range(total) if i not in have]
    if absent:
        return f"{len(absent)} of {total} data shards missing"
    return None


def _probe_directory(path: str, name: str) -> str | Skipped | None:
    """Return the layout of a complete checkpoint directory, a Skipped, or None if unknown.

    ================  ==========================================  ============================
    layout            complete when                               in progress
    ================  ==========================================  ============================
    huggingface       ``trainer_state.json`` (the Trainer saves   ``checkpoint-N`` without it
                      it last; transformers #35782)
    dcp               ``.metadata`` (written last, by rename)     ``*.distcp`` without it
    orbax             ``commit_success.txt``, or                  ``_CHECKPOINT_METADATA`` with
                      ``_CHECKPOINT_METADATA`` in a finalised     ``commit_timestamp_nsecs``
                      name whose commit timestamp is not null     null (commit-file mode)
    keras-backup      ``training_metadata.json`` beside           ``latest.weights.h5`` alone
                      ``latest.weights.h5``
    ================  ==========================================  ============================
    """
    names = set(os.listdir(path))
    if _HF_STATE in names:
        return "huggingface"
    if _DCP_METADATA in names:
        return "dcp"
    if _ORBAX_COMMIT in names:
        return "orbax"
    if _ORBAX_METADATA in names:
        problem = _orbax_uncommitted(os.path.join(path, _ORBAX_METADATA))
        return Skipped(name, problem) if problem else "orbax"
    if _KERAS_METADATA in names and _KERAS_WEIGHTS in names:
        return "keras-backup"
    if _KERAS_WEIGHTS in names:
        return Skipped(name, f"in progress: {_KERAS_WEIGHTS} without {_KERAS_METADATA}")
    if _KERAS_METADATA in names:
        return Skipped(name, f"incomplete: {_KERAS_METADATA} without {_KERAS_WEIGHTS}")
    if any(n.endswith(".distcp") for n in names):
        return Skipped(name, "in progress: *.distcp without .metadata")
    if _HF_NAME.match(name):
        return Skipped(name, f"in progress: {name} without {_HF_STATE}")
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

    try:
        with open(metadata_path, "rb") as f:
            metadata = json.loads(f.read(1 << 20))
    except ValueError:  # also UnicodeDecodeError
        return f"in progress: {_ORBAX_METADATA} is not valid JSON"
    if isinstance(metadata, dict) and metadata.get("commit_timestamp_nsecs", 0) is None:
        return f"in progress: not committed ({_ORBAX_METADATA} has no commit timestamp)"
    return None


def _verify_logged(candidate: Candidate) -> str | None:
    try:
        return verify_file(candidate.path)
    except OSError as exc:
        if exc.errno in _VANISHED:
            return "vanished while being verified"
        raise _unavailable(candidate.path, exc) from exc


_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PICKLE_PROTO = 0x80


def verify_file(path: str) -> str | None:
    """Check a checkpoint file's format deeply enough to catch truncation; None when it passes.

    Returns the reason it fails ("zip central directory missing", ...). Reads only headers and
    trailers, never the whole file. Formats without a cheap check (``.msgpack``, ``.joblib``,
    ``.tar`` that is not a torch file) pass.
    """
    suffix = checkpoint_suffix(os.path.basename(path)) or ""
    if suffix in (".pt", ".pth", ".ckpt", ".bin", ".tar"):
        return _verify_torch(path, allow_other=suffix == ".tar")
    if suffix in (".keras", ".npz"):
        return _verify_zip(path)
    if suffix in (".pkl", ".pickle"):
        return _verify_pickle(path)
    if suffix == ".safetensors":
        return _verify_safetensors(path)
    if suffix in (".h5", ".hdf5"):
        return _verify_hdf5(path)
    return None


def _head(path: str, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _verify_torch(path: str, *, allow_other: bool) -> str | None:
    head = _head(path, 4)
    if head.startswith(_ZIP_MAGIC):
        return _verify_zip(path)
    # torch.save before 1.6 (or with _use_new_zipfile_serialization=False) writes a pickle
    # stream followed by raw storages, so only its start can be checked.
    if len(head) >= 2 and head[0] == _PICKLE_PROTO and 2 <= head[1] <= 5:
        return None
    if allow_other:
        return None
    return "neither a zip archive nor a pickle"


def _verify_zip(path: str) -> str | None:
    import zipfile

    # The central directory is written last (torch.save, np.savez, Keras all go through a zip
    # writer), so its presence at the end of the file means the writer finished.
    try:
        with zipfile.ZipFile(path) as archive:
            if not archive.infolist():
                return "zip archive has no entries"
    except zipfile.BadZipFile as exc:
        return f"zip central directory missing or damaged ({exc})"
    return None


def _verify_pickle(path: str) -> str | None:
    with open(path, "rb") as f:
        first = f.read(2)
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
    if len(first) < 2 or first[0] != _PICKLE_PROTO or not 2 <= first[1] <= 5:
        return "does not start with a pickle protocol header"
    if last != b".":  # the STOP opcode ends every pickle stream
        return "pickle stream is truncated (no STOP opcode at the end)"
    return None


def _verify_safetensors(path: str) -> str | None:
    import json
    import struct

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw_length = f.read(8)
        if len(raw_length) < 8:
            return "shorter than the safetensors header length"
        (length,) = struct.unpack("<Q", raw_length)
        if length > size - 8:
            return "safetensors header runs past the end of the file"
        try:
            header = json.loads(f.read(length))
        except ValueError:
            return "safetensors header is not valid JSON"
    if not isinstance(header, dict):
        return "safetensors header is not a JSON object"
    end = 0
    for key, tensor in header.items():
        if key == "__metadata__":
            continue
        offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return f"safetensors tensor {key!r} has no data_offsets"
        end = max(end, int(offsets[1]))
    if size < 8 + length + end:
        return f"truncated: {size} bytes, tensors need {8 + length + end}"
    return None


def _verify_hdf5(path: str) -> str | None:
    import struct

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        # The superblock sits at 0, or after a user block of 512, 1024, 2048, ... bytes.
        offset = 0
        while True:
            f.seek(offset)
            block = f.read(96)
            if block.startswith(_HDF5_MAGIC):
                break
            offset = 512 if offset == 0 else offset * 2
            if offset >= size:
                return "no HDF5 signature"
    # The superblock records the end-of-file address; a shorter file was cut off. Its position
    # depends on the superblock version and the size of offsets (HDF5 file format spec, II.A).
    version = block[8]
    if version in (0, 1):
        width = block[13]
        base_at = 24 if version == 0 else 28
    elif version in (2, 3):
        width = block[9]
        base_at = 12
    else:
        return None  # a newer superblock: the signature is all we know how to check
    if width not in (2, 4, 8):
        return f"HDF5 superblock has an invalid offset size {width}"
    code = {2: "<H", 4: "<I", 8: "<Q"}[width]
    eof_at = base_at + 2 * width
    if len(block) < eof_at + width:
        return "truncated inside the HDF5 superblock"
    (base,) = struct.unpack_from(code, block, base_at)
    (eof,) = struct.unpack_from(code, block, eof_at)
    if eof == (1 << (8 * width)) - 1:
        return None  # "undefined address": not recorded
    if size < base + eof:
        return f"truncated: {size} bytes, the HDF5 superblock says {base + eof}"
    return None
