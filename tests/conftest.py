"""Shared fixtures: run the real runai-entry on real processes, and leave nothing behind.

The pytest process makes itself a child subreaper, so anything a test starts — even a daemon
that double-forks out of a killed runai-entry — is re-parented here. After each test, passed or
failed, the autouse fixture looks at what is still alive below pytest once the test's own
fixtures have stopped what they started (as dumb-init's tests do with ``living_pids``): a
process left there is a leak (a helper, a peer watcher or a job process that outlived
runai-entry), and the test fails naming it, unless it is marked
``@pytest.mark.leaves_processes("why")``. Either way everything is killed and reaped, so the
next test starts clean.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psutil
import pytest

from runai_entry.supervisor.prctl import set_child_subreaper
from tests.harness.spawning import Child, start_entry

set_child_subreaper()

#: How long what a test started may take to be gone after it ends: a parent-death signal, a
#: helper finishing its write, a process reaping its own children take a moment on busy cores.
SETTLE_SECONDS = 3.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "leaves_processes(reason): the test leaves processes running on purpose; "
        "they are killed after it instead of failing it")


def _reap() -> None:
    """Collect the exit status of every child of pytest that has exited (re-parented ones)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def living_descendants() -> list[psutil.Process]:
    """Every process below pytest that is still running (zombies are gone already)."""
    _reap()
    alive = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def settled(timeout: float) -> list[psutil.Process]:
    """What is still alive below pytest once ``timeout`` has passed, or sooner if nothing is."""
    deadline = time.monotonic() + timeout
    while (alive := living_descendants()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


def describe(p: psutil.Process) -> str:
    """``pid 123 (python -m runai_entry sleep 60), parent 99``: enough to tell whose it is."""
    try:
        return f"pid {p.pid} ({' '.join(p.cmdline())[:200]}), parent {p.ppid()}"
    except psutil.NoSuchProcess:
        return f"pid {p.pid} (gone while looking)"


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
    _reap()


@pytest.fixture(autouse=True)
def no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a process running; kill what it left either way."""
    yield
    marker = request.node.get_closest_marker("leaves_processes")
    if marker is not None:
        assert marker.args and marker.args[0], "leaves_processes needs the reason"
        kill_descendants()
        return
    left = [describe(p) for p in settled(SETTLE_SECONDS)]
    kill_descendants()
    if left:
        pytest.fail(f"{len(left)} process(es) still running {SETTLE_SECONDS:g}s after the "
                    f"test: " + "; ".join(left) + ". A leak of runai-entry's own, or mark the "
                    "test @pytest.mark.leaves_processes(reason).", pytrace=False)


@pytest.fixture
def entry() -> Iterator[Callable[..., Child]]:
    """Start runai-entry with ``entry([...], env=..., pid1=...)`` (spawning.start_entry); every
    one is killed with its tree after the test."""
    started: list[Child] = []

    def start(args: Sequence[str], **kw: Any) -> Child:
        started.append(start_entry(args, **kw))
        return started[-1]

    yield start
    for child in started:
        child.kill()
