"""Spawning helpers for the training-library tests: a real child in its own session, its output
read line by line with timeouts, and the whole process tree killed on the way out."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent.parent
PYTHON = sys.executable


def script(name: str) -> str:
    return str(SCRIPTS / name)


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without runai-entry's variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNAI_ENTRY_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # 2 cores: keep torch from oversubscribing them
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Child:
    """A running process whose merged stdout/stderr is collected by a reader thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._seen = 0
        self.eof = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _drain(self, timeout: float) -> bool:
        """Move one line into ``lines``; False at end of output or when ``timeout`` passes."""
        try:
            line = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        if line is None:
            self.eof = True
            self._queue.put(None)  # keep signalling the end to later calls
            return False
        self.lines.append(line)
        return True

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The next line (after those already matched) matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.lines):
                match = regex.search(self.lines[self._seen])
                self._seen += 1
                if match:
                    return match
            if not self._drain(deadline - time.monotonic()) and (
                self.eof or time.monotonic() >= deadline
            ):
                tail = "\n".join(self.lines[-30:])
                raise AssertionError(f"no line matching {pattern!r}; output:\n{tail}")

    def wait(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        while self._drain(1.0):
            pass
        return rc

    def output(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def spawn(argv: Sequence[str], env: dict[str, str] | None = None) -> Iterator[Child]:
    """Run ``argv`` in a new session; on exit SIGKILL its whole process group, pass or fail."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env if env is not None else child_env(),
        cwd=str(REPO),
        start_new_session=True,
    )
    try:
        yield Child(proc)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdin:
            with suppress(BrokenPipeError):
                proc.stdin.close()
