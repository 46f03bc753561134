"""Signal forward latency: kill(supervisor, SIG) → the job's probe has the signal in hand.

All supervisors run at once, each in front of its own probe (``probe signals``: sigwaitinfo, then
a CLOCK_MONOTONIC timestamp). Each round sends one signal to every supervisor, in a fresh random
order, so machine noise falls on all alike; before the next signal, the benchmark waits until
the supervisor that was signalled is back in sigtimedwait, so the work a supervisor does *after*
forwarding (runai-entry's log line and process scan) is not charged to the next peer.

Two signals: SIGUSR1, which every peer simply forwards (the clean comparison), and SIGTERM,
which runai-entry treats as a preemption (the first starts the grace window; the job's probe
survives it, so the other 999 are "repeated SIGTERM" forwards, each of which also scans the job's
processes). runai-entry runs with a 1 h grace period so that no deadline falls inside the run.
It is measured twice: logging at warning (the default for the table) and at info (its default).

The first SIGTERM (the preemption itself: runai-entry switches state, sets its deadline and
signals the group before anything else) is measured apart, once per fresh supervisor, settled
in sigtimedwait for ``--settle`` seconds first (0.3), ``--first N`` times per peer (default 100),
interleaved. Beside the peers runs bench/python_floor.py, the least a Python supervisor can do
(sigwaitinfo, then killpg): what CPython's cold wake-up costs on this machine.
"""

from __future__ import annotations

import sys
import time

import common

TARGET_P99_MS = 2.0
TARGET_MEDIAN_RATIO = 1.5


def first_sigterms(variants: dict[str, tuple[str, dict[str, str]]], probe: str,
                   n: int, settle: float) -> dict[str, list[float]]:
    """kill(SIGTERM) → probe has it, each time on a freshly started supervisor that has slept
    ``settle`` seconds in sigtimedwait."""
    series: dict[str, list[float]] = {label: [] for label in variants}
    for _, label in common.interleaved(variants, n):
        peer, env = variants[label]
        job = common.start(peer, [probe, "signals"], env=env)
        if not common.read_line(job, label).startswith("ready"):
            raise RuntimeError(f"{label}: no ready line")
        common.wait_until_waiting(job.pid)
        time.sleep(settle)
        t0 = common.monotonic_ns()
        job.signal(15)
        got, ts = common.read_line(job, label).split()
        if int(got) != 15:
            raise RuntimeError(f"{label}: sent SIGTERM, the probe got {got}")
        series[label].append((int(ts) - t0) / 1e6)
        job.kill()
    return series


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--first", type=int, default=100, help="fresh supervisors per peer")
    p.add_argument("--settle", type=float, default=0.3,
                   help="seconds each fresh supervisor sleeps before its first SIGTERM")
    p.add_argument("--baseline", metavar="BIN",
                   help="another runai-entry (a script that runs an older checkout) measured "
                   "beside this one, interleaved: before and after a change, on the same noise")
    args = p.parse_args()
    report = common.Report("signal forward latency", args)
    reps = 50 if args.quick else 1000
    probe = common.probe()
    long_grace = {"RUNAI_ENTRY_GRACE_PERIOD": "1h", "RUNAI_ENTRY_KILL_MARGIN": "1s"}
    variants = {
        "runai-entry": ("runai-entry", long_grace),
        "runai-entry (info log)": ("runai-entry", {**long_grace, "RUNAI_ENTRY_LOG_LEVEL": "info"}),
        "tini": ("tini", {}),
        "dumb-init": ("dumb-init", {}),
    }
    if args.baseline:
        common.SUPERVISORS["runai-entry (baseline)"] = [args.baseline, "--"]
        common.SUPERVISOR_ENV["runai-entry (baseline)"] = common.SUPERVISOR_ENV["runai-entry"]
        variants["runai-entry (baseline)"] = ("runai-entry (baseline)", long_grace)
    procs: dict[str, common.Child] = {}
    for label, (peer, env) in variants.items():
        procs[label] = common.start(peer, [probe, "signals"], env=env)
    for label, proc in procs.items():
        if not common.read_line(proc, label).startswith("ready"):
            raise RuntimeError(f"{label}: no ready line")
        common.wait_until_waiting(proc.pid)
    print(common.machine_load())

    results: dict[str, dict[str, list[float]]] = {}
    for signame, signum in (("SIGUSR1", 10), ("SIGTERM", 15)):
        series: dict[str, list[float]] = {label: [] for label in procs}
        for rep, label in common.interleaved(procs, reps + 1):
            proc = procs[label]
            t0 = common.monotonic_ns()
            proc.signal(signum)
            got, ts = common.read_line(proc, label).split()
            if int(got) != signum:
                raise RuntimeError(f"{label}: sent {signum}, the probe got {got}")
            latency = (int(ts) - t0) / 1e6
            if rep > 0:  # round 0 warms every path (and is runai-entry's preemption)
                series[label].append(latency)
            common.wait_until_waiting(proc.pid)
        results[signame] = series
        stats = common.print_stats(
            f"{signame}: kill(supervisor) → probe has it, {reps} signals each", "ms", series,
            baseline="tini")
        tini = stats["tini"]
        ours = stats["runai-entry"]
        ok = ours["median"] <= TARGET_MEDIAN_RATIO * tini["median"] and ours["p99"] <= TARGET_P99_MS
        what = "repeated SIGTERM (in preemption)" if signame == "SIGTERM" else "SIGUSR1"
        report.row(
            f"{what}: median / p99",
            {label: common.cell(s, "ms") for label, s in stats.items()}
            | {"ratio": f"median {common.ratio(ours['median'], tini['median'])} of tini"},
            f"median ≤ {TARGET_MEDIAN_RATIO}× tini; p99 ≤ {TARGET_P99_MS:g} ms",
            "pass" if ok else "FAIL",
        )
    for proc in procs.values():
        proc.kill()
    n = 10 if args.quick else args.first
    firsts = common.print_stats(
        f"first SIGTERM (the preemption itself), settled {args.settle:g} s, {n} fresh "
        "supervisors each", "ms",
        first_sigterms(variants | {"python floor": ("python floor", {})}, probe, n, args.settle),
        baseline="tini")
    tini, ours, floor = firsts["tini"], firsts["runai-entry"], firsts.pop("python floor")
    report.row(
        f"first SIGTERM (the preemption), settled {args.settle:g} s: median / p99",
        {label: common.cell(s, "ms") for label, s in firsts.items()}
        | {"ratio": f"median {common.ratio(ours['median'], tini['median'])} of tini; "
                    f"{common.ratio(ours['median'], floor['median'])} of the Python floor "
                    f"({common.cell(floor, 'ms')}: {common.ratio(floor['median'], tini['median'])}"
                    " of tini)"},
        f"median ≤ {TARGET_MEDIAN_RATIO}× tini",
        "pass" if ours["median"] <= TARGET_MEDIAN_RATIO * tini["median"] else "FAIL",
    )
    report.note(f"{reps} signals of each kind per peer, interleaved in random order; "
                + common.machine_load())
    report.write()
    return 0


if __name__ == "__main__":
    with common.session():
        sys.exit(main())
