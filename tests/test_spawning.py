"""The harness every test and benchmark starts processes with (tests/spawning.py)."""

from __future__ import annotations

import json
import sys
import time

import pytest

from .spawning import PYTHON, spawn, start_entry


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
