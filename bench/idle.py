"""Idle cost: the supervisor's CPU time and wake-ups while its job sleeps; its peak RSS.

All three supervisors run at once, each in front of ``sleep``. Once each is in sigtimedwait and
one more second has passed (runai-entry imports structlog and psutil after the exec), the
benchmark reads, for every thread of the supervisor, ``/proc/PID/task/TID/schedstat`` (CPU time
in ns, unlike utime/stime's 10 ms ticks) and the context switches in ``status`` (each voluntary
switch is a sleep, so a wake-up); then again after the window. Peak RSS is VmHWM.
"""

from __future__ import annotations

import os
import sys
import time

import common

TARGET_CPU_MS_PER_MIN = 5.0
TARGET_RSS_MB = 30.0


def sample(pid: int) -> dict[str, float]:
    cpu_ns = 0
    switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            cpu_ns += int(f.read().split()[0])
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {"cpu_ms": cpu_ns / 1e6, "switches": switches,
            "hwm_mb": int(fields["VmHWM"].split()[0]) / 1024,
            "rss_mb": int(fields["VmRSS"].split()[0]) / 1024}


def main() -> int:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    report = common.Report("idle cost", args)
    window = 5 if args.quick else 60
    procs = {peer: common.start(peer, ["sleep", str(window + 30)]) for peer in common.PEERS}
    for proc in procs.values():
        common.wait_until_waiting(proc.pid)
    time.sleep(1.0)
    print(common.machine_load())
    before = {peer: sample(p.pid) for peer, p in procs.items()}
    start_cpu = dict(before)
    time.sleep(window)
    after = {peer: sample(p.pid) for peer, p in procs.items()}
    print(f"\nover {window} s of a sleeping job")
    print(f"  {'':<14}{'CPU ms':>10}{'CPU ms/min':>12}{'wake-ups':>10}{'start-up CPU ms':>17}"
          f"{'RSS MB':>9}{'peak RSS MB':>13}")
    values: dict[str, str] = {}
    rss: dict[str, str] = {}
    ok = True
    for peer in procs:
        cpu = after[peer]["cpu_ms"] - before[peer]["cpu_ms"]
        per_min = cpu * 60 / window
        wakes = after[peer]["switches"] - before[peer]["switches"]
        print(f"  {peer:<14}{cpu:>10.3f}{per_min:>12.3f}{wakes:>10.0f}"
              f"{start_cpu[peer]['cpu_ms']:>17.1f}{after[peer]['rss_mb']:>9.1f}"
              f"{after[peer]['hwm_mb']:>13.1f}")
        values[peer] = f"{per_min:.3f} ms CPU/min, {wakes:.0f} wake-ups"
        rss[peer] = f"{after[peer]['hwm_mb']:.1f} MB"
        if peer == "runai-entry":
            ok = per_min <= TARGET_CPU_MS_PER_MIN and after[peer]["hwm_mb"] <= TARGET_RSS_MB
            ok_cpu = per_min <= TARGET_CPU_MS_PER_MIN
            ok_rss = after[peer]["hwm_mb"] <= TARGET_RSS_MB
    report.row(f"CPU and wake-ups over {window} s idle", values,
               f"≤ {TARGET_CPU_MS_PER_MIN:g} ms CPU per minute", "pass" if ok_cpu else "FAIL")
    report.row("peak RSS (VmHWM)", rss, f"≤ {TARGET_RSS_MB:g} MB", "pass" if ok_rss else "FAIL")
    report.note("start-up CPU (exec → settled) ms: "
                + ", ".join(f"{p} {start_cpu[p]['cpu_ms']:.1f}" for p in procs))
    report.note(common.machine_load())
    del ok
    report.write()
    return 0


if __name__ == "__main__":
    with common.session():
        sys.exit(main())
