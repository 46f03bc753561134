"""Starting the command: its own process group, a clean signal state, a parent-death signal.

We fork and exec ourselves rather than use :mod:`subprocess`: the child must start with an empty
signal mask (runai-entry blocks every signal it forwards, and a blocked mask survives exec — a
trainer whose SIGTERM is blocked never saves), default dispositions, its own process group,
the terminal's foreground when runai-entry had it, and PR_SET_PDEATHSIG — all between fork and
exec, where subprocess offers only ``preexec_fn``. Exec failures come back through a close-on-exec
pipe, as in subprocess (``_posixsubprocess``): EOF means the exec succeeded.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Mapping, Sequence

from runai_entry.core.errors import EXIT_NOT_FOUND, SpawnError
from runai_entry.supervisor.exitcodes import spawn_failure

# The kernel refuses to change the disposition of these two. glibc's two reserved real-time
# signals (32 and 33, for its threads) need no entry: valid_signals() is built with sigfillset,
# which leaves them out.
_UNCHANGEABLE = {signal.SIGKILL, signal.SIGSTOP}


def spawn(argv: Sequence[str], env: Mapping[str, str], *, parent_death_signal: bool) -> int:
    """Fork and exec ``argv``; return its pid once the exec has succeeded.

    The child leads a new process group (pgid == pid). Raises :class:`SpawnError` with exit code
    127 (not found) or 126 (found but not executable) and a one-line message naming the command.
    The caller must have blocked the signals it waits for: the child inherits that mask until
    the moment before exec, so no signal is handled by Python code in the forked child.
    """
    if parent_death_signal:
        from runai_entry.supervisor.prctl import set_parent_death_signal  # loads libc before fork
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    parent = os.getpid()
    take_terminal = _owns_terminal()
    pid = os.fork()
    if pid == 0:  # the child: nothing here may return into the parent's code
        try:
            os.close(read_end)
            os.setpgid(0, 0)
            if take_terminal:
                _take_terminal_foreground()
            if parent_death_signal:
                set_parent_death_signal(signal.SIGKILL)
                if os.getppid() != parent:  # the parent died before prctl: it will never fire
                    os._exit(EXIT_NOT_FOUND)
            _reset_signals()
            os.execvpe(argv[0], list(argv), dict(env))
        except OSError as exc:
            os.write(write_end, str(exc.errno or errno.ENOEXEC).encode())
        finally:
            os._exit(EXIT_NOT_FOUND)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read()
    if not report:
        return pid
    os.waitpid(pid, 0)
    raise _spawn_error(argv[0], int(report))


def _owns_terminal() -> bool:
    """True when stdin is a terminal whose foreground group is runai-entry's own."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:  # ENOTTY: no controlling terminal
        return False


def _take_terminal_foreground() -> None:
    """Make the child's group the terminal's foreground, so it can read stdin and gets ^C.

    Its group is not runai-entry's, so without this a job that reads the terminal (pdb, a
    prompt) is stopped by SIGTTIN. tcsetpgrp from a group that is not yet foreground raises
    SIGTTOU, hence the brief SIG_IGN.
    """
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(0, os.getpgrp())
    except OSError:  # ENOTTY/EPERM: the terminal went away or is not ours; run without it
        pass
    signal.signal(signal.SIGTTOU, signal.SIG_DFL)


def _reset_signals() -> None:
    """Default dispositions first, then the empty mask: nothing Python installed may run here."""
    for signum in signal.valid_signals():
        if signum in _UNCHANGEABLE:
            continue
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):  # EINVAL: a C library that lists a signal it reserves
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _spawn_error(command: str, err: int) -> SpawnError:
    not_found = err in (errno.ENOENT, errno.ENOTDIR)
    code, outcome = spawn_failure(not_found)
    if not_found:
        return SpawnError(f"command not found: {command}", code, outcome.value)
    return SpawnError(f"cannot execute {command}: {os.strerror(err)}", code, outcome.value)
