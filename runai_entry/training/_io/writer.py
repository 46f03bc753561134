"""The Checkpointer's background writer: one thread per write, at most one write in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class BackgroundWriter:
    """The background writer: one thread per write, at most one write in flight.

    A thread and not a process: the write is a few large ``os.write`` calls, each of which
    releases the GIL for its whole length, so the training thread keeps running (measured in
    bench/checkpointer_save.py; pickling writer threads hold the GIL for every tensor). The
    thread is not a daemon: an interpreter that exits with a write in flight finishes it first.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.seconds: float | None = None  # of the last finished write

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, write: Callable[[], None]) -> None:
        def run() -> None:
            started = time.perf_counter()
            try:
                write()
            except BaseException as exc:  # surfaces on the training thread, at the next step
                self.error = exc
            else:
                self.seconds = time.perf_counter() - started

        self.seconds = None
        self._thread = threading.Thread(target=run, name="runai-entry-checkpoint-writer")
        self._thread.start()

    def wait(self) -> float:
        """Block until the write in flight (if any) is done; the seconds waited."""
        if self._thread is None:
            return 0.0
        started = time.perf_counter()
        self._thread.join()
        self._thread = None
        return time.perf_counter() - started
