"""A SIGKILLed runai-entry leaves nothing running, whatever sessions the job made.

The command gets SIGKILL as its parent-death signal; a worker in a session of its own (as
torchrun starts them) does not, and trained on for nobody. The guardian
(runai_entry/supervisor/guardian.py) kills every process that carries the attempt's token once
runai-entry is gone.
"""

from __future__ import annotations

import os
import signal
import time

from tests.harness.spawning import probe


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether ``pid`` has exited (or is a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_worker_in_its_own_session_dies_with_a_sigkilled_runai_entry(entry) -> None:
    worker = " ".join(probe("--name", "worker"))
    e = entry(["sh", "-c", f"setsid {worker} & wait"])
    pid = int(e.expect(r"^worker ready (\d+)").group(1))
    assert os.getsid(pid) == pid  # in a session of its own: the parent-death signal misses it
    e.wait_until_sleeping()
    e.signal(signal.SIGKILL)
    assert gone(pid), "the worker outlived runai-entry"


def test_the_guardian_leaves_with_a_job_that_ends(entry) -> None:
    """After a normal end the guardian exits by itself: nothing is left (the conftest fails a
    test that leaves a process), and it killed nothing on its way out."""
    e = entry([*probe("--run-seconds", "0.5", "--exit-code", "3")])
    assert e.wait() == 3
    assert "probe finished" in e.lines
