"""Retention of checkpoints and clean-up of dead writers' temporary files; the atomic writers.

The writers themselves (:func:`atomic_write`, :func:`atomic_open`, :func:`atomic_write_bytes`)
live in :mod:`runai_entry.core.atomicfile`, which runai-entry's own state files use too; they are
re-exported here, where training code has always found them.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runai_entry.core.atomicfile import (
    TEMP_PREFIX,
    atomic_open,
    atomic_write,
    atomic_write_bytes,
    fsync_directory,
    is_temp_name,
    temp_path_for,
)
from runai_entry.core.errors import VANISHED, ConfigError

if TYPE_CHECKING:
    from runai_entry.checkpoints import Candidate

__all__ = ["STALE_AFTER", "TEMP_PREFIX", "PruneResult", "atomic_open", "atomic_write",
           "atomic_write_bytes", "check_writable", "clean_stale_temps", "fsync_directory",
           "is_temp_name", "plan_retention", "prune", "temp_path_for"]

# A file someone else removed first: ENOENT locally, ESTALE from another NFS client.
#: A temporary file untouched this long (seconds) belongs to a writer that died.
STALE_AFTER = 3600.0


# -- retention ------------------------------------------------------------------------------------


@dataclass
class PruneResult:
    """What :func:`prune` did, by entry name (never full paths: nothing outside is touched)."""

    #: The newest ``keep`` complete checkpoints that verify, best first, as discovery orders them.
    kept: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    #: Deleted by someone else between our listing and our unlink (another rank, another job on
    #: the shared filesystem): the outcome we wanted, so not an error.
    vanished: list[str] = field(default_factory=list)
    #: Older checkpoints left alone because they are not regular files (directories, symlinks).
    not_files: list[str] = field(default_factory=list)
    #: Older than ``kept`` but left: the checkpoint this run resumed from (``protect``).
    protected: list[str] = field(default_factory=list)
    #: Entries named like checkpoints that fail verification (torn, cut short), with the reason:
    #: never counted towards ``keep``, never deleted (they may be someone's; --inspect shows them).
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: Entries the search's budget left unexamined (kept, and not counted).
    unexamined: int = 0

    def remark(self, directory: str | os.PathLike[str]) -> str | None:
        """One line on what retention left and why, for a warning; None when there is none."""
        if not self.failed and not self.unexamined:
            return None
        parts = []
        if self.failed:
            shown = ", ".join(f"{name!r} ({why})" for name, why in self.failed[:3])
            more = f" and {len(self.failed) - 3} more" if len(self.failed) > 3 else ""
            parts.append(f"{len(self.failed)} entries fail verification and are left in place, "
                         f"not counted towards keep: {shown}{more}")
        if self.unexamined:
            parts.append(f"{self.unexamined} older entries were not examined (the search's "
                         "budget ran out) and are left in place")
        return (f"retention in {os.fspath(directory)!r}: {'; '.join(parts)}; move damaged "
                "entries aside")


def plan_retention(directory: str | os.PathLike[str], keep: int, pattern: str | None = None,
                   protect: str | os.PathLike[str] | None = None,
                   ) -> tuple[PruneResult, list[Candidate]]:
    """What retention keeps (in the result) and the complete checkpoints it may delete.

    One definition for files (:func:`prune`) and DCP directories
    (:func:`runai_entry.training.dcp.prune_sharded`): discovery's order and completeness, with
    every file verified (:func:`runai_entry.checkpoints.discover` ``verify_all``), so a torn
    file never counts towards ``keep`` and the newest checkpoint that verifies is always kept;
    ``protect`` (the checkpoint this run resumed from, any spelling of its path) is never among
    those to delete.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the newest checkpoint is never deleted), not {keep}")
    if pattern is not None and ("/" in pattern or pattern.startswith(".")):
        raise ValueError(f"pattern {pattern!r} must be a plain, non-hidden file-name glob")
    from runai_entry.checkpoints import discover

    found = discover(directory, pattern=pattern, timeout=None, max_candidates=None,
                     verify_all=True)
    result = PruneResult(kept=[c.name for c in found.candidates[:keep]],
                         failed=[(s.name, s.reason) for s in found.skipped
                                 if s.failed_verification],
                         unexamined=found.gave_up)
    older = list(found.candidates[keep:])
    kept_back = _identity(protect)
    if kept_back is not None:
        for candidate in [c for c in older if _identity(c.path, follow=False) == kept_back]:
            older.remove(candidate)
            result.protected.append(candidate.name)
    return result, older


