"""The hang watchdog: what a heartbeat costs, what watching costs, how soon a hang ends.

1. ``heartbeat(step)`` per call, in a process that runai-entry watches (a file mapped on tmpfs),
   and with no watchdog (the call returns at once). Target ≤ 2 µs.
2. runai-entry's idle cost with ``--hang-timeout 5m``: CPU and wake-ups over 60 s while the job
   beats ten times a second. Target ≤ 5 ms CPU a minute, ≤ 1 wake-up a second.
3. From the hang deadline (last beat + ``--hang-timeout``) to runai-entry's exit, for a job that
   beats and then sleeps: the wake-up's lateness, the 1 s stack-dump window, and the stop.

    .venv/bin/python bench/watchdog.py [--quick]
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import common

TIMEIT = """
import os, time
from runai_entry.training.heartbeat import heartbeat
heartbeat(0)
n = {n}
t = time.perf_counter()
for i in range(n):
    heartbeat(i)
print((time.perf_counter() - t) / n * 1e9)
"""

BEATING = """
import time
from runai_entry.training import heartbeat
print("ready", flush=True)
step = 0
while True:
    step += 1
    heartbeat(step)
    time.sleep(0.1)
"""

HANGS = """
import sys, time
from runai_entry.training import heartbeat
for step in range(1, 11):
    heartbeat(step)
    time.sleep(0.02)
print(time.clock_gettime_ns(time.CLOCK_MONOTONIC), flush=True)
time.sleep(3600)
"""


def per_call_ns(watched: bool, n: int) -> float:
    env = dict(os.environ, PYTHONPATH=common.REPO)
    env.pop("RUNAI_ENTRY_HEARTBEAT_DIR", None)
    if watched:
        env["RUNAI_ENTRY_HEARTBEAT_DIR"] = common.temp_dir("beats")
    out = subprocess.run([common.PYTHON, "-c", TIMEIT.format(n=n)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out)


def proc_stat(pid: int) -> tuple[float, int]:
    """CPU in ms (the scheduler's ns count: /proc/PID/stat's ticks are 10 ms), wake-ups."""
    with open(f"/proc/{pid}/schedstat") as f:
        cpu = int(f.read().split()[0]) / 1e6
    with open(f"/proc/{pid}/status") as f:
        wakes = next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt"))
    return cpu, wakes


def idle(seconds: float) -> tuple[float, float]:
    proc = common.start("runai-entry", [common.PYTHON, "-c", BEATING],
                        env={"RUNAI_ENTRY_HANG_TIMEOUT": "5m"})
    assert common.read_line(proc, "beating job") == "ready"
    common.wait_until_waiting(proc.pid)
    time.sleep(12)  # past the first look (10 s), which finds the job's file once
    cpu0, wakes0 = proc_stat(proc.pid)
    time.sleep(seconds)
    cpu1, wakes1 = proc_stat(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return (cpu1 - cpu0) * 60 / seconds, (wakes1 - wakes0) * 60 / seconds


def hang_to_exit(n: int, timeout: float) -> list[float]:
    times = []
    for _ in range(n):
        proc = common.start("runai-entry", [common.PYTHON, "-c", HANGS],
                            env={"RUNAI_ENTRY_HANG_TIMEOUT": f"{timeout}s"})
        last_beat = int(common.read_line(proc, "hanging job"))
        code = proc.wait(60)
        exited = common.monotonic_ns()
        if code != 1:
            raise RuntimeError(f"exit {code}, not the hang code")
        times.append((exited - last_beat) / 1e6 - timeout * 1000)
    return times


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    report = common.Report("hang watchdog", args)
    print(common.machine_load())
    n = 200_000 if args.quick else 2_000_000
    watched = [per_call_ns(True, n) for _ in range(3)]
    unwatched = [per_call_ns(False, n) for _ in range(3)]
    print(f"\nheartbeat(step): watched {min(watched):.0f} ns/call (best of 3), "
          f"no watchdog {min(unwatched):.0f} ns/call")
    report.row("heartbeat(step) per call: watched / no watchdog",
               {"runai-entry": f"{min(watched):.0f} ns / {min(unwatched):.0f} ns"},
               "≤ 2 µs", "pass" if min(watched) <= 2000 else "FAIL")

    cpu, wakes = idle(10 if args.quick else 60)
    print(f"idle with --hang-timeout 5m, job beating at 10 Hz: {cpu:.1f} ms CPU/min, "
          f"{wakes:.0f} wake-ups/min")
    report.row("idle cost with the watchdog on (job beating at 10 Hz)",
               {"runai-entry": f"{cpu:.1f} ms CPU/min, {wakes:.0f} wake-ups/min"},
               "≤ 5 ms CPU per minute, ≤ 60 wake-ups", "pass" if cpu <= 5 and wakes <= 61
               else "FAIL")

    stats = common.print_stats("hang deadline → exit (--hang-timeout 1s)", "ms",
                               {"runai-entry": hang_to_exit(3 if args.quick else 10, 1.0)})
    s = stats["runai-entry"]
    report.row("hang deadline → exit: median / max (1 s dump window included)",
               {"runai-entry": f"{common.fmt(s['median'], 'ms')} / max "
                f"{common.fmt(s['max'], 'ms')}"}, "(reading)", None)
    report.write()



if __name__ == "__main__":
    with common.session():
        main()
