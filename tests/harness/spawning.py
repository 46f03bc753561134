"""The one child-process harness of the tests and the benchmarks that run jobs: a real process in
a session of its own (PID 1 of a new PID namespace if asked), its output read line by line as it
comes, its whole tree SIGKILLed on the way out, pass or fail.
"""

from __future__ import annotations

import json
import os
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
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
ENTRY = [PYTHON, "-m", "runai_entry"]
#: The tests' folder, and the probe job: it prints ``ready`` and then one line per signal.
TESTS = REPO / "tests"
PROBE = str(TESTS / "probes" / "probe.py")


def probe(*args: str) -> list[str]:
    """The argv of the probe job."""
    return [sys.executable, PROBE, *args]


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without runai-entry's variables, for 2 small cores, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNAI_ENTRY_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # keeps torch from oversubscribing 2 cores; same weights each run
    env.update(extra)
    return env


def inspect_json(checkpoint_dir: Path) -> dict[str, Any]:
    """``runai-entry --inspect --json`` of a checkpoint directory, in the test's environment
    without runai-entry's variables (:func:`child_env`)."""
    shown = subprocess.run([*ENTRY, "--inspect", "--json", "--checkpoint-dir", str(checkpoint_dir)],
                           env=child_env(), capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    report: dict[str, Any] = json.loads(shown.stdout)
    return report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


class StillRunning(subprocess.TimeoutExpired):
    """A wait that ran out. A TimeoutExpired, as tests that expect it catch it, whose message
    also shows the process's last lines: a failure in CI then says what it was waiting for."""

    def __str__(self) -> str:
        return f"{super().__str__()}; its last lines:\n{self.output}"


class Child:
    """A running process whose output is collected line by line as it arrives.

    ``lines`` holds its stdout, and its stderr too unless ``apart`` kept that in ``stderr``
    (runai-entry's logs apart from its job's output). ``expect`` takes lines in arrival order,
    each at most once, and never loses one that arrived before the line awaited: with two
    processes printing, ``expect("a ready"); expect("b ready")`` works whichever came first.
    """

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None, stdin: int = subprocess.DEVNULL,
                 apart: bool = False, pid1: bool = False) -> None:
        self.argv = list(argv)
        self.pid1 = pid1
        if pid1:
            argv = ["unshare", "--fork", "--pid", "--mount-proc", *argv]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            list(argv), stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if apart else subprocess.STDOUT, text=True, errors="replace",
            env=child_env() if env is None else env, cwd=str(cwd or REPO),
            start_new_session=True)
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._logs = self.stderr if apart else self.lines
        self._taken: set[int] = set()
        self._first_untaken = 0  # where the next search starts: every line before is taken
        self._arrived = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines),
                                          daemon=True)]
        if apart:
            self._readers.append(threading.Thread(
                target=self._read, args=(self.proc.stderr, self.stderr), daemon=True))
        self._reading = len(self._readers)
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], sink: list[str]) -> None:
        for line in stream:
            with self._arrived:
                sink.append(line.rstrip("\n"))
                self._arrived.notify_all()
        with self._arrived:
            self._reading -= 1
            self._arrived.notify_all()

    @property
    def eof(self) -> bool:
        """Every stream has ended: no line will ever arrive again."""
        return self._reading == 0

    @property
    def pid(self) -> int:
        """The pid to signal: the process itself, or, under unshare, the namespace's PID 1."""
        if not self.pid1:
            return self.proc.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with suppress(FileNotFoundError, ProcessLookupError):
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    children = f.read().split()
                if children:
                    return int(children[0])
            time.sleep(0.01)
        raise AssertionError("unshare never started its child")

    def _take(self, pattern: re.Pattern[str] | None, timeout: float) -> re.Match[str] | str | None:
        """The first line not yet taken (matching ``pattern``, if given), marked taken; None at
        the end of the output or when ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for i in range(self._first_untaken, len(self.lines)):
                    if i in self._taken:
                        continue
                    match = pattern.search(self.lines[i]) if pattern else None
                    if pattern is None or match:
                        self._taken.add(i)
                        while self._first_untaken in self._taken:
                            self._first_untaken += 1
                        return match or self.lines[i]
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    return None
                self._arrived.wait(left)

    def expect(self, pattern: str | re.Pattern[str], timeout: float = 120.0) -> re.Match[str]:
        """The first line not yet taken that matches ``pattern``, waiting up to ``timeout``."""
        regex = re.compile(pattern)
        match = self._take(regex, timeout)
        if not isinstance(match, re.Match):
            raise AssertionError(f"no line matching {regex.pattern!r} from {self.argv}:\n"
                                 + self.tail() + ("\nstderr:\n" + "\n".join(self.stderr[-40:])
                                                  if self._logs is self.stderr else ""))
        return match

    def next_line(self, deadline: float) -> str | None:
        """The first line not yet taken, or None at the end of the output or at ``deadline``."""
        line = self._take(None, deadline - time.monotonic())
        assert not isinstance(line, re.Match)
        return line

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """runai-entry's JSON log events so far, all or those called ``name``."""
        found = []
        for line in list(self._logs):
            if not line.startswith("{"):
                continue
            with suppress(json.JSONDecodeError):
                event = json.loads(line)
                if (isinstance(event, dict) and event.get("logger") == "runai-entry"
                        and (name is None or event.get("event") == name)):
                    found.append(event)
        return found

    def event(self, name: str) -> dict[str, Any]:
        """The last event called ``name``, which must have been logged."""
        found = self.events(name)
        assert found, f"no {name!r} event in {self.events()}"
        return found[-1]

    def expect_event(self, name: str, timeout: float = 15) -> dict[str, Any]:
        """Wait until runai-entry has logged the event ``name``; return the last such."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not (found := self.events(name)):
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    raise AssertionError(f"no {name!r} event in {self.events()}")
                self._arrived.wait(left)
        return found[-1]

    def wait_until_sleeping(self, timeout: float = 15) -> None:
        """Block until runai-entry sleeps in sigtimedwait: its loop is waiting."""
        wait_for_wchan(self.pid, "do_sigtimedwait", timeout)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Signal the process (under unshare, the namespace's PID 1), not its session."""
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 180.0) -> int:
        """Its exit status, once it and every line it wrote have arrived. Past ``timeout``:
        :class:`StillRunning`, whose message holds the last lines it wrote."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise StillRunning(exc.cmd, exc.timeout, output=self.tail()) from None
        for reader in self._readers:
            reader.join(5)
        return rc

    def kill(self) -> None:
        """SIGKILL the whole tree (torchrun's workers lead sessions of their own) and the
        session, and reap the leader.

        Only while it runs: once it has exited by itself, whatever it left running is not
        touched here, so the tests' leak check (conftest.no_leftovers) sees it."""
        import psutil

        if self.proc.poll() is not None:
            self._close_stdin()
            return
        with suppress(psutil.NoSuchProcess):
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                with suppress(psutil.NoSuchProcess):
                    p.kill()
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self.proc.stdin:
            with suppress(BrokenPipeError):
                self.proc.stdin.close()

    def output(self) -> str:
        return "\n".join(self.lines)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def matches(self, regex: re.Pattern[str]) -> list[re.Match[str]]:
        return [m for m in map(regex.search, self.lines) if m]


def start(argv: Sequence[str], env: dict[str, str] | None = None,
          stdin: int = subprocess.DEVNULL, **kw: Any) -> Child:
    """Run ``argv`` in a new session (see :class:`Child` for ``kw``)."""
    return Child(argv, env=env, stdin=stdin, **kw)


def start_entry(args: Sequence[str], *, env: dict[str, str] | None = None,
                **kw: Any) -> Child:
    """Run ``runai-entry ARGS`` with JSON logs on stderr, kept apart from the job's stdout."""
    return Child([*ENTRY, *args], env=child_env(**{"RUNAI_ENTRY_LOG_FORMAT": "json",
                                                   **(env or {})}), apart=True, **kw)


@contextmanager
def spawn(argv: Sequence[str], env: dict[str, str] | None = None,
          stdin: int = subprocess.DEVNULL, **kw: Any) -> Iterator[Child]:
    """Run ``argv`` (see :func:`start`); on the way out SIGKILL its tree, pass or fail."""
    child = start(argv, env, stdin, **kw)
    try:
        yield child
    finally:
        child.kill()
