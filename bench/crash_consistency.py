"""Crash consistency of async saves: 200 SIGKILLs at random instants of a Checkpointer writer.

Each kill lands somewhere in a loop of async saves (a 1 MiB model whose every value encodes its
step, saved every 2 steps, keep=2): in the host copy, mid-write, between fsync and rename, in
retention. After every kill, every checkpoint under a final name must load and hold the step its
name says, and discovery must find one at least as new as the newest the writer saw published.
The loop is tests/training_scripts/crash_async.py's, which the test suite runs with 8 kills.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import common


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--backend", choices=("file", "dcp"), default="file",
                   help="dcp: 2-rank FSDP2 jobs under torchrun (seconds per kill)")
    args = p.parse_args()
    report = common.Report(f"crash consistency (async saves, {args.backend})", args)
    from tests.harness.spawning import spawn

    if args.backend == "dcp":
        from tests.training_scripts.crash_dcp import kill_loop

        kills = 3 if args.quick else args.kills
        metric = f"{kills} SIGKILLs during async DCP saves (FSDP2, 2 ranks)"
        target = "0 unloadable; the next start always restores"

        def describe(stats: dict) -> str:  # type: ignore[type-arg]
            return (f"{stats['kills']} kills: 0 unloadable, {stats['restored']} restores all "
                    f"from at least the newest published step; {stats['checked']} final names "
                    f"checked complete, newest published step {stats['max_step']}")
    else:
        from tests.training_scripts.crash_async import kill_loop  # type: ignore[no-redef]

        kills = 20 if args.quick else args.kills
        metric = f"{kills} SIGKILLs during async saves"
        target = "0 unloadable; the newest complete always loads"

        def describe(stats: dict) -> str:  # type: ignore[type-arg]
            return (f"{stats['kills']} kills: 0 unloadable, newest always loads; "
                    f"{stats['checked']} files checked, {stats['temps_left']} temporaries left "
                    f"by killed writes, newest published step {stats['max_step']}")
    print(f"seed {args.seed} (rerun with --seed {args.seed}); {common.machine_load()}", flush=True)
    started = time.monotonic()
    failure = None
    try:
        stats = kill_loop(Path(common.temp_dir("crash", "/tmp")), kills, random.Random(args.seed),
                          spawn)
    except AssertionError as exc:
        failure, stats = str(exc).splitlines()[0], {}
    seconds = time.monotonic() - started
    print(f"{stats} in {seconds:.0f} s" if stats else f"FAILED: {failure}", flush=True)
    value = describe(stats) if stats else f"FAILED: {failure}"
    report.row(metric, {"runai-entry": value, "reference": "", "ratio": ""}, target,
               "pass" if stats else "FAIL")
    print(f"| {report.rows[0]['metric']} | {value} | {report.rows[0]['verdict']} |")
    report.write()
    return 0 if stats else 1

if __name__ == "__main__":
    sys.path.insert(0, common.REPO)
    os.environ["PYTHONPATH"] = common.REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    with common.session():
        sys.exit(main())
