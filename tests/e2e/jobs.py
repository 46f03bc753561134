"""Run the examples the way users do: under runai-entry, requeued until they exit 0.

Everything is a real process in a session of its own, read line by line as it runs; whatever
happens, the whole session is SIGKILLed on the way out (and tests/conftest.py's autouse fixture
reaps anything that escaped it, torchrun workers included).
"""

from __future__ import annotations

import json
import os
import queue
import random
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

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PYTHON = sys.executable
ENTRY = [PYTHON, "-m", "runai_entry"]
TORCHRUN = [PYTHON, "-m", "torch.distributed.run"]

STOPPED = re.compile(r"stop signal \((\S+)\): saved step (\d+) ")
RESUMED = re.compile(r"^resumed from step-(\d+)\.pt at step (\d+)$")
FINISHED = re.compile(r"^finished: step (\d+), .*weights sha256 ([0-9a-f]{64})")
STEP = re.compile(r"^step (\d+) loss ")


def example(name: str) -> str:
    return str(EXAMPLES / name)


def job_env(**extra: str) -> dict[str, str]:
    """The test's environment without runai-entry's variables, set up for 2 small CPU cores."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNAI_ENTRY_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # also makes the weights comparable between runs
    env["GLOO_SOCKET_IFNAME"] = "lo"
    env["KERAS_BACKEND"] = "torch"
    env["RUNAI_ENTRY_LOG_FORMAT"] = "json"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def seeded_rng(name: str) -> random.Random:
    """A Random seeded from $E2E_SEED or at random; the seed is printed (pytest shows it on a
    failure) so that a failing sequence of preemptions can be replayed."""
    seed = int(os.environ.get("E2E_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{name}: E2E_SEED={seed}")
    return random.Random(seed)


class Process:
    """A process whose stdout and stderr (merged) are collected line by line as they come."""

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=env, cwd=str(REPO),
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._seen = 0
        self._eof = False
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
        if self._eof:
            return False
        try:
            line = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        if line is None:
            self._eof = True
            return False
        self.lines.append(line)
        return True

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
                self._eof or time.monotonic() >= deadline
            ):
                raise AssertionError(f"no line matching {regex.pattern!r} from {self.argv}:\n"
                                     + self.tail())

    def signal(self, signum: int = signal.SIGTERM) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = 180.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        while self._pull(5.0):
            pass
        return rc

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def output(self) -> str:
        return "\n".join(self.lines)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """runai-entry's JSON log events, all or those called ``name``."""
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


@contextmanager
def started(argv: Sequence[str], env: dict[str, str] | None = None) -> Iterator[Process]:
    """Start ``argv``; on the way out SIGKILL its whole session, pass or fail."""
    process = Process(argv, job_env() if env is None else env)
    try:
        yield process
    finally:
        process.kill()


def under_entry(checkpoint_dir: Path, command: Sequence[str], *options: str) -> list[str]:
    return [*ENTRY, "--checkpoint-dir", str(checkpoint_dir), *options, "--", *command]


_references: dict[tuple[str, ...], str] = {}


def reference_weights(command: Sequence[str], directory: Path) -> str:
    """The final weights' sha256 of ``command`` run once, uninterrupted, under runai-entry.

    Cached per command for the whole pytest run: several tests compare against the same run.
    """
    key = tuple(command)
    if key not in _references:
        with started(under_entry(directory, command)) as run:
            rc = run.wait()
            finished = run.matches(FINISHED)
            assert rc == 0 and finished, run.tail()
        _references[key] = finished[-1].group(2)
    return _references[key]


def stop_at_random_step(run: Process, rng: random.Random, start: int, spread: int) -> int:
    """Wait until the job has done a random step in (start, start + spread], then SIGTERM
    runai-entry a random fraction of a step later. Returns the step seen last."""
    target = start + rng.randint(1, spread)
    while True:
        step = int(run.expect(STEP).group(1))
        if step >= target:
            break
    time.sleep(rng.uniform(0.0, 0.02))
    run.signal(signal.SIGTERM)
    return step
