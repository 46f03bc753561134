"""Opening runai-entry's state directory, and the files in it, without trusting what is there.

runai-entry runs as root, and its state lives in ``<checkpoint-dir>/.runai-entry/``, on storage
that other jobs, other people, old versions of the job and half-finished copies also write.
Whatever is planted there must neither redirect a write nor hold a helper:

- ``.runai-entry`` is opened once, ``O_DIRECTORY|O_NOFOLLOW``, and every file in it is opened
  relative to that descriptor (``openat``), so a symbolic link in place of the directory, or one
  renamed over it while we work, cannot move our state elsewhere (``.runai-entry -> /etc``).
- Each file is opened ``O_NOFOLLOW`` (``history.jsonl -> /root/.bashrc`` is not appended to,
  ``lock -> /anywhere`` creates nothing there) and ``O_NONBLOCK`` (opening a FIFO for reading
  waits for a writer for ever; ``O_NONBLOCK`` is ignored for regular files, so it stays set),
  and only a regular file is used: its type is checked before the open (so a device node is
  never opened, which may act on the device) and again on the descriptor, after it.
- A file written in place (the history, appended to) must have no other name: a hard link to a
  file outside (``ln /etc/crontab history.jsonl`` on a filesystem without
  ``protected_hardlinks``) would otherwise be appended to.
- A directory any user may write (``o+w``) is refused, whoever owns it: anyone could plant
  records there. Another owner is not refused by itself: NFS with root squashing turns the
  directory root made into ``nobody``'s, and a job may run under another uid from one attempt to
  the next; only who may *write* it matters. Group write is allowed: OpenShift runs pods under an
  arbitrary uid in group 0 and shares directories through the group.

Every refusal is an :class:`OSError` whose text names the file and why, so the callers' handling
of an unwritable directory applies unchanged: the attempt runs, without history, with a warning
(a refused state directory is no reason to stop a job; exiting would let anyone who can plant
one symbolic link keep the job from ever running).

Only small standard modules are imported: the heartbeat reader, on the job's critical path, uses
this too.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from runai_entry.core.envvars import STATE_DIR

#: Made with this mode (less the umask): never writable by others, whatever the umask says, since
#: a directory others may write is refused.
DIR_MODE = 0o775
FILE_MODE = 0o644

#: Every file in the state directory is opened with these on top of what the caller asks.
_SAFE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def state_dir(checkpoint_dir: str | os.PathLike[str]) -> str:
    """Where runai-entry keeps its state: ``<checkpoint-dir>/.runai-entry``."""
    return os.path.join(os.fspath(checkpoint_dir), STATE_DIR)


def open_dir(checkpoint_dir: str | os.PathLike[str], *, create: bool = False) -> int:
    """A descriptor of the state directory, checked (see the module's docstring).

    ``create``: make it first (and the checkpoint directory) when absent. Raises
    :class:`FileNotFoundError` when it is absent and not to be made, and :class:`OSError` naming
    the reason when it is refused.
    """
    path = state_dir(checkpoint_dir)
    if create:
        try:
            os.makedirs(path, DIR_MODE, exist_ok=True)
        except FileExistsError:  # something else is there already: the open says what
            pass
    return _open_checked_dir(path, None, STATE_DIR)


def open_subdir(dir_fd: int, name: str, *, create: bool = False) -> int:
    """A descriptor of the directory ``name`` in the state directory ``dir_fd``, checked as the
    state directory itself is (see the module's docstring). ``create``: make it when absent."""
    if create:
        try:
            os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
        except FileExistsError:  # something else is there already: the open says what
            pass
    return _open_checked_dir(name, dir_fd, name)


def _open_checked_dir(path: str, dir_fd: int | None, shown: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError as exc:
        # A symbolic link gives ENOTDIR (O_DIRECTORY) or ELOOP (O_NOFOLLOW): say which it is.
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise _refused(os.stat(path, dir_fd=dir_fd, follow_symlinks=False), shown,
                           "a directory") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if mode & stat.S_IWOTH:
            raise OSError(errno.EPERM, f"{shown!r} may be written by any user (mode "
                          f"{stat.S_IMODE(mode):o}); runai-entry keeps no state in it "
                          "(chmod o-w, or remove it)")
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def opened_dir(checkpoint_dir: str | os.PathLike[str], *, create: bool = False) -> Iterator[int]:
    """:func:`open_dir` for the length of a ``with`` block."""
    fd = open_dir(checkpoint_dir, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def open_file(dir_fd: int | None, name: str, flags: int, *, in_place: bool = False) -> int:
    """A descriptor of the regular file ``name`` in the state directory ``dir_fd`` (None:
    ``name`` is a path, for a directory of our own such as the heartbeats').

    ``flags`` as for :func:`os.open` (``O_CREAT`` makes it, mode 644). ``in_place``: the file is
    to be written where it is, so it must have no other name. Raises :class:`FileNotFoundError`
    when it is absent, and :class:`OSError` naming the reason when it is refused.
    """
    try:
        _check(os.stat(name, dir_fd=dir_fd, follow_symlinks=False), name, in_place)
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            raise
    try:
        fd = os.open(name, flags | _SAFE, FILE_MODE, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # planted between the check and the open
            raise _refused(os.stat(name, dir_fd=dir_fd, follow_symlinks=False), name) from None
        raise
    try:
        _check(os.fstat(fd), name, in_place)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(dir_fd: int | None, name: str, limit: int = -1) -> bytes | None:
    """The content of ``name`` in the state directory (at most ``limit`` bytes when given);
    None when there is no such file. Raises :class:`OSError` when it is refused."""
    try:
        fd = open_file(dir_fd, name, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(limit)


def path_in(dir_fd: int, name: str) -> str:
    """A path to ``name`` in the directory ``dir_fd`` for code that takes paths (the library's
    one atomic publish: temporary file, rename, fsync of the directory). It resolves through the
    descriptor's ``/proc/self/fd`` link, so it names the directory opened and checked, whatever
    has been renamed over ``.runai-entry`` since."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def _check(st: os.stat_result, name: str, in_place: bool) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _refused(st, name)
    if in_place and st.st_nlink > 1:
        raise OSError(errno.EMLINK, f"{name!r} has {st.st_nlink} names (hard links); "
                      "runai-entry writes only a file that has no name elsewhere")


def _refused(st: os.stat_result, name: str, expected: str = "a regular file") -> OSError:
    if stat.S_ISLNK(st.st_mode):
        return OSError(errno.ELOOP, f"{name!r} is a symbolic link, which runai-entry never "
                       "follows in its state directory (remove it)")
    return OSError(errno.EINVAL, f"{name!r} is {_kind(st.st_mode)}, not {expected}, which is "
                   "all runai-entry uses in its state directory (remove it)")


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return kind
    return f"of type {stat.S_IFMT(mode):o}"
