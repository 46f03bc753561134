"""The hang watchdog, with real jobs that beat (runai_entry.training.heartbeat) and then stop.

Each job is a small Python program; the watchdog's timeouts are a second or two so the tests
stay short. What is checked: a job that stops beating is stopped, with its stack in the log and
the hang code; a slow first step, a save within --save-timeout and a job that never beats are
left alone; a heartbeat file written from outside the job is ignored.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from runai_entry.supervisor import watchdog
from tests.e2e.jobs import TORCHRUN, job_env, started

BEATS_THEN_HANGS = """
import time
from runai_entry.training import heartbeat
for step in range(1, 6):
    heartbeat(step)
    time.sleep(0.05)
def stuck_in_here():
    time.sleep(3600)
print("hanging now", flush=True)
stuck_in_here()
"""


def job(source: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(source)]


def test_a_job_that_stops_beating_is_stopped_with_its_stack_logged(entry,
                                                                   tmp_path: Path) -> None:
    """hang_detected names the process, its step and the beat's age; faulthandler's dump shows
    the frame it hangs in; the job is stopped; exit with the hang code; history says hung."""
    ck = tmp_path / "ck"
    e = entry(["--hang-timeout", "1s", "--checkpoint-dir", str(ck), "--",
               *job(BEATS_THEN_HANGS)])
    pid = e.proc.pid
    assert e.wait(timeout=60) == 1
    hang = e.event("hang_detected")
    assert hang["step"] == 5
    assert hang["last_beat_age"] >= 1.0  # never early
    assert hang["pid"] != pid  # the job's process, not runai-entry
    # What each job process was doing: the hung one asleep (time.sleep: not spinning, not in
    # uninterruptible sleep), with the kernel function it waits in.
    (hung,) = [p for p in hang["processes"] if p["pid"] == hang["pid"]]
    assert hung["state"].startswith("S: asleep"), hang["processes"]
    assert hung["waiting_in"] and hung["cpu_s"] >= 0
    assert any("stuck_in_here" in line for line in e.stderr), e.stderr
    assert e.event("exit")["reason"] == "hung"
    record = json.loads((ck / ".runai-entry" / "history.jsonl").read_text().splitlines()[-1])
    assert record["outcome"] == "hung"
    assert record["hang"]["step"] == 5


@pytest.mark.skipif(watchdog.py_spy() is None, reason="py-spy is not installed")
def test_py_spy_dump_when_installed(entry) -> None:
    """With py-spy installed, each job process's stack is also logged as a stack_dump event."""
    e = entry(["--hang-timeout", "1s", "--", *job(BEATS_THEN_HANGS)])
    assert e.wait(timeout=60) == 1
    dumps = [ev for ev in e.events() if ev["event"] == "stack_dump"]
    assert dumps, e.events()
    assert "stuck_in_here" in dumps[0]["stacks"]


def test_hang_exit_code(entry) -> None:
    """--hang-exit-code replaces the preempt code for hangs."""
    e = entry(["--hang-timeout", "1s", "--hang-exit-code", "3", "--",
               *job(BEATS_THEN_HANGS)])
    assert e.wait(timeout=60) == 3


def test_slow_first_step_is_not_a_hang(entry) -> None:
    """A process is watched from its second beat: compiling or loading before the first step
    takes what it takes."""
    e = entry(["--hang-timeout", "1s", "--", *job("""
        import time
        from runai_entry.training import heartbeat
        heartbeat(0)
        time.sleep(2.5)  # the first step: compiling, warming up
        for step in range(1, 20):
            heartbeat(step)
            time.sleep(0.05)
    """)])
    assert e.wait(timeout=60) == 0
    assert not [ev for ev in e.events() if ev["event"] == "hang_detected"]


def test_a_save_gets_the_save_timeout(entry) -> None:
    """While a save is announced, --save-timeout applies, not the step's allowance; a save
    longer than that is a hang too."""
    source = """
        import sys, time
        from runai_entry.training import heartbeat, saving
        for step in range(1, 10):
            heartbeat(step)
            time.sleep(0.05)
        with saving():
            time.sleep(float(sys.argv[1]))
        for step in range(10, 15):
            heartbeat(step)
            time.sleep(0.05)
    """
    within = entry(["--hang-timeout", "1s", "--save-timeout", "10s", "--",
                    *job(source), "2.5"])
    assert within.wait(timeout=60) == 0
    beyond = entry(["--hang-timeout", "1s", "--save-timeout", "1s", "--", *job(source), "60"])
    assert beyond.wait(timeout=60) == 1
    assert beyond.event("hang_detected")["saving"] is True


