"""Attempt numbers and the attempt history, kept beside the checkpoints.

The state lives in ``<checkpoint-dir>/.runai-entry/`` (hidden, so checkpoint discovery never
sees it), because the checkpoint directory is the one place that survives a requeue onto another
node::

    .runai-entry/lock              flock'ed around every update (never replaced, so the lock
                                   always names the same inode)
    .runai-entry/attempt.<member>  how many times this member has started, one integer
    .runai-entry/history.jsonl     one JSON object per finished attempt

Attempt numbers. Every pod of a distributed job shares the directory and they all restart
together, so they must all get the same number. Each pod therefore counts its *own* starts under
its member name (:func:`member_of`): pod 0 and pod 3 both count 1, 2, 3 ..., whereas one shared
counter would hand them different numbers. The count is persisted before the job starts, so a
runai-entry that is SIGKILLed has still used its number (and leaves a gap in the history, which
is how such an attempt shows). A pod restarted on its own (a container restart) moves ahead of
its peers; the supervisor reports the number, it does not rely on it matching.

Locks are ``fcntl.flock``: Linux maps them to byte-range locks over NFSv4, so pods on different
nodes exclude each other. The counter is replaced atomically, by the one atomic
publish (:func:`runai_entry.core.atomicfile.atomic_write_bytes`: temporary file, fsync, rename,
fsync of the directory).

Every file here is opened through :mod:`runai_entry.history.statedir`, relative to one checked
descriptor of the directory, never following a link and using only regular files: the directory
is shared ground, and runai-entry runs as root.

Errors: a state directory that cannot be created or written, or that :mod:`.statedir` refuses,
raises :class:`HistoryUnavailable`. It is separate from
:class:`~runai_entry.core.errors.CheckpointDirUnavailable` on purpose: a read-only checkpoint mount
the job only resumes from must not stop the job, so the caller turns it into a warning (and runs
without ``RUNAI_ENTRY_ATTEMPT`` history), while an unreadable checkpoint directory stops it. A
refused state directory is treated alike: the job runs, its history is not kept, and the warning
says why.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from runai_entry.core import envvars
from runai_entry.core.atomicfile import atomic_write_bytes
from runai_entry.core.attempt_record import LATEST_EPOCH, AttemptRecord
from runai_entry.core.errors import ConfigError, RunaiEntryError, os_error_cause
from runai_entry.history.statedir import open_file as open_state_file
from runai_entry.history.statedir import opened_dir, path_in, read_file
from runai_entry.history.statedir import (
    state_dir as state_dir,  # re-exported: callers import it here
)

STATE_DIR = envvars.STATE_DIR
HISTORY_FILE = "history.jsonl"
LOCK_FILE = "lock"

#: Overrides the member name (any of ``[A-Za-z0-9_.-]``) when the platform's variables are wrong.
MEMBER_ENV = "RUNAI_ENTRY_MEMBER"
#: Where each platform puts the pod's index within the job, first match wins: Run:ai and
#: Kubernetes' pod-index label (``POD_INDEX``), Indexed Jobs and JobSet
#: (``JOB_COMPLETION_INDEX``), the Kubeflow training operator (``PET_NODE_RANK``), Lightning and
#: torchrun launchers (``NODE_RANK``, ``GROUP_RANK``), and ``RANK`` last: in a pod-per-rank job
#: it is the pod's rank, and runai-entry runs before any launcher rewrites it per process.
MEMBER_SOURCES = (
    MEMBER_ENV,
    "POD_INDEX",
    "JOB_COMPLETION_INDEX",
    "PET_NODE_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "RANK",
)
DEFAULT_MEMBER = "0"
#: Platform identifiers copied into each history record when set.
ID_SOURCES = (
    "JOB_UUID",
    "JOB_NAME",
    "RUNAI_JOB_NAME",
    "RUNAI_PROJECT",
    "POD_NAME",
    "POD_UID",
    "POD_NAMESPACE",
    "POD_INDEX",
    "NODE_NAME",
    "JOB_COMPLETION_INDEX",
)

_MEMBER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class HistoryUnavailable(RunaiEntryError):
    """``<checkpoint-dir>/.runai-entry/`` cannot be created or written (read-only mount, ...).

    The caller decides: usually a warning, since the checkpoints may still be readable.
    """


def member_of(environ: Mapping[str, str] = os.environ) -> str:
    """This pod's name among the pods of one job; see :data:`MEMBER_SOURCES`."""
    for name in MEMBER_SOURCES:
        value = environ.get(name, "").strip()
        if not value:
            continue
        if not _MEMBER_NAME.fullmatch(value) or value in (".", ".."):
            raise ConfigError(
                f"{name}={value!r} cannot name an attempt counter (use letters, digits, _ . -)"
            )
        return value
    return DEFAULT_MEMBER


