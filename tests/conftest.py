"""Shared fixtures: run the real runai-entry on real processes, and leave nothing behind.

The pytest process makes itself a child subreaper, so anything a test starts — even a daemon
that double-forks out of a killed runai-entry — is re-parented here, and the autouse fixture
can kill and reap every descendant after each test, passed or failed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from runai_entry.prctl import set_child_subreaper

from .spawning import ENTRY, Child, signal_pending, start_entry, wait_for_wchan

__all__ = ["ENTRY", "PROBE", "TESTS", "probe", "signal_pending", "wait_for_wchan"]

TESTS = Path(__file__).parent
PROBE = str(TESTS / "probes" / "probe.py")

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


def probe(*args: str) -> list[str]:
    """The argv of the probe job."""
    return [sys.executable, PROBE, *args]
