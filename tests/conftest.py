"""Shared fixtures: run the real runai-entry on real processes, and leave nothing behind.

The pytest process makes itself a child subreaper, so anything a test starts — even a daemon
that double-forks out of a killed runai-entry — is re-parented here, and the autouse fixture
can kill and reap every descendant after each test, passed or failed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from runai_entry.prctl import set_child_subreaper

TESTS = Path(__file__).parent
PROBE = str(TESTS / "probes" / "probe.py")
ENTRY = [sys.executable, "-m", "runai_entry"]

set_child_subreaper()


def kill_descendants() -> None:
    """SIGKILL every process below pytest, then reap them."""
    for _ in range(3):
        procs = psutil.Process().children(recursive=True)
        if not procs:
            break
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=5)
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    yield
    kill_descendants()


class Entry:
    """A running ``runai-entry`` whose stdout (the job's) and stderr (its logs) are read live."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None, pid1: bool = False) -> None:
        full_env = dict(os.environ, **(env or {}))
        full_env.setdefault("RUNAI_ENTRY_LOG_FORMAT", "json")
        argv = [*ENTRY, *args]
        if pid1:
            argv = ["unshare", "--fork", "--pid", "--mount-proc", *argv]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, env=full_env, cwd=cwd,
                                     start_new_session=True)
        self._arrived = threading.Condition()
        self._matched: set[int] = set()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout)),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr)),
        ]
        for t in self._readers:
            t.daemon = True
            t.start()
        self.pid1 = pid1

    def _read(self, stream: Any, sink: list[str]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._arrived:
                sink.append(line)
                self._arrived.notify_all()

    @property
    def pid(self) -> int:
        """The pid to signal: runai-entry itself, or, under unshare, the namespace's PID 1."""
        if not self.pid1:
            return self.proc.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            children = psutil.Process(self.proc.pid).children()
            if children:
                return children[0].pid
            time.sleep(0.01)
        raise AssertionError("unshare never started runai-entry")

    def expect(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        """Wait for a line of the job's stdout matching ``pattern``.

        Lines are matched in order but each at most once, and a line that arrived before the
        one awaited is not lost: ``expect("a ready"); expect("b ready")`` works whichever of
        the two processes printed first.
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for i, line in enumerate(self.stdout):
                    m = re.search(pattern, line)
                    if m and i not in self._matched:
                        self._matched.add(i)
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no line matching {pattern!r} in {self.stdout}; logs: {self.stderr}")
                self._arrived.wait(left)

    def expect_event(self, name: str, timeout: float = 15) -> dict[str, Any]:
        """Wait until runai-entry has logged the event ``name`` (JSON logs); return it."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = [e for e in self.logs() if e["event"] == name]
                if found:
                    return found[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {name!r} event in {self.logs()}")
                self._arrived.wait(left)

    def wait_until_sleeping(self, timeout: float = 15) -> None:
        """Block until runai-entry sleeps in sigtimedwait/sigwaitinfo: its loop is waiting."""
        wait_for_wchan(self.pid, "do_sigtimedwait", timeout)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 30) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            for t in self._readers:
                t.join(5)
        return rc

    def logs(self) -> list[dict[str, Any]]:
        """runai-entry's JSON log events (other stderr lines skipped)."""
        events = []
        for line in self.stderr:
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("logger") == "runai-entry":
                    events.append(event)
        return events

    def event(self, name: str) -> dict[str, Any]:
        found = [e for e in self.logs() if e["event"] == name]
        assert found, f"no {name!r} event in {self.logs()}"
        return found[-1]


def wait_for_wchan(pid: int, prefix: str, timeout: float = 15) -> None:
    """Block until ``pid`` sleeps in the kernel function ``prefix`` (/proc/PID/wchan)."""
    deadline = time.monotonic() + timeout
    while True:
        with open(f"/proc/{pid}/wchan") as f:
            if f.read().startswith(prefix):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{pid} never waited in {prefix}")
        time.sleep(0.005)


def signal_pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` is queued for ``pid`` (blocked and not yet taken)."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    return bool(pending & (1 << (signum - 1)))


@pytest.fixture
def entry() -> Iterator[type[Entry]]:
    """Start runai-entry with ``entry([...])``; every instance is killed with its tree after."""
    started: list[Entry] = []

    def start(args: Sequence[str], **kw: Any) -> Entry:
        e = Entry(args, **kw)
        started.append(e)
        return e

    yield start  # type: ignore[misc]
    for e in started:
        if e.proc.poll() is None:
            try:
                os.killpg(e.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            e.proc.wait(10)


def probe(*args: str) -> list[str]:
    """The argv of the probe job."""
    return [sys.executable, PROBE, *args]
