"""Signal names, and which signals runai-entry takes over and forwards to the job."""

from __future__ import annotations

import signal

# Signals the kernel raises for a fault in the receiving process itself: they are about
# runai-entry, not requests to pass on (tini excludes the same set). SIGPIPE and SIGXFSZ come
# from runai-entry's own writes (its log reader went away, a file-size limit): left ignored, as
# Python sets them, the write fails instead; blocked, they would be queued and forwarded, and
# the job killed for our logging. SIGTTIN/SIGTTOU stop a background process that touches the
# terminal; forwarding them would stop the job for nothing.
_NOT_FORWARDED = {
    signal.SIGPIPE,
    signal.SIGXFSZ,
    signal.SIGFPE,
    signal.SIGILL,
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGABRT,
    signal.SIGTRAP,
    signal.SIGSYS,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGKILL,  # cannot be caught
    signal.SIGSTOP,  # cannot be caught
    signal.SIGCHLD,  # about our own children: handled, never forwarded
}


def forwarded_signals() -> frozenset[int]:
    """Every catchable signal that is forwarded to the job, real-time signals included."""
    return frozenset(s for s in signal.valid_signals() if s not in _NOT_FORWARDED)


def handled_signals() -> frozenset[int]:
    """What runai-entry takes over: the forwarded signals, and SIGCHLD to learn of exits."""
    return forwarded_signals() | {signal.SIGCHLD}


def block_handled_signals() -> None:
    """Block what the supervisor waits for, so each signal waits for sigtimedwait.

    Called first thing in ``main``: a SIGTERM that arrives while runai-entry is still starting
    must be queued for the supervisor (a preemption, exit 1), not kill it with the default
    action (exit 143, and a job started with no one to wait for its save). A blocked signal
    whose default is to be ignored (SIGCHLD, SIGWINCH) is queued instead of discarded too.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, handled_signals())


def unblock_handled_signals() -> None:
    """Give the signals back, for the paths that start no job (``--inspect``)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, handled_signals())


def parse_signal(text: str | int) -> signal.Signals:
    """``TERM``, ``SIGTERM``, ``sigterm`` or ``15`` → ``Signals.SIGTERM``; ValueError otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a signal")
    raw = str(text).strip()
    if raw.isdigit():
        try:
            return signal.Signals(int(raw))
        except ValueError:
            raise ValueError(f"{raw} is not a signal number on this system") from None
    name = raw.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        sig = signal.Signals[name]
    except KeyError:
        raise ValueError(f"{raw!r} is not a signal name (e.g. SIGTERM, USR1, 10)") from None
    return sig


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``SIGRTMIN+3`` for real-time signals; the number when unnamed."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        if signal.SIGRTMIN <= signum <= signal.SIGRTMAX:
            return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
        return str(signum)
