"""The harness every test and benchmark starts processes with (tests/harness/spawning.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.spawning import PYTHON, StillRunning, spawn, start_entry


def test_lines_are_taken_once_each_and_none_is_lost_to_a_race() -> None:
    with spawn(["sh", "-c", "echo b ready; echo a ready; echo a ready"]) as child:
        assert child.expect("a ready").group(0) == "a ready"
        assert child.expect("b ready").group(0) == "b ready"  # came first, still there
        child.expect("a ready")  # the second one
        with pytest.raises(AssertionError, match="no line matching 'a ready'"):
            child.expect("a ready")  # taken twice already; the output has ended
        assert child.wait() == 0


def test_next_line_follows_arrival_order_then_ends() -> None:
    with spawn(["sh", "-c", "echo one; echo two"]) as child:
        assert child.expect("two").group(0) == "two"
        deadline = time.monotonic() + 60
        assert child.next_line(deadline) == "one"  # the line expect passed over
        assert child.next_line(deadline) is None


def test_apart_keeps_the_logs_apart_from_the_output() -> None:
    event = json.dumps({"logger": "runai-entry", "event": "hello", "n": 1})
    code = f"import sys; print('out'); print({event!r}, file=sys.stderr)"
    with spawn([PYTHON, "-c", code], apart=True) as child:
        assert child.wait() == 0
        assert child.lines == ["out"]
        assert child.expect_event("hello")["n"] == 1
        assert child.events("other") == []


@pytest.mark.skipif(sys.platform != "linux", reason="PID namespaces are Linux's")
def test_pid1_signals_the_namespaces_pid_1() -> None:
    child = start_entry(["--", "sleep", "60"], pid1=True)
    try:
        child.wait_until_sleeping()
        with open(f"/proc/{child.pid}/status") as f:
            nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
        assert nspid[-1] == "1"  # PID 1 inside, which unshare itself is not
        child.signal()
        assert child.wait() == 1  # a SIGTERM to PID 1 is a preemption
        assert child.event("exit")["reason"] == "preempted"
    finally:
        child.kill()


LEAKY_TESTS = '''
import signal
import subprocess

import pytest


def test_a_job_process_that_outlives_a_killed_runai_entry(entry):
    # The sleep drops the attempt's token from its environment, out of the guardian's reach
    # (runai_entry/supervisor/guardian.py), as a process that clears its environment does.
    child = entry(["sh", "-c", "env -u RUNAI_ENTRY_JOB_TOKEN sleep 60 >/dev/null 2>&1 & "
                   "echo started; wait"])
    child.expect("started", timeout=60)
    child.signal(signal.SIGKILL)  # sh dies of its parent-death signal; sleep is orphaned
    child.wait()


@pytest.mark.leaves_processes("the same orphan, said to be on purpose")
def test_the_same_marked(entry):
    test_a_job_process_that_outlives_a_killed_runai_entry(entry)


def test_a_process_that_ends_within_the_settling_time():
    subprocess.Popen(["sleep", "0.3"])
'''


def test_a_test_that_leaves_a_process_fails_naming_it(tmp_path: Path) -> None:
    """The leak check (conftest.no_leftovers) on real processes, in a pytest of its own: the
    orphan of a SIGKILLed runai-entry fails its test, named by pid and command line, even
    though the test's own fixture stopped runai-entry; marked, it passes; either way it is
    killed. A process that exits a moment after its test is not a leak."""
    import subprocess

    from tests.harness.spawning import REPO, child_env

    (tmp_path / "conftest.py").write_text("from tests.conftest import entry, no_leftovers, "
                                          "pytest_configure  # noqa: F401\n")
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    r = subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                        "no:randomly", str(tmp_path)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, env=child_env(PYTHONPATH=str(REPO)))
    assert "3 passed, 1 error" in r.stdout, r.stdout[-3000:]
    assert "ERROR at teardown of test_a_job_process_that_outlives_a_killed_runai_entry" \
        in r.stdout, r.stdout[-3000:]
    assert re.search(r"pid \d+ \(sleep 60\), parent \d+", r.stdout), r.stdout[-3000:]


def test_a_wait_that_runs_out_says_what_the_process_wrote_last() -> None:
    """Still a TimeoutExpired (tests catch it), and its message shows the last lines: a wait that
    times out in CI says what the process was doing instead of only how long it took."""
    with spawn([PYTHON, "-c", "print('saving step 7', flush=True); import time; time.sleep(60)"]
               ) as child:
        child.expect("saving step 7")
        with pytest.raises(subprocess.TimeoutExpired) as caught:
            child.wait(timeout=0.5)
    assert isinstance(caught.value, StillRunning)
    assert "saving step 7" in str(caught.value)
