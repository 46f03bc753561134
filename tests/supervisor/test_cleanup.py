"""After the command exits by itself: leftovers are cleaned up; orphans are adopted and reaped."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from runai_entry.supervisor.guardian import NAME as GUARDIAN
from tests.harness.spawning import PROBE, probe


@pytest.mark.parametrize("pid1", [False, True], ids=["subreaper", "pid1"])
class TestLeftovers:
    def test_leftover_gets_sigterm_and_the_command_code_stands(self, entry, pid1: bool) -> None:
        """A background process left by the command gets SIGTERM; the exit code is the command's."""
        leftover = " ".join(probe("--name", "left", "--save-seconds", "0.2"))
        e = entry(["--cleanup-timeout", "5s", "sh", "-c", f"{leftover} & sleep 0.5; exit 3"],
                  pid1=pid1)
        e.expect("left ready")
        e.expect("left signal SIGTERM")
        e.expect("left saved")
        assert e.wait() == 3
        assert e.event("cleanup_started")["signal"] == "SIGTERM"
        assert e.event("exit")["reason"] == "failed"

    def test_leftover_ignoring_sigterm_is_killed_after_cleanup_timeout(self, entry,
                                                                      pid1: bool) -> None:
        """A leftover that ignores SIGTERM is SIGKILLed after --cleanup-timeout; code still 0."""
        leftover = " ".join(probe("--name", "left", "--ignore-term"))
        e = entry(["--cleanup-timeout", "1s", "sh", "-c", f"{leftover} & sleep 0.5"], pid1=pid1)
        e.expect("left ready")
        t0 = time.monotonic()
        assert e.wait() == 0
        assert 0.4 < time.monotonic() - t0 < 3
        assert e.event("escalated")["reason"] == "leftovers outlived cleanup"
        assert e.event("exit")["reason"] == "completed"

    def test_double_forked_daemon_is_adopted_and_cleaned_up(self, entry, tmp_path: Path,
                                                            pid1: bool) -> None:
        """A daemon that double-forks and leaves the session is still found and stopped."""
        pidfile = tmp_path / "daemon.pid"
        # The command returns only once the daemon has written its pid (atomically), so the
        # daemon is alive and known when the cleanup starts.
        daemon = (
            "import os,time\n"
            f"pidfile = {str(pidfile)!r}\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork(): os._exit(0)\n"
            "    with open(pidfile + '.tmp', 'w') as f: f.write(str(os.getpid()))\n"
            "    os.replace(pidfile + '.tmp', pidfile)\n"
            "    time.sleep(60)\n"
            "    os._exit(0)\n"
            "while not os.path.exists(pidfile): time.sleep(0.01)\n"
        )
        e = entry(["--cleanup-timeout", "1s", sys.executable, "-c", daemon], pid1=pid1)
        assert e.wait() == 0
        # The intermediate child may still be there too (exiting, or a zombie not yet reaped).
        leftovers = e.event("cleanup_started")["leftovers"]
        assert 1 <= len(leftovers) <= 2
        if not pid1:  # outside the namespace the pid means the same thing to us
            daemon = int(pidfile.read_text())
            assert daemon in leftovers
            assert not psutil.pid_exists(daemon) or \
                psutil.Process(daemon).status() == psutil.STATUS_ZOMBIE

    def test_process_staying_in_the_group_is_waited_for_during_preemption(
            self, entry, tmp_path: Path, pid1: bool) -> None:
        """When the direct child exits on SIGTERM, a saver still in its group is waited for."""
        ckpt = tmp_path / "c.pt"
        saver = f"{sys.executable} {PROBE} --name saver --save-seconds 1 --save-to '{ckpt}'"
        e = entry(["--grace-period", "4s", "--kill-margin", "1s", "sh", "-c",
                   f"{saver} & exec {sys.executable} {PROBE} --name main"], pid1=pid1)
        e.expect("saver ready")
        e.expect("main ready")
        e.signal(signal.SIGTERM)
        e.expect("main saved")
        e.expect("saver saved")
        assert e.wait() == 1
        assert ckpt.exists()
        assert e.event("exit")["reason"] == "preempted"


def job_children(pid: int) -> list[psutil.Process]:
    """runai-entry's children but its guardian (runai_entry/supervisor/guardian.py)."""
    found = []
    for child in psutil.Process(pid).children():
        try:
            if child.name() != GUARDIAN:
                found.append(child)
        except psutil.NoSuchProcess:  # an orphan reaped between the two looks
            continue
    return found


class TestOrphansAsSubreaper:
    def test_orphans_are_reaped_while_running(self, entry) -> None:
        """Orphans re-parented to runai-entry are reaped at once, never left as zombies."""
        e = entry(["sh", "-c", "for i in 1 2 3 4 5; do (sleep 0.1 &) ; done; echo started; "
                   "sleep 30"])
        e.expect("started")
        shell = e.expect_event("started")["pid"]
        # The orphans exit after 0.1 s; until runai-entry reaps them they stay its children, as
        # zombies. Wait for them to be gone (a reaper that never reaps fails here).
        deadline = time.monotonic() + 10
        while len(children := job_children(e.proc.pid)) > 1:
            assert time.monotonic() < deadline, f"not reaped: {children}"
            time.sleep(0.01)
        assert [c.pid for c in children] == [shell]
        e.signal(signal.SIGTERM)
        assert e.wait() == 1


class TestParentDeath:
    def test_command_dies_when_runai_entry_is_sigkilled(self, entry) -> None:
        """SIGKILL to runai-entry takes the command with it (parent-death signal)."""
        e = entry(probe())
        child = int(e.expect(r"ready (\d+)").group(1))
        os.kill(e.proc.pid, signal.SIGKILL)
        e.wait()
        gone = psutil.wait_procs([psutil.Process(child)], timeout=5)[0]
        assert gone, "the command outlived its supervisor"
