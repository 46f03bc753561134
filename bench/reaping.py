"""Reaping: 10,000 orphaned processes exit at once; how soon are their zombies gone? (as PID 1)

Each supervisor runs as PID 1 of a new PID namespace (``unshare --fork --pid --mount-proc``) in
front of ``probe orphans 10000``: the job forks an intermediate process that forks the 10,000 and
exits, so they are re-parented to PID 1; the job then releases them all at once (closing a pipe),
each stamps its exit, and the job scans /proc until no zombie is left. The figure is the first
zero-zombie scan's end − the last orphan's exit (an upper bound; the previous scan's end is the
lower bound). The job's scan shares the 2 CPUs with the reaper, as any job would.
"""

from __future__ import annotations

import sys

import common

ORPHANS = 10_000
TARGET_MS = 1000.0


def one(peer: str, probe: str) -> dict[str, float]:
    job = common.start(peer, [probe, "orphans", str(ORPHANS)],
                       prefix=["unshare", "--fork", "--pid", "--mount-proc"])
    code = job.wait(timeout=120)
    fields = job.output().split()
    if code != 0 or len(fields) != 6:
        raise RuntimeError(f"{peer}: exit {code}, output {job.output()!r}, {job.stderr[-5:]}")
    got, last, lower, upper, max_zombies, scans = (int(x) for x in fields)
    return {"upper": (upper - last) / 1e6, "lower": (lower - last) / 1e6,
            "max_zombies": max_zombies, "scans": scans, "exited": got}


def main() -> int:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    report = common.Report("reaping", args)
    reps = 1 if args.quick else 10
    probe = common.probe()
    print(common.machine_load())
    runs: dict[str, list[dict[str, float]]] = {peer: [] for peer in common.PEERS}
    for _, peer in common.interleaved(common.PEERS, reps):
        runs[peer].append(one(peer, probe))
    stats = common.print_stats(
        f"last orphan exit → no zombie left (upper bound), {ORPHANS} orphans, {reps} runs", "ms",
        {peer: [r["upper"] for r in rs] for peer, rs in runs.items()}, baseline="tini")
    common.print_stats("same, lower bound (the last scan that still saw a zombie)", "ms",
                       {peer: [r["lower"] for r in rs] for peer, rs in runs.items()})
    for peer, rs in runs.items():
        print(f"  {peer}: most zombies seen at once {max(r['max_zombies'] for r in rs):.0f}, "
              f"scans per run {min(r['scans'] for r in rs):.0f}-{max(r['scans'] for r in rs):.0f}")
    worst = stats["runai-entry"]["max"]
    report.row(
        f"{ORPHANS:,} orphans' exit → all reaped: median / max",
        {peer: f"{s['median']:.0f} / {s['max']:.0f} ms" for peer, s in stats.items()},
        f"≤ {TARGET_MS:g} ms", "pass" if worst <= TARGET_MS else "FAIL")
    report.note(f"{reps} runs per peer, interleaved, each as PID 1 of a new PID namespace; "
                + common.machine_load())
    report.write()
    return 0


if __name__ == "__main__":
    with common.session():
        sys.exit(main())