def test_a_job_that_never_beats_is_not_watched_and_says_so(entry) -> None:
    e = entry(["--hang-timeout", "1s", "--", "sleep", "6"])
    assert e.wait(timeout=60) == 0
    assert len([ev for ev in e.events() if ev["event"] == "watchdog_not_watching"]) == 1


def test_a_heartbeat_from_outside_the_job_is_ignored(entry, tmp_path: Path) -> None:
    """A process that is not the job's writes a heartbeat file into the job's directory and
    stops beating: no hang is declared for it."""
    e = entry(["--hang-timeout", "1s", "--", *job("""
        import os, time
        print("dir", os.environ["RUNAI_ENTRY_HEARTBEAT_DIR"], flush=True)
        time.sleep(4)
    """)])
    directory = e.expect(r"dir (\S+)").group(1)
    outsider = subprocess_beating(directory)
    assert outsider.wait(timeout=30) == 0
    assert e.wait(timeout=60) == 0
    assert not [ev for ev in e.events() if ev["event"] == "hang_detected"]


def test_a_beat_file_made_in_the_same_mtime_tick_as_the_last_look_is_read(
        tmp_path: Path) -> None:
    """A directory's mtime ticks coarsely: a rank's first beat file made in the same tick as
    the watchdog's last listing left the mtime as it was, the file was never read, and a rank
    that then blocked in a collective was never declared hung (the job ran for ever)."""
    import subprocess
    import time

    directory = str(tmp_path)
    dog = watchdog.Watchdog(directory, 1.0, 60.0, time.monotonic(), lambda pid: True)
    dog.check(time.monotonic())  # lists the directory, empty
    listed = os.stat(directory).st_mtime_ns
    beater = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from runai_entry.training import heartbeat
        heartbeat(0); heartbeat(1)
        print("beat", flush=True)
        sys.stdin.read()  # until the test is done
    """)], env=dict(os.environ, RUNAI_ENTRY_HEARTBEAT_DIR=directory), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert beater.stdout is not None and beater.stdout.readline() == "beat\n"
        os.utime(directory, ns=(listed, listed))  # made in the tick of the last listing
        dog.check(time.monotonic())
        assert list(dog.beats) == [beater.pid]
    finally:
        beater.kill()
        beater.wait()


def subprocess_beating(directory: str):  # type: ignore[no-untyped-def]
    import subprocess

    return subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import time
        from runai_entry.training import heartbeat
        for step in range(5):
            heartbeat(step)
            time.sleep(0.05)
    """)], env=dict(os.environ, RUNAI_ENTRY_HEARTBEAT_DIR=directory))


BLOCKED_COLLECTIVE = """
import os, time, torch, torch.distributed as dist
from runai_entry.training import heartbeat
dist.init_process_group("gloo")
rank = dist.get_rank()
for step in range(1, 1000):
    heartbeat(step)
    if rank == 1 and step == 5:
        os.write(1, b"rank 1 leaves the collectives\\n")
        time.sleep(3600)  # a peer that is gone without closing its sockets
    dist.all_reduce(torch.ones(4))
    time.sleep(0.05)
"""


@pytest.mark.slow
@pytest.mark.timeout(300)  # above the waits below, so a failure shows runai-entry's log
def test_a_rank_blocked_in_a_collective_is_detected(tmp_path: Path) -> None:
    """torchrun, two workers: rank 1 stops taking part, rank 0 blocks in all_reduce. Both stop
    beating; the watchdog stops the job and the log holds rank 0's stack in all_reduce."""
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED_COLLECTIVE)
    argv = [sys.executable, "-m", "runai_entry", "--hang-timeout", "2s", "--",
            *TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "0",
            str(script)]
    with started(argv, job_env()) as run:
        run.expect("rank 1 leaves the collectives", timeout=120)
        assert run.wait(timeout=120) == 1, run.tail()
        assert run.events("hang_detected"), run.tail()
        assert "all_reduce" in run.output(), run.tail()
        assert run.events("exit")[-1]["reason"] == "hung"


def test_stack_signal_is_real_time() -> None:
    """The dump signal must not be one that training code takes for itself."""
    from runai_entry.training.heartbeat import STACK_SIGNAL

    assert STACK_SIGNAL > signal.SIGRTMIN
    assert STACK_SIGNAL not in (signal.SIGUSR1, signal.SIGUSR2)
