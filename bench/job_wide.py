"""Job-wide preemption: how soon a peer follows, and what watching for it costs while idle.

Two members of one job (POD_INDEX 0 and 1) share a local checkpoint directory, each runai-entry
with the probe in ``signals`` mode as its job. The benchmark sends SIGTERM to member 0 only, at
a random phase of the watch's polling, and stamps CLOCK_MONOTONIC; member 1's probe stamps the
stop signal its own runai-entry forwards.
The watch re-opens the marker once a second, so the follow latency is uniform over 0–1 s plus
the announcement's write. Idle: over 60 s of a running member, the CPU time of runai-entry and
of its watching helper, the supervisor's wake-ups, and the helper's RSS.

    .venv/bin/python bench/job_wide.py [--quick]
"""

from __future__ import annotations

import os
import random
import signal
import time

import common


def member(index: int, directory: str):  # type: ignore[no-untyped-def]
    env = {"RUNAI_ENTRY_CHECKPOINT_DIR": directory, "POD_INDEX": str(index)}
    proc = common.start("runai-entry", [common.probe(), "signals"], env=env)
    assert common.read_line(proc, "probe").startswith("ready")
    common.wait_until_waiting(proc.pid)
    return proc


def follow_latency(n: int) -> list[float]:
    rng = random.Random(2026)
    times = []
    for _ in range(n):
        directory = common.temp_dir("job")
        first, second = member(0, directory), member(1, directory)
        # The watch polls once a second from member 1's start: preempt at a random phase.
        time.sleep(rng.uniform(0.0, 1.0))
        sent = common.monotonic_ns()
        os.kill(first.pid, signal.SIGTERM)
        line = common.read_line(second, "member 1's probe").split()
        assert int(line[0]) == signal.SIGTERM, line
        times.append((int(line[1]) - sent) / 1e6)
        for proc in (first, second):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return times


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def cpu_ms(pid: int) -> float:
    """The scheduler's count in ns (/proc/PID/stat's ticks are 10 ms: too coarse here)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e6


def wakeups(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt"))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def idle(seconds: float) -> dict[str, float]:
    proc = member(1, common.temp_dir("idle"))
    helpers = [pid for pid in common.children_of(proc.pid) if comm(pid) != "probe"]
    assert len(helpers) == 1, f"expected one watching helper, found {helpers}"
    watcher = helpers[0]
    before = (cpu_ms(proc.pid), cpu_ms(watcher), wakeups(proc.pid))
    time.sleep(seconds)
    after = (cpu_ms(proc.pid), cpu_ms(watcher), wakeups(proc.pid))
    per_minute = 60 / seconds
    result = {
        "supervisor_cpu": (after[0] - before[0]) * per_minute,
        "watcher_cpu": (after[1] - before[1]) * per_minute,
        "supervisor_wakeups": (after[2] - before[2]) * per_minute,
        "watcher_rss": rss_mb(watcher),
    }
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return result


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    report = common.Report("job-wide preemption", args)
    print(common.machine_load())
    stats = common.print_stats("SIGTERM to member 0 → member 1's job gets the stop signal", "ms",
                               {"runai-entry": follow_latency(5 if args.quick else 20)})
    s = stats["runai-entry"]
    report.row("peer follows: SIGTERM to member 0 → member 1's job signalled: median / max",
               {"runai-entry": f"{common.fmt(s['median'], 'ms')} / max "
                f"{common.fmt(s['max'], 'ms')}"},
               "≤ 2 s", "pass" if s["max"] <= 2000 else "FAIL")
    cost = idle(10 if args.quick else 60)
    print(f"\nidle, per minute: supervisor {cost['supervisor_cpu']:.1f} ms CPU, "
          f"{cost['supervisor_wakeups']:.0f} wake-ups; watcher {cost['watcher_cpu']:.1f} ms CPU, "
          f"RSS {cost['watcher_rss']:.1f} MB")
    report.row("idle cost with job-wide preemption on (per minute)",
               {"runai-entry": f"supervisor {cost['supervisor_cpu']:.1f} ms CPU, "
                f"{cost['supervisor_wakeups']:.0f} wake-ups; watch helper "
                f"{cost['watcher_cpu']:.1f} ms CPU, RSS {cost['watcher_rss']:.1f} MB"},
               "≤ 5 ms CPU per minute (supervisor)",
               "pass" if cost["supervisor_cpu"] <= 5 else "FAIL")
    report.write()


if __name__ == "__main__":
    with common.session():
        main()
