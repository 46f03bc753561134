"""Checkpoint files that survive a kill at any instant, retention, and clean-up of dead writers.

A checkpoint under its final name is always complete: the writer writes a temporary file in the
same directory, the bytes are fsynced, ``os.replace`` gives it the final name (atomic within one
filesystem), and the directory is fsynced so the rename itself survives a crash. Writing in place
(the Run:ai guide's ``ModelCheckpoint("weights.best.hdf5")``) leaves a torn file when the SIGKILL
lands mid-write, and resuming from it crashes (transformers #35782, "failed finding central
directory").

Temporary names are hidden and carry the final name at the end:
``.runai-tmp.<pid>.<token>.<final name>``. Hidden, so checkpoint discovery and shell globs never
pick them; the final name last, so writers that insist on an extension (Keras ``.keras``,
``.weights.h5``) accept the temporary path.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from runai_entry.errors import VANISHED, ConfigError

if TYPE_CHECKING:
    from runai_entry.checkpoints import Candidate

TEMP_PREFIX = ".runai-tmp."
# Only names this module made: prefix, pid, 8 hex digits, then the final name.
_TEMP_RE = re.compile(r"^\.runai-tmp\.(\d+)\.([0-9a-f]{8})\.(.+)$")
# A file someone else removed first: ENOENT locally, ESTALE from another NFS client.
#: A temporary file untouched this long (seconds) belongs to a writer that died.
STALE_AFTER = 3600.0


def temp_path_for(path: str | os.PathLike[str], suffix: str = "") -> str:
    """A fresh temporary path in the directory of ``path``, unique across processes and hosts;
    ``suffix`` after the final name, for readers that take every file with its extension."""
    directory, name = os.path.split(os.fspath(path))
    if not name:
        raise ValueError(f"{os.fspath(path)!r} names a directory, not a file")
    unique = f"{os.getpid()}.{secrets.token_hex(4)}"
    return os.path.join(directory, f"{TEMP_PREFIX}{unique}.{name}{suffix}")


def is_temp_name(name: str) -> bool:
    """True for a temporary name this module creates (and may therefore delete when stale)."""
    return _TEMP_RE.match(name) is not None


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(os.fspath(directory) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    # The writer may have closed the file without fsync (torch.save, Keras and h5py do);
    # fsync through a new descriptor flushes the same inode's dirty pages.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    # Only "already gone" is expected here; anything else (EACCES, EIO) is the caller's to see.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def atomic_write(path: str | os.PathLike[str], writer: Callable[[str], object]) -> str:
    """Run ``writer(temp_path)``, then give the result the final name ``path`` atomically.

    ``writer`` is any callable that writes one file to the path it is given:
    ``lambda p: torch.save(state, p)``, ``model.save``, ``model.save_weights``, ``np.save``.
    If it raises (or the process is interrupted by an exception), the temporary file is removed
    and ``path`` keeps its previous content. Returns ``path`` as a string.
    """
    final = os.fspath(path)
    directory = os.path.dirname(final) or "."
    tmp = temp_path_for(final)
    try:
        writer(tmp)
        if not os.path.isfile(tmp):
            raise RuntimeError(f"the writer did not write a file at {tmp!r}")
        _fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-save must not leave a temp file behind either.
        _remove_quietly(tmp)
        raise
    fsync_directory(directory)
    return final


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", *, temp_suffix: str = "",
                **kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_open(path) as f: f.write(...)``: ``path`` appears complete, or not at all.
    ``temp_suffix``: see :func:`temp_path_for`."""
    if not mode.startswith(("w", "x")):
        raise ValueError(f"atomic_open writes a new file; mode {mode!r} is not a write mode")
    final = os.fspath(path)
    tmp = temp_path_for(final, temp_suffix)
    try:
        with open(tmp, mode.replace("x", "w"), **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_directory(os.path.dirname(final) or ".")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, temp_suffix: str = "") -> str:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a string."""
    with atomic_open(path, "wb", temp_suffix=temp_suffix) as f:
        f.write(data)
    return os.fspath(path)


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
