"""A real child in a session of its own, its output read line by line as it comes, and its
whole tree SIGKILLed on the way out, pass or fail. Shared by the library and end-to-end tests
and by the benchmarks that run jobs (bench/chaos_soak.py).

(tests/conftest.py's ``Entry`` is the runai-entry-specific cousin: stdout and stderr apart, PID 1
under unshare. Its autouse fixture also reaps anything that escaped a session.)
"""

from __future__ import annotations

import json
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
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without runai-entry's variables, for 2 small cores, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNAI_ENTRY_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # keeps torch from oversubscribing 2 cores; same weights each run
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Child:
    """A running process whose stdout and stderr (merged) are collected line by line."""

    def __init__(self, proc: subprocess.Popen[str], argv: Sequence[str]) -> None:
        self.started = time.monotonic()
        self.proc = proc
        self.argv = list(argv)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._seen = 0
        self.eof = False
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _pull(self, timeout: float) -> bool:
        """Move one line into ``lines``; False at end of output or when ``timeout`` passes."""
        if self.eof:
            return False
        try:
            line = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        if line is None:
            self.eof = True
            return False
        self.lines.append(line)
        return True

    def next_line(self, deadline: float) -> str | None:
        """The next line not yet taken, or None at the end of the output or at ``deadline``."""
        if self._seen < len(self.lines) or self._pull(deadline - time.monotonic()):
            self._seen += 1
            return self.lines[self._seen - 1]
        return None

    def drain(self) -> None:
        """Take every line already written, without waiting."""
        while self._pull(0.0):
            pass

    def expect(self, pattern: str | re.Pattern[str], timeout: float = 120.0) -> re.Match[str]:
        """The next line, after those already looked at, matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.lines):
                match = regex.search(self.lines[self._seen])
                self._seen += 1
                if match:
                    return match
            if not self._pull(deadline - time.monotonic()) and (
                self.eof or time.monotonic() >= deadline
            ):
                raise AssertionError(f"no line matching {regex.pattern!r} from {self.argv}:\n"
                                     + self.tail())

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Signal the process itself (not its session)."""
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = 180.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        while self._pull(5.0):
            pass
        return rc

    def kill(self) -> None:
        """SIGKILL the whole tree (torchrun's workers lead sessions of their own) and the
        session, and reap the leader."""
        import psutil

        with suppress(psutil.NoSuchProcess):
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                with suppress(psutil.NoSuchProcess):
                    p.kill()
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def output(self) -> str:
        return "\n".join(self.lines)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """runai-entry's JSON log events among the lines, all or those called ``name``."""
        found = []
        for line in self.lines:
            if not line.startswith("{"):
                continue
            with suppress(json.JSONDecodeError):
                event = json.loads(line)
                if (isinstance(event, dict) and event.get("logger") == "runai-entry"
                        and (name is None or event.get("event") == name)):
                    found.append(event)
        return found

    def matches(self, regex: re.Pattern[str]) -> list[re.Match[str]]:
        return [m for m in map(regex.search, self.lines) if m]


def start(argv: Sequence[str], env: dict[str, str] | None = None,
          stdin: int = subprocess.DEVNULL) -> Child:
    """Run ``argv`` in a new session, stdout and stderr merged and read as they come."""
    proc = subprocess.Popen(list(argv), stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=child_env() if env is None else env, cwd=str(REPO),
                            start_new_session=True)
    return Child(proc, argv)


@contextmanager
def spawn(argv: Sequence[str], env: dict[str, str] | None = None,
          stdin: int = subprocess.DEVNULL) -> Iterator[Child]:
    """Run ``argv`` (see :func:`start`); on the way out SIGKILL its tree, pass or fail."""
    child = start(argv, env, stdin)
    proc = child.proc
    try:
        yield child
    finally:
        child.kill()
        if proc.stdin:
            with suppress(BrokenPipeError):
                proc.stdin.close()
