"""What the attempt history's new figures cost a job: the heartbeat directory and the observer.

With ``--checkpoint-dir``, runai-entry now makes the heartbeat directory (for the job's first and
last step), starts the first-failure observer, and stats the checkpoints at the end. This
measures, interleaved, ``runai-entry --checkpoint-dir D -- true`` from exec to exit for this tree
and for an older commit of it (``--base``, default the commit before these figures existed),
both run as ``python -m runai_entry`` from their own source tree; and ``heartbeat(step)`` per
call with and without a heartbeat directory.

    .venv/bin/python bench/history_cost.py [--base COMMIT] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
PYTHON = os.path.join(REPO, ".venv", "bin", "python")

TIMEIT = """
import os, time
from runai_entry.training.heartbeat import heartbeat
heartbeat(0)
n = 2_000_000
t = time.perf_counter()
for i in range(n):
    heartbeat(i)
print((time.perf_counter() - t) / n * 1e9)
"""


def run_once(tree: str, directory: str) -> float:
    env = dict(os.environ, PYTHONPATH=tree, RUNAI_ENTRY_LOG_LEVEL="warning",
               RUNAI_ENTRY_LOG_FORMAT="json")
    start = time.perf_counter()
    subprocess.run([PYTHON, "-m", "runai_entry", "--checkpoint-dir", directory, "--", "true"],
                   env=env, check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def heartbeat_ns(directory: str | None) -> float:
    env = dict(os.environ)
    env.pop("RUNAI_ENTRY_HEARTBEAT_DIR", None)
    if directory is not None:
        env["RUNAI_ENTRY_HEARTBEAT_DIR"] = directory
    out = subprocess.run([PYTHON, "-c", TIMEIT], env=env, check=True, capture_output=True,
                         text=True).stdout
    return float(out)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--base", default="b8d4ac2", help="the commit to compare with")
    args.add_argument("--rounds", type=int, default=30)
    opts = args.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = os.path.join(scratch, "base")
        subprocess.run(["git", "-C", REPO, "worktree", "add", "-q", "--detach", base, opts.base],
                       check=True)
        try:
            trees = {"this tree": REPO, f"base {opts.base}": base}
            times: dict[str, list[float]] = {label: [] for label in trees}
            for n in range(opts.rounds):
                for label, tree in (trees.items() if n % 2 else reversed(trees.items())):
                    directory = os.path.join(scratch, f"ck-{label[:4]}-{n}")
                    times[label].append(run_once(tree, directory))
            for label, series in times.items():
                print(f"runai-entry --checkpoint-dir D -- true, {label}: median "
                      f"{statistics.median(series) * 1e3:.1f} ms, min {min(series) * 1e3:.1f} ms "
                      f"({opts.rounds} runs)")
        finally:
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", base], check=True)
        beats = os.path.join(scratch, "beats")
        os.mkdir(beats)
        for label, directory in (("with a heartbeat directory", beats), ("without", None)):
            best = min(heartbeat_ns(directory) for _ in range(3))
            print(f"heartbeat(step) per call, {label}: {best:.0f} ns (best of 3 x 2M calls)")
    print("load:", os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