def _identity(path: str | os.PathLike[str] | None, *, follow: bool = True,
              ) -> tuple[int, int] | None:
    """The (device, inode) of ``path``: the same file whatever the spelling; None if absent."""
    if path is None:
        return None
    try:
        info = os.stat(path, follow_symlinks=follow)
    except (OSError, ValueError):  # gone, or a path that cannot name a file: protects nothing
        return None
    return info.st_dev, info.st_ino


def prune(directory: str | os.PathLike[str], keep: int, pattern: str | None = None, *,
          protect: str | os.PathLike[str] | None = None) -> PruneResult:
    """Delete all but the ``keep`` newest complete checkpoints in ``directory``.

    "Newest" and "complete" are decided by the same discovery runai-entry uses to choose the
    resume checkpoint (:func:`runai_entry.checkpoints.discover`), restricted to names matching
    ``pattern`` (a glob on the name alone), with every file's format verified, so retention can
    never delete the checkpoint the next run would resume from: files that fail verification
    never count towards ``keep`` and are never deleted (:attr:`PruneResult.failed`,
    :meth:`PruneResult.remark`). ``protect``: a checkpoint never deleted either (the one this
    run resumed from). ``keep`` is at least 1. Only regular files directly inside
    ``directory`` are deleted: symlinks and directories are neither followed nor removed
    (checkpoint directories, such as DCP's, count towards ``keep``). Hidden names (temporary
    files) are never candidates. Safe to run from several processes at once: a file another
    process deleted first is reported in ``vanished``.
    """
    result, older = plan_retention(directory, keep, pattern, protect)
    if not older:
        return result
    # Unlink relative to one open descriptor of the directory: a path component swapped for a
    # symlink meanwhile cannot redirect us outside the directory we listed.
    dir_fd = os.open(os.fspath(directory), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in (c.name for c in older):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    result.not_files.append(name)
                    continue
                os.unlink(name, dir_fd=dir_fd)
            except OSError as exc:
                # ESTALE: NFS's way of saying another client deleted it.
                if exc.errno not in VANISHED:
                    raise
                result.vanished.append(name)
            else:
                result.deleted.append(name)
        if result.deleted:
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return result


def clean_stale_temps(
    directory: str | os.PathLike[str], older_than: float = STALE_AFTER
) -> list[str]:
    """Delete this module's temporary files not modified for ``older_than`` seconds.

    They are what a writer killed mid-save leaves. Only names matching the module's own pattern
    and only regular files are touched; the age test protects a save in progress in another
    process (whose pid may live in another container, so it cannot be checked). Returns the
    names deleted.
    """
    removed = []
    now = time.time()
    dir_fd = os.open(os.fspath(directory), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in os.listdir(dir_fd):
            if not is_temp_name(name):
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < older_than:
                    continue
                os.unlink(name, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno not in VANISHED:
                    raise
                continue  # another process cleaned it, or its writer just renamed it
            removed.append(name)
    finally:
        os.close(dir_fd)
    return removed


def check_writable(directory: str) -> None:
    """Fail at construction, in one line, rather than at the first save an hour later."""
    try:
        os.makedirs(directory, exist_ok=True)
        probe = temp_path_for(os.path.join(directory, "write-probe"))
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"checkpoint directory {directory!r} cannot be written: {exc.strerror or exc}"
        ) from None
