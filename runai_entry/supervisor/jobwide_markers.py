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
*changed* since this member's attempt began, written by someone else *for this attempt*, is a
peer's preemption: the supervisor stops the job as if SIGTERM had come, and the attempt ends with
the preempt code.

Markers from earlier attempts never count. One left unchanged is the baseline, taken before the
start. One that changed without being rewritten (a purge-avoidance script's ``touch``, ``rsync``
or ``cp -a`` putting the same bytes back under a new inode) still says when it was written, and
by which attempt: :func:`for_this_attempt` compares that with this attempt's start, allowing
:data:`CLOCK_SKEW` between the nodes' clocks. Attempt numbers alone cannot decide it: a member
restarted on its own (a container restart) counts ahead of its peers, and must still follow them.

The marker is opened through :mod:`runai_entry.history.statedir`: never through a link, never a
FIFO.

Everything here runs inside helper processes (:mod:`runai_entry.supervisor.storage_io`) and never
logs.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from runai_entry.core.atomicfile import atomic_write_bytes
from runai_entry.history.statedir import open_dir, open_file, opened_dir, path_in
from runai_entry.history.store import state_dir, utc_now

MARKER = "preempting"
#: How often a watcher re-reads the marker: peers follow within about this long.
WATCH_INTERVAL = 1.0
#: How far apart (seconds) the clocks of the job's nodes may be. A marker dated this long before
#: this attempt began, or this long in the future, was not written for this attempt. NTP keeps
#: a cluster's nodes well within it; a requeue takes longer (the pods are deleted, rescheduled).
CLOCK_SKEW = 60.0

#: (inode, mtime in ns, size) of the marker file: what "it changed" compares.
Identity = tuple[int, int, int]


class Membership(NamedTuple):
    """This member's part in job-wide preemption, fixed before the job starts."""

    directory: str
    member: str
    attempt: int | None
    token: str  # this run of runai-entry, so it never follows its own marker
    baseline: Identity | None  # the marker as it was before the start; None: no marker yet
    since: float  # when this attempt began, in seconds since the epoch (time.time())


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
    """A peer's preemption announced for this attempt since the baseline, or None (one open,
    read if changed)."""
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
    if not for_this_attempt(record, membership.attempt, membership.since, time.time()):
        return None
    return dict(record)


def for_this_attempt(record: Mapping[str, Any], attempt: int | None, since: float,
                     now: float) -> bool:
    """Whether a marker (``record``, as read) was written during the attempt ``attempt`` that
    began at ``since`` (seconds since the epoch; ``now`` likewise).

    Its ``at`` must lie within this attempt, give or take :data:`CLOCK_SKEW`; one that cannot be
    dated proves nothing. Within the allowance before ``since``, a marker from an attempt
    numbered below ours is the previous attempt's (a fast requeue), unless it is dated after
    ``since``: a member restarted on its own counts ahead of its peers, and follows them.
    """
    at = _epoch(record.get("at"))
    if at is None or not since - CLOCK_SKEW <= at <= now + CLOCK_SKEW:
        return False
    theirs = record.get("attempt")
    earlier = (type(theirs) is int and attempt is not None and theirs < attempt)
    return not (earlier and at < since)


def _epoch(at: object) -> float | None:
    """``at`` as written by :func:`~runai_entry.history.store.utc_now`, in seconds since the epoch;
    None when it is not such a time."""
    if not isinstance(at, str):
        return None
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return None
    return None if moment.tzinfo is None else moment.timestamp()


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