def member_is_named(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the platform told this pod which member of the job it is (see
    :data:`MEMBER_SOURCES`): only then can members tell each other apart."""
    return any(environ.get(name, "").strip() for name in MEMBER_SOURCES)


def utc_now() -> str:
    """Now as ISO 8601 in UTC, to the millisecond (``2026-03-01T12:00:00.123+00:00``)."""
    return utc_timestamp(time.time())


def utc_timestamp(epoch_seconds: float) -> str:
    """``epoch_seconds`` as ISO 8601 in UTC, to the millisecond, like :func:`utc_now`.

    Total: a moment outside 1970-2200 (or NaN) is written as the nearest end of that window,
    so a bad clock reading cannot cost the attempt its history line.
    """
    from datetime import datetime, timezone

    if not 0.0 <= epoch_seconds <= LATEST_EPOCH:
        epoch_seconds = LATEST_EPOCH if epoch_seconds > 0 else 0.0
    return datetime.fromtimestamp(epoch_seconds, timezone.utc).isoformat(timespec="milliseconds")


class Clock(NamedTuple):
    """An attempt's start on both clocks: monotonic for durations, the epoch for the history."""

    monotonic: float
    epoch: float

    def epoch_of(self, monotonic: float) -> float:
        """A moment on the monotonic clock (a heartbeat's, say) as seconds since the epoch."""
        return self.epoch + (monotonic - self.monotonic)


def platform_ids(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The Run:ai / Kubernetes identifiers present in ``environ`` (see :data:`ID_SOURCES`)."""
    return {name: environ[name] for name in ID_SOURCES if environ.get(name)}


def count_attempt(
    checkpoint_dir: str | os.PathLike[str], environ: Mapping[str, str] = os.environ
) -> int:
    """Count one more start of this member and return the count (1 on the first run).

    Persisted (fsync'ed) before returning. Creates the checkpoint directory and its state
    directory if needed. Raises :class:`HistoryUnavailable` when they cannot be written.
    """
    counter = f"attempt.{member_of(environ)}"
    state = state_dir(checkpoint_dir)
    try:
        with opened_dir(checkpoint_dir, create=True) as dir_fd, _locked(dir_fd):
            previous = _read_count(dir_fd, counter)
            atomic_write_bytes(path_in(dir_fd, counter), f"{previous + 1}\n".encode())
    except OSError as exc:
        raise _unavailable(state, exc) from exc
    return previous + 1


def base_record(
    attempt: int | None, environ: Mapping[str, str] = os.environ, **fields: Any
) -> AttemptRecord:
    """The fields every history record carries, plus ``fields``: the one place a record is
    made.

    ``attempt`` (None when it could not be counted), ``member``, ``host``, ``pid``, ``ids``
    (platform identifiers). The supervisor adds the rest
    (:func:`runai_entry.supervisor.before_and_after.attempt_record`); a field neither gives is
    None.
    """
    import socket

    return AttemptRecord(attempt=attempt, member=member_of(environ), host=socket.gethostname(),
                         pid=os.getpid(), ids=platform_ids(environ), **fields)


def record_attempt(checkpoint_dir: str | os.PathLike[str], record: AttemptRecord) -> None:
    """Append ``record`` as one JSON line (:meth:`AttemptRecord.to_json`) to the history.

    The line goes out in one ``write`` on an ``O_APPEND`` descriptor, under the lock, so lines
    from several processes and pods never interleave; a torn line left by a writer killed
    mid-write is closed off first so it cannot swallow this one. Values JSON cannot represent
    are written as ``str()``. Raises :class:`HistoryUnavailable` when the history cannot be
    written.
    """
    line = json.dumps(record.to_json(), ensure_ascii=False, default=str,
                      separators=(",", ":")) + "\n"
    data = line.encode("utf-8", errors="surrogateescape")
    state = state_dir(checkpoint_dir)
    try:
        with opened_dir(checkpoint_dir, create=True) as dir_fd, _locked(dir_fd):
            fd = open_state_file(dir_fd, HISTORY_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT,
                                 in_place=True)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise _unavailable(state, exc) from exc


def read_history(checkpoint_dir: str | os.PathLike[str]) -> list[AttemptRecord]:
    """Every history record, oldest first, each checked by :meth:`AttemptRecord.from_json`; []
    when there is none yet.

    Lines that are not a JSON object (the torn end of a write cut short by a crash, bytes that
    are not UTF-8) are skipped. Raises :class:`HistoryUnavailable` when the history exists but
    cannot be read.
    """
    path = os.path.join(state_dir(checkpoint_dir), HISTORY_FILE)
    try:
        with opened_dir(checkpoint_dir) as dir_fd:
            raw = read_file(dir_fd, HISTORY_FILE)
    except FileNotFoundError:  # no state directory yet
        return []
    except OSError as exc:
        raise _unavailable(path, exc) from exc
    if raw is None:
        return []
    records: list[AttemptRecord] = []
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            # NaN and Infinity are Python's extensions to JSON: read as unknown.
            record = json.loads(line.decode("utf-8", errors="surrogateescape"),
                                parse_constant=lambda _: None)
        except (ValueError, RecursionError):  # torn, not JSON, over 4300 digits, nested deeply
            continue
        if isinstance(record, dict):
            records.append(AttemptRecord.from_json(record))  # checked once, for every reader
    return records


# -- files ----------------------------------------------------------------------------------------


@contextmanager
def _locked(dir_fd: int) -> Iterator[None]:
    fd = open_state_file(dir_fd, LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_count(dir_fd: int, name: str) -> int:
    raw = read_file(dir_fd, name, 64)
    if raw is None:
        return 0
    text = raw.decode("ascii", errors="replace").strip()
    if not text.isdigit():
        # Written by rename, so never torn: someone else wrote it. Refuse to guess.
        raise OSError(errno.EINVAL, f"{name!r} holds {text!r}, not an attempt count")
    return int(text)


def _write_all(fd: int, data: bytes) -> None:
    # os.write may write less than asked (a signal, a full disk about to fail); the lock keeps
    # other appenders out while the rest follows.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unavailable(where: str, exc: OSError) -> HistoryUnavailable:
    return HistoryUnavailable(f"cannot keep attempt history in {where!r}: {os_error_cause(exc)}")
