"""Who gets the stop signal (runai_entry/supervisor/delivery.py), with real processes and real
signals.

The owner (tests/probes/owner.py) handles SIGTERM and starts a probe child that prints every
signal it gets: a child signalled behind its owner's back is what kills a trainer's data workers.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest

from tests.harness.spawning import TESTS

OWNER = [sys.executable, str(TESTS / "probes" / "owner.py")]
FAST = ["--grace-period", "6s", "--kill-margin", "1s"]


def stopped(entry, *owner_args: str, pid1: bool = False):  # type: ignore[no-untyped-def]
    e = entry([*FAST, *OWNER, *owner_args], pid1=pid1)
    e.expect("owner ready")
    e.expect("child ready")
    e.wait_until_sleeping()
    e.signal(signal.SIGTERM)
    return e


@pytest.mark.parametrize("pid1", [False, True], ids=["subreaper", "pid1"])
def test_a_process_that_handles_it_owns_what_it_started(entry, pid1: bool) -> None:
    """The owner gets the stop signal; its child does not, and still runs while it saves."""
    e = stopped(entry, pid1=pid1)
    e.expect(re.escape("owner saved (child running)"))
    assert e.wait() == 1
    assert "owner signal SIGTERM (child running)" in e.lines
    assert "child signal SIGTERM" not in e.lines, e.lines
    assert e.event("preemption_started")["processes"] == [e.event("started")["pid"]]


def test_a_service_in_a_session_of_its_own_is_left_to_its_owner(entry) -> None:
    """A child in its own session is not a launcher's worker (W&B starts its service so)."""
    e = stopped(entry, "--detached")
    e.expect(re.escape("owner saved (child running)"))
    assert e.wait() == 1
    assert "child signal SIGTERM" not in e.lines, e.lines


def test_what_its_owner_left_behind_gets_it_when_the_owner_exits(entry) -> None:
    """An owner that exits without stopping its child leaves it to runai-entry: it gets the
    stop signal then, saves, and is waited for."""
    e = stopped(entry, "--on-stop", "leave")
    e.expect(re.escape("owner signal SIGTERM (child running)"))
    e.expect("child signal SIGTERM")
    e.expect("child saved")
    assert e.wait() == 1
    assert e.event("exit")["reason"] == "preempted"


@pytest.mark.parametrize("pid1", [False, True], ids=["subreaper", "pid1"])
def test_a_launcher_gets_it_after_its_workers(entry, pid1: bool) -> None:
    """torch elastic's agent killpg's its workers' sessions on SIGTERM: the worker gets the
    stop signal first, the agent once the worker is gone."""
    e = stopped(entry, "--launcher", pid1=pid1)
    e.expect("child signal SIGTERM")
    e.expect("child saved")
    e.expect(re.escape("owner signal SIGTERM (child gone)"))
    assert e.wait() == 1


def test_a_launcher_held_back_gets_it_at_half_the_budget(entry) -> None:
    """A worker that does not exit after the stop (a rank stuck in a collective with a peer
    that left) would hold its launcher until the deadline; the launcher, whose teardown ends
    such a rank, gets the stop signal once half the budget (5 s) has passed."""
    e = stopped(entry, "--launcher", "--stuck-child")
    e.expect("child signal SIGTERM")
    e.expect(re.escape("owner signal SIGTERM (child running)"))
    e.expect(re.escape("owner saved (child running)"))
    assert e.wait() == 1
    assert e.event("exit")["reason"] == "preempted"  # not killed at the deadline


def test_a_shell_without_a_trap_passes_it_on(entry, tmp_path: Path) -> None:
    """sh dies of the signal; the owner below it gets it too, and its child still does not."""
    owner = " ".join(OWNER)
    e = entry([*FAST, "sh", "-c", f"{owner}; echo after"])
    e.expect("owner ready")
    e.expect("child ready")
    e.wait_until_sleeping()
    e.signal(signal.SIGTERM)
    e.expect(re.escape("owner saved (child running)"))
    assert e.wait() == 1
    assert "child signal SIGTERM" not in e.lines, e.lines
