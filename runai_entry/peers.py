"""Job-wide preemption: when one member of a job is preempted, every member is.

A Kubernetes scheduler preempts a multi-node job one pod at a time (a node drained or
reclaimed), and only that pod gets SIGTERM. Its peers' trainers then either stop at the step
their ranks agreed on and exit 0, which a PyTorchJob or Indexed Job counts as *succeeded* with
training half done, or die in the next collective without saving. So the members tell each
other, through the one place they share, the checkpoint directory::

    .runai-entry/preempting    JSON: member, attempt, host, token, at — the latest preemption

The member that gets SIGTERM writes it at once (atomically, by rename). Every member watches it
from a helper process (a hung mount must not hold the supervisor), re-opening it once a second:
an ``open`` rather than a ``stat``, because NFS revalidates a path on open (close-to-open
consistency) but may answer a ``stat`` from an attribute cache for up to a minute. A marker that
*changed* since this member's attempt began, written by someone else, is a peer's preemption:
the supervisor stops the job as if SIGTERM had come, and the attempt ends with the preempt code.
Markers from earlier attempts never count: their identity is the baseline taken before the start.

The marker is opened through :mod:`runai_entry.statefiles`: never through a link, never a FIFO.

Everything here runs inside helper processes (:mod:`runai_entry.helpers`) and never logs.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from runai_entry.history import state_dir, utc_now
from runai_entry.statefiles import open_dir, open_file, opened_dir, path_in
from runai_entry.training.atomic import atomic_write_bytes

MARKER = "preempting"
#: How often a watcher re-reads the marker: peers follow within about this long.
WATCH_INTERVAL = 1.0

#: (inode, mtime in ns, size) of the marker file: what "it changed" compares.
Identity = tuple[int, int, int]


class Membership(NamedTuple):
    """This member's part in job-wide preemption, fixed before the job starts."""

    directory: str
    member: str
    attempt: int | None
    token: str  # this run of runai-entry, so it never follows its own marker
    baseline: Identity | None  # the marker as it was before the start; None: no marker yet


def marker_path(directory: str) -> str:
    return os.path.join(state_dir(directory), MARKER)


def identity(directory: str) -> Identity | None:
    """The marker's identity now, or None when there is none yet."""
    fd = _open_marker(directory)
    if fd is None:
        return None
    try:
        return _identity(os.fstat(fd))
    finally:
        os.close(fd)


def _open_marker(directory: str) -> int | None:
    """A descriptor of the marker, or None when there is none (nor a state directory) yet."""
    try:
        dir_fd = open_dir(directory)
    except FileNotFoundError:
        return None
    try:
        return open_file(dir_fd, MARKER, os.O_RDONLY)
    except FileNotFoundError:
        return None
    finally:
        os.close(dir_fd)


def _identity(st: os.stat_result) -> Identity:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def new_token() -> str:
    return os.urandom(8).hex()


def announce(membership: Membership, cause: str) -> None:
    """Tell the peers this member is being preempted (run in a helper; may hang on storage)."""
    record = {
        "member": membership.member,
        "attempt": membership.attempt,
        "host": socket.gethostname(),
        "token": membership.token,
        "cause": cause,
        "at": utc_now(),
    }
    with opened_dir(membership.directory, create=True) as dir_fd:
        atomic_write_bytes(path_in(dir_fd, MARKER),
                           (json.dumps(record, separators=(",", ":")) + "\n").encode())


def peer_preemption(membership: Membership) -> dict[str, Any] | None:
    """A peer's preemption announced since the baseline, or None (one open, read if changed)."""
    fd = _open_marker(membership.directory)
    if fd is None:
        return None
    try:
        if _identity(os.fstat(fd)) == membership.baseline:
            return None
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        record = json.loads(raw)
    except ValueError:  # written by rename, so never torn: not ours to interpret
        return None
    if not isinstance(record, Mapping) or record.get("token") == membership.token:
        return None
    return dict(record)


def watch(membership: Membership, stage: Callable[[str], None],
          interval: float = WATCH_INTERVAL) -> dict[str, Any]:
    """Return once a peer's preemption is announced; until then re-read the marker each
    ``interval``. Errors are retried: a mount that blips must not end the watch."""
    stage(f"watching {marker_path(membership.directory)}")
    while True:
        try:
            found = peer_preemption(membership)
        except OSError:  # ESTALE, EIO from a recovering server: ask again next time
            found = None
        if found is not None:
            return found
        time.sleep(interval)
