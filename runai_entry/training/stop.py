"""The preemption flag: a signal handler that only records the stop request, and the time left.

On preemption runai-entry forwards its stop signal (``RUNAI_ENTRY_STOP_SIGNAL``, SIGTERM unless
configured) to every process of the job and SIGKILLs what is left ``RUNAI_ENTRY_STOP_TIMEOUT``
seconds later. The training loop asks :meth:`StopFlag.should_stop` between steps and saves there.

The handler does nothing but store the signal number and a monotonic timestamp. Saving inside a
handler fails intermittently (Lightning #21406: the handler runs between two arbitrary bytecodes,
possibly inside the optimizer step or inside another save), and calling ``exit`` there (the Run:ai
guide's snippet) throws away the step in flight. A repeated stop signal is therefore harmless: it
only sets the flag again, and the save it interrupts carries on.

Run without runai-entry (plain ``python train.py``) the flag listens for SIGTERM, and
:meth:`StopFlag.time_left` returns ``None`` because no deadline is known.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType

from runai_entry.core import envvars, signals
from runai_entry.core.errors import ConfigError
from runai_entry.training.heartbeat import heartbeat

# What signal.signal accepts and returns: a callable, SIG_DFL/SIG_IGN, or None for a handler
# installed from C.
_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


def parse_signal(text: str | int) -> signal.Signals:
    """``TERM``, ``SIGTERM``, ``sigterm``, ``15`` or ``15`` as int → ``Signals.SIGTERM``.

    Raises ConfigError for anything else: a flag listening for the wrong signal would let the job
    be killed without saving, so a bad value must stop the run at start-up, not be guessed at.
    """
    try:
        return signals.parse_signal(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def stop_signal_from_env() -> signal.Signals:
    """The signal runai-entry sends on preemption; SIGTERM (the kubelet's) when unset or empty."""
    value = os.environ.get(envvars.STOP_SIGNAL, "").strip()
    return parse_signal(value) if value else signal.SIGTERM


def stop_timeout_from_env() -> float | None:
    """Seconds from the stop signal to SIGKILL, or None when runai-entry did not say."""
    value = os.environ.get(envvars.STOP_TIMEOUT, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{envvars.STOP_TIMEOUT}={value!r} is not a number of seconds") from None
    if not seconds >= 0:  # also rejects NaN
        raise ConfigError(f"{envvars.STOP_TIMEOUT}={value!r} must be >= 0 seconds")
    return seconds


class StopFlag:
    """Records that a stop signal arrived; the training loop polls it between steps.

    ``signals`` defaults to the runai-entry stop signal (SIGTERM outside runai-entry). With
    ``interrupt=True`` SIGINT is a second stop signal, for Ctrl-C on a workstation: the first
    Ctrl-C asks for a clean stop, a second one raises KeyboardInterrupt as usual, so a hung save
    can still be abandoned (the atomic writer leaves the previous checkpoint untouched).

    ``timeout`` is the seconds from the signal to SIGKILL; by default ``RUNAI_ENTRY_STOP_TIMEOUT``.

    :meth:`install` replaces the current handlers and remembers them; :meth:`uninstall` puts them
    back. The previous handler is *not* called on arrival: the usual previous handlers are SIG_DFL
    (terminate: the very thing we are preventing) and ``default_int_handler`` (raise
    KeyboardInterrupt mid-step). Install from the main thread (Python runs handlers only there).
    """

    def __init__(
        self,
        signals: Iterable[int | str] | None = None,
        *,
        interrupt: bool = False,
        timeout: float | str | None = "env",
    ) -> None:
        chosen = [stop_signal_from_env()] if signals is None else [parse_signal(s) for s in signals]
        if interrupt and signal.SIGINT not in chosen:
            chosen.append(signal.SIGINT)
        self.signals: tuple[signal.Signals, ...] = tuple(chosen)
        self.interrupt = interrupt
        if timeout == "env":
            self.timeout: float | None = stop_timeout_from_env()
        elif isinstance(timeout, str):
            raise TypeError(f"timeout must be seconds, None or 'env', not {timeout!r}")
        else:
            self.timeout = timeout
        # Written only by _on_signal (first arrival) and request(); plain attribute stores are
        # atomic under the GIL and allocate nothing that could fail.
        self._signum: int | None = None
        self._arrived_at: float | None = None
        self._count = 0
        self._previous: dict[signal.Signals, _Handler] = {}

    # -- installation -------------------------------------------------------------------------

    def install(self) -> StopFlag:
        """Install the handlers (idempotent); returns self so ``flag = StopFlag().install()``."""
        for sig in self.signals:
            if sig not in self._previous:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def uninstall(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        while self._previous:
            sig, previous = self._previous.popitem()
            # None means the previous handler was installed from C and cannot be restored from
            # Python; SIG_DFL is the closest honest choice.
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def __enter__(self) -> StopFlag:
        return self.install()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # No I/O, no logging, no locks here: the handler may interrupt a write to the same stream
        # or a logging call holding its lock (reentrant print raises RuntimeError).
        self._count += 1
        if self._arrived_at is None:
            self._arrived_at = time.monotonic()
            self._signum = signum
        elif signum == signal.SIGINT and self.interrupt:
            raise KeyboardInterrupt

    # -- queries ------------------------------------------------------------------------------

    def request(self) -> None:
        """Ask for a stop from code (a NaN loss, a time budget); counts like a signal arrival."""
        if self._arrived_at is None:
            self._arrived_at = time.monotonic()

    def should_stop(self) -> bool:
        """True once a stop signal arrived (or :meth:`request` was called). Cheap: poll it often.

        Each call is also a heartbeat for runai-entry's hang watchdog (no system call): the loop
        that polls the flag between steps is the loop the watchdog must see alive.
        """
        heartbeat()
        return self._arrived_at is not None

    __bool__ = should_stop

    @property
    def signal(self) -> signal.Signals | None:
        """The signal that asked for the stop; None before, or after :meth:`request`."""
        return None if self._signum is None else signal.Signals(self._signum)

    @property
    def count(self) -> int:
        """How many stop signals arrived (the kubelet and runai-entry may both send one)."""
        return self._count

    @property
    def arrived_at(self) -> float | None:
        """``time.monotonic()`` when the stop was asked for, or None."""
        return self._arrived_at

    @property
    def deadline(self) -> float | None:
        """``time.monotonic()`` value of the expected SIGKILL, or None when unknown or not yet."""
        if self._arrived_at is None or self.timeout is None:
            return None
        return self._arrived_at + self.timeout

    def time_left(self) -> float | None:
        """Seconds until SIGKILL (never below 0), or None: no stop asked for, or no deadline known.

        Measured from the signal's arrival in this process on the monotonic clock, so it is a
        slight over-estimate by the forwarding delay; leave yourself a margin.
        """
        deadline = self.deadline
        if deadline is None:
            return None
        return max(0.0, deadline - time.monotonic())

    def __repr__(self) -> str:
        # Not should_stop(): printing the flag (a log line, a debugger) is not a training step,
        # and a beat from it would hide a hung loop from the watchdog.
        names = ",".join(s.name for s in self.signals)
        stop = self._arrived_at is not None
        return f"StopFlag(signals={names}, stop={stop}, timeout={self.timeout})"


def preemption(
    signals: Iterable[int | str] | None = None,
    *,
    interrupt: bool = False,
    timeout: float | str | None = "env",
) -> StopFlag:
    """Create and install a :class:`StopFlag`; use as ``with preemption() as flag:`` or plainly."""
    return StopFlag(signals, interrupt=interrupt, timeout=timeout).install()
