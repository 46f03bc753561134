"""Files that survive a kill at any instant: temporary name, fsync, rename, directory fsync.

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
from collections.abc import Callable, Iterator
from typing import IO, Any

TEMP_PREFIX = ".runai-tmp."
# Only names this module made: prefix, pid, 8 hex digits, then the final name.
_TEMP_RE = re.compile(r"^\.runai-tmp\.(\d+)\.([0-9a-f]{8})\.(.+)$")


def temp_name_for(name: str, suffix: str = "") -> str:
    """A fresh temporary name for ``name`` in the same directory, unique across processes and
    hosts; ``suffix`` after the final name, for readers that take every file with its
    extension. The one shape of every temporary file runai-entry makes (:func:`is_temp_name`)."""
    return f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(4)}.{name}{suffix}"


def temp_path_for(path: str | os.PathLike[str], suffix: str = "") -> str:
    """A fresh temporary path in the directory of ``path`` (:func:`temp_name_for`)."""
    directory, name = os.path.split(os.fspath(path))
    if not name:
        raise ValueError(f"{os.fspath(path)!r} names a directory, not a file")
    return os.path.join(directory, temp_name_for(name, suffix))


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
