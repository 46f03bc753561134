"""Deadline precision: a job that ignores SIGTERM; SIGTERM → runai-entry has exited.

runai-entry runs with ``--grace-period 2s --kill-margin 0.5s`` (set in the environment, the
container form), so it must SIGKILL the job 1.5 s after the signal and exit at once. The figure is
(SIGTERM sent → the benchmark's waitpid on runai-entry returns) − 1.5 s: never negative (early),
at most +100 ms. tini and dumb-init have no deadline: they wait until the platform's SIGKILL.
"""

from __future__ import annotations

import sys

import common

STOP_AFTER_MS = 1500.0
TARGET_LATE_MS = 100.0


def main() -> int:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    report = common.Report("deadline precision", args)
    reps = 3 if args.quick else 20
    probe = common.probe()
    env = {"RUNAI_ENTRY_GRACE_PERIOD": "2s", "RUNAI_ENTRY_KILL_MARGIN": "0.5s"}
    print(common.machine_load())
    late: list[float] = []
    codes = set()
    for _ in range(reps):
        job = common.start("runai-entry", [probe, "ignore-term"], env=env)
        if not common.read_line(job, "runai-entry").startswith("ready"):
            raise RuntimeError("no ready line")
        common.wait_until_waiting(job.pid)
        sent = common.monotonic_ns()
        job.signal(15)
        codes.add(job.proc.wait())  # the exit itself, not the harness's readers
        late.append((common.monotonic_ns() - sent) / 1e6 - STOP_AFTER_MS)
        job.kill()
    stats = common.print_stats(f"exit − (signal + 1.5 s), {reps} runs", "ms",
                               {"runai-entry": late})
    s = stats["runai-entry"]
    ok = s["min"] >= 0 and s["max"] <= TARGET_LATE_MS
    report.row(
        "exit after SIGTERM − 1.5 s: min / median / max",
        {"runai-entry": f"{s['min']:+.1f} / {s['median']:+.1f} / {s['max']:+.1f} ms",
         "tini": "no deadline", "dumb-init": "no deadline"},
        f"0 ≤ late ≤ +{TARGET_LATE_MS:g} ms",
        "pass" if ok else "FAIL",
    )
    report.note(f"{reps} runs; exit codes seen: {sorted(codes)}; " + common.machine_load())
    report.write()
    return 0


if __name__ == "__main__":
    with common.session():
        sys.exit(main())
