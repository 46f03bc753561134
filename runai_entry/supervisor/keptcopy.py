"""The last verified copy of a checkpoint the job rewrites in place, and a start over a torn one.

Many scripts keep one checkpoint file and rewrite it where it is (nanoGPT's
``out_dir/ckpt.pt``, written by ``torch.save`` with ``open(path, "wb")``). A SIGKILL during that
save (the OOM killer, the platform's SIGKILL after the grace period) leaves the only copy empty
or torn, verification rightly refuses it, and the job would start again from scratch. So, at
the start of an attempt, when the checkpoint chosen is such a file (its name carries no step
number, see :mod:`runai_entry.checkpoints.names`) and it verified, a copy is kept in
``<checkpoint-dir>/.runai-entry/kept/<name>``, and at a later start whose original fails
verification the job resumes from that copy instead.

The copy must cost little, since it is paid at every start whose file changed:

- a reflink (the ``FICLONE`` ioctl: XFS, btrfs, NFS 4.2 over either) shares the blocks, for any
  size, in a metadata operation;
- else ``copy_file_range``, which NFS 4.2 serves on the server and local filesystems copy in
  the kernel, only up to :data:`COPY_LIMIT` bytes and :data:`COPY_SECONDS` (measured in
  docs/benchmarks.md);
- else nothing: never a read/write copy through this process.

The copy is made only when the kept one differs from the original (size and mtime: the copy
takes the original's times), only with room for it and the job's next save, is verified on its
descriptor before it replaces the previous one, and is dropped when the original changed
during the copy. One copy is kept: copies of other names are removed. Everything in the state
directory is opened through :mod:`runai_entry.history.statedir`, never following a link.

Where no verified copy exists, a start from scratch over a torn checkpoint is never silent: a
warning names it, the history records it, the drill's verdict says it, and
``--refuse-fresh-start`` refuses it instead (exit 75).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from dataclasses import replace
from typing import Any, NamedTuple

from runai_entry.checkpoints import Candidate, Discovery, Skipped
from runai_entry.checkpoints.verify import verify_descriptor
from runai_entry.core.atomicfile import is_temp_name, temp_name_for
from runai_entry.core.envvars import STATE_DIR
from runai_entry.core.errors import FreshStartRefused, os_error_cause
from runai_entry.history import statedir

#: The kept copies' directory, inside the state directory.
KEPT_DIR = "kept"
#: The largest file copied with ``copy_file_range`` when a reflink is refused: the copy is paid
#: at every start, and this size stays under a second on a local disk (bench/kept_copy.py, in
#: docs/benchmarks.md).
COPY_LIMIT = 256 << 20
#: The longest a ``copy_file_range`` copy may take before it is given up (slower storage than
#: measured, or NFS without server-side copy, where the kernel copies over the network).
COPY_SECONDS = 5.0
#: ``_IOW(0x94, 9, int)``: clone the whole of a file (linux/fs.h).
FICLONE = 0x40049409
#: ``copy_file_range`` works in chunks of this size, so its time limit is checked between them.
_CHUNK = 16 << 20
#: errnos that say the filesystem cannot clone or copy this way: the next way is tried.
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV,
                          errno.ENOSYS, errno.EBADF, errno.ETXTBSY})
#: A temporary copy older than this was left by a helper killed mid-copy: removed.
_STALE_TEMP_SECONDS = 600.0

#: An event to log: level, event name, fields (before_and_after makes it a Note).
Event = tuple[str, str, dict[str, Any]]


class Start(NamedTuple):
    """What the start does about in-place checkpoints."""

    #: Discovery, with the kept copy chosen when the job resumes from it.
    discovery: Discovery
    events: list[Event]
    #: The torn original, when the job resumes from its kept copy.
    kept_copy_of: Skipped | None
    #: The torn checkpoints the job starts from scratch over (no verified copy of them).
    fresh_over: tuple[Skipped, ...]


def written_in_place(candidate: Candidate) -> bool:
    """A single file whose name carries no number: the job rewrites it under the same name."""
    return candidate.layout == "file" and candidate.step is None and candidate.epoch is None


def kept_path(directory: str, name: str) -> str:
    """Where the kept copy of ``name`` lives, as the job is handed it."""
    return os.path.join(directory, STATE_DIR, KEPT_DIR, name)


def at_start(directory: str, found: Discovery, *, verified: bool, refuse_fresh: bool,
             seconds: float = COPY_SECONDS) -> Start:
    """Resume from the kept copy of a torn original, or keep a copy of the chosen checkpoint.

    ``verified``: discovery verified the files (without it, nothing tells a torn file, and
    nothing is kept). Raises :class:`FreshStartRefused` when the job would start from scratch
    over a torn checkpoint and ``refuse_fresh``. Runs in the preparing helper.
    """
    torn = tuple(s for s in found.skipped if s.torn)
    events: list[Event] = []
    if verified:
        for skipped in torn:  # newest first, as discovery examined them
            candidate, problem = _usable_copy(directory, skipped.name, found.chosen)
            if candidate is not None:
                events.append(("warning", "resuming_from_kept_copy", {
                    "checkpoint": os.path.join(directory, skipped.name),
                    "problem": skipped.reason, "copy": candidate.path}))
                recovered = replace(found, chosen=candidate, candidates=(candidate,))
                return Start(recovered, events, skipped, ())
            if problem is not None:
                events.append(("warning", "kept_copy_unusable", {
                    "copy": kept_path(directory, skipped.name), "problem": problem}))
    chosen = found.chosen
    if verified and chosen is not None and written_in_place(chosen):
        events += _keep(directory, chosen, seconds)
    fresh_over = torn if chosen is None else ()
    if fresh_over and refuse_fresh:
        raise FreshStartRefused(
            f"checkpoint directory {directory!r}: {_names(fresh_over)} cannot be resumed from "
            f"({fresh_over[0].reason}) and no verified copy of it was kept; not starting from "
            "scratch over it (--refuse-fresh-start): restore a good copy, or move it aside to "
            "start fresh")
    if fresh_over:
        events.append(("warning", "starting_fresh_over_torn_checkpoint", {
            "checkpoint_dir": directory,
            "torn": [{"name": s.name, "reason": s.reason} for s in fresh_over],
            "consequence": "the job starts from scratch: the work these files held is lost",
            "instead": "--refuse-fresh-start exits 75 rather than start from scratch"}))
    return Start(found, events, None, fresh_over)


def _names(skipped: tuple[Skipped, ...]) -> str:
    return ", ".join(s.name for s in skipped)


def _usable_copy(directory: str, name: str,
                 chosen: Candidate | None) -> tuple[Candidate | None, str | None]:
    """The kept copy of ``name`` as the checkpoint to resume from, when it verifies and is
    newer than ``chosen`` (an older checkpoint discovery fell back to); else why not (None:
    there is no copy, or ``chosen`` is newer)."""
    try:
        with statedir.opened_dir(directory) as state_fd:
            kept_fd = statedir.open_subdir(state_fd, KEPT_DIR)
            try:
                fd = statedir.open_file(kept_fd, name, os.O_RDONLY)
            finally:
                os.close(kept_fd)
            try:
                mtime = os.fstat(fd).st_mtime
                problem = verify_descriptor(fd, name).problem
            finally:
                os.close(fd)
    except FileNotFoundError:  # no state directory, no kept directory, or no copy of it
        return None, None
    except OSError as exc:  # refused by statedir (a link, a FIFO), or unreadable
        return None, os_error_cause(exc)
    if problem is not None:
        return None, f"failed verification: {problem}"
    if chosen is not None and (chosen.mtime is None or chosen.mtime >= mtime):
        return None, None
    path = kept_path(directory, name)
    return Candidate(path, os.path.join(STATE_DIR, KEPT_DIR, name), "file", None, mtime), None


def _keep(directory: str, chosen: Candidate, seconds: float) -> list[Event]:
    """Copy the chosen checkpoint into the kept directory, when it costs little."""
    started = time.monotonic()
    try:
        with statedir.opened_dir(directory, create=True) as state_fd:
            kept_fd = statedir.open_subdir(state_fd, KEPT_DIR, create=True)
            try:
                done = _copy(chosen.path, chosen.name, kept_fd, seconds)
                _remove_others(kept_fd, chosen.name)
            finally:
                os.close(kept_fd)
    except OSError as exc:  # a refused or read-only state directory, ENOSPC, EIO
        return [("warning", "checkpoint_not_kept", {
            "checkpoint": chosen.path, "problem": os_error_cause(exc),
            "consequence": "a kill during its next save in place would leave no copy"})]
    if done is None:  # the copy was already up to date
        return []
    how, size = done
    fields = {"checkpoint": chosen.path, "bytes": size}
    if how in ("reflink", "copy_file_range"):
        return [("info", "checkpoint_kept", {
            **fields, "copy": kept_path(directory, chosen.name), "how": how,
            "seconds": round(time.monotonic() - started, 3)})]
    return [("info", "checkpoint_not_kept", {
        **fields, "reason": how,
        "consequence": "a kill during its next save in place would leave no copy"})]


def _copy(path: str, name: str, kept_fd: int, seconds: float) -> tuple[str, int] | None:
    """Copy ``path`` to ``name`` in ``kept_fd``: ``(how, size)``, where ``how`` is "reflink",
    "copy_file_range" or why it was not copied; None when the copy is already up to date."""
    src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        before = os.fstat(src)
        if not stat.S_ISREG(before.st_mode):
            return "not a regular file", before.st_size
        if _same(_stat_or_none(kept_fd, name), before):
            return None
        size = before.st_size
        fs = os.statvfs(kept_fd)
        if fs.f_bavail * fs.f_frsize < 2 * size:  # the copy, and room for the job's next save
            return (f"{fs.f_bavail * fs.f_frsize} bytes free, less than twice the "
                    "checkpoint's size"), size
        temp = temp_name_for(name)
        out = statedir.open_file(kept_fd, temp, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        try:
            how = _clone(src, out, size, seconds)
            problem = None if how in ("reflink", "copy_file_range") else how
            if problem is None:
                os.utime(out, ns=(before.st_atime_ns, before.st_mtime_ns))
                os.fsync(out)
                problem = _changed(before, os.fstat(src)) or verify_descriptor(out, name).problem
            if problem is None:
                os.replace(temp, name, src_dir_fd=kept_fd, dst_dir_fd=kept_fd)
                os.fsync(kept_fd)
                return how, size
            os.unlink(temp, dir_fd=kept_fd)
            return problem, size
        except BaseException:
            _unlink(kept_fd, temp)
            raise
        finally:
            os.close(out)
    finally:
        os.close(src)


def _clone(src: int, out: int, size: int, seconds: float) -> str:
    """Clone or copy ``src`` into ``out`` within ``seconds``: how, or why not."""
    deadline = time.monotonic() + seconds
    try:
        fcntl.ioctl(out, FICLONE, src)
        return "reflink"
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
    if size > COPY_LIMIT:
        return (f"{size} bytes, over the copy bound of {COPY_LIMIT} bytes (copy_file_range "
                "at every start), and the filesystem cannot reflink")
    done = 0
    while done < size:
        if time.monotonic() > deadline:
            return f"copy_file_range did not finish within {seconds:g}s"
        try:
            n = os.copy_file_range(src, out, min(_CHUNK, size - done), done, done)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            return f"the filesystem cannot copy_file_range ({os_error_cause(exc)})"
        if n == 0:
            return "shorter than its size while being copied"
        done += n
    return "copy_file_range"


def _same(kept: os.stat_result | None, original: os.stat_result) -> bool:
    """Whether the kept copy is of the original as it is now (the copy took its mtime)."""
    return kept is not None and stat.S_ISREG(kept.st_mode) and \
        (kept.st_size, kept.st_mtime_ns) == (original.st_size, original.st_mtime_ns)


def _changed(before: os.stat_result, after: os.stat_result) -> str | None:
    keys = ("st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
    if any(getattr(before, k) != getattr(after, k) for k in keys):
        return "it changed while being copied"
    return None


def _stat_or_none(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove_others(kept_fd: int, name: str, now: float | None = None) -> None:
    """One copy is kept: those of other names go, and temporary ones left by a helper killed
    mid-copy (another member's, copying now, is younger than :data:`_STALE_TEMP_SECONDS`)."""
    now = time.time() if now is None else now
    for other in os.listdir(kept_fd):
        st = _stat_or_none(kept_fd, other)
        if other == name or st is None or stat.S_ISDIR(st.st_mode):
            continue
        if is_temp_name(other) and now - st.st_ctime < _STALE_TEMP_SECONDS:
            continue
        _unlink(kept_fd, other)


def _unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:  # removed meanwhile (another member's start)
        pass


def history_fields(start: Start) -> dict[str, Any]:
    """The history's fields for what the start did about a torn checkpoint."""
    return {
        "kept_copy_of": None if start.kept_copy_of is None else start.kept_copy_of.name,
        "fresh_over_torn": [{"name": s.name, "reason": s.reason} for s in start.fresh_over],
    }
