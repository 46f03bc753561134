"""Checkpoint discovery: ``discover()`` on a directory of 100,000 files and one of 10,000 step
directories, warm and cold cache, with the system calls counted by ``strace -c -f``; and what it
adds to runai-entry's start-up, side by side with ``os.scandir`` of the same directory.

Side by side (the target: at most 0.15 s of extra start-up for 100,000 entries, warm cache):
* in-process: one fresh interpreter lists the directory with ``os.scandir`` and runs
  ``discover(verify=True)`` (what the supervisor runs) in turn, in a random order each round;
* start-up: ``python -m runai_entry --checkpoint-dir D -- sh -c 'date +%s%N' sh`` with D =
  files-100k, files-100k junk and an empty directory, interleaved; the job prints the time it
  started (``sh`` takes the resume flag as ``$1``), so "to the job" is the start-up and "whole
  run" adds what runai-entry does after the job ends (the discovery for the history);
* ``--before TREE`` (a checkout of an older commit) runs both for that tree too, interleaved.

Each other timing runs in a fresh interpreter (imports done before the clock starts) so no
Python cache carries over; "cold" drops the page, dentry and inode caches first (``sync; echo 3
> /proc/sys/vm/drop_caches``, root only; skipped with a note otherwise). System calls are counted
for the same script with and without the ``discover()`` call, and the difference reported, so
the interpreter's own start-up does not count.

Directories (in /tmp, on the same disk as the repository):
* files-100k: ``step-00000000.pt`` … ``step-00099999.pt``, each a tiny complete zip (115 bytes):
  ordered by the number in the name, the newest verified.
* files-100k junk: the same names, each 100 bytes of junk: every candidate fails verification,
  the worst case; discovery searches within its budget (``SearchBudget``: 10,000 entries).
* files-100k + last.ckpt: files-100k plus one unnumbered ``last.ckpt`` (Lightning's habit),
  which switches the ordering to mtimes: every candidate is stat'ed.
* hf-10k: ``checkpoint-N/trainer_state.json`` for N = 1 … 10,000 (the Hugging Face layout).
* torch-3: ``step-1.pt`` … ``step-3.pt``, each a real ``torch.save`` of 400 tensors (100 MB), to
  price verification (on by default in the supervisor): it opens the chosen file and reads its
  zip central directory. torch-3, newest torn: ``step-3.pt`` cut in half, so verification
  rejects it and reads ``step-2.pt`` too.
The peer is the idiom people write today: ``max(glob('*.pt'), key=os.path.getmtime)``.
"""

from __future__ import annotations

import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import zipfile

import common

TARGET_S = 0.5
#: Extra start-up for 100,000 entries, warm cache (issue 20).
STARTUP_TARGET_S = 0.15
STAT_CALLS = ("newfstatat", "statx", "stat", "lstat", "fstat", "fstatat64")

SCRIPT = """
import sys, time
sys.setswitchinterval(1)
from runai_entry.checkpoints import discover
import glob, os
what, path, n = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.perf_counter()
if what in ("discover", "verify"):
    found = discover(path, timeout=None, max_candidates=None if n == "all" else int(n),
                     verify=what == "verify")
    chosen = found.chosen.name if found.chosen else None
elif what == "glob":
    chosen = os.path.basename(max(glob.glob(os.path.join(path, "*.pt")), key=os.path.getmtime))
else:
    chosen = None
print(time.perf_counter() - t, chosen)
"""


def build(base: str, quick: bool, only: str | None) -> dict[str, str]:
    if only == "torch":
        return torch_dirs(base)
    files = numbered_files(base, "files-100k", tiny_zip())
    junk = numbered_files(base, "files-100k junk", b"\x00junk" * 20)
    empty = os.path.join(base, "empty")
    os.mkdir(empty)
    fixed = {"files-100k": files, "files-100k junk": junk, "empty": empty}
    if only == "side-by-side":
        return fixed
    if quick:
        return {**fixed, "hf-10k": hf_dirs(base)}
    last = os.path.join(base, "files-100k-last")
    os.mkdir(last)
    for name in os.listdir(files):
        os.link(os.path.join(files, name), os.path.join(last, name))
    with open(os.path.join(last, "last.ckpt"), "wb") as f:
        f.write(b"x")
    return {**fixed, "files-100k + last.ckpt": last, "hf-10k": hf_dirs(base),
            **torch_dirs(base)}


def tiny_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("data.pkl", b"x")
    return buf.getvalue()


def numbered_files(base: str, name: str, data: bytes) -> str:
    path = os.path.join(base, name)
    os.mkdir(path)
    for i in range(100_000):
        with open(os.path.join(path, f"step-{i:08d}.pt"), "wb") as f:
            f.write(data)
    return path


def torch_dirs(base: str) -> dict[str, str]:
    import torch

    whole = os.path.join(base, "torch-3")
    torn = os.path.join(base, "torch-3-torn")
    os.mkdir(whole)
    os.mkdir(torn)
    state = {f"layer{i}.weight": torch.zeros(256, 256) for i in range(400)}  # 400 × 256 KiB
    for step in (1, 2, 3):
        name = f"step-{step}.pt"
        torch.save(state, os.path.join(whole, name))
        if step < 3:
            os.link(os.path.join(whole, name), os.path.join(torn, name))
    with open(os.path.join(whole, "step-3.pt"), "rb") as src, \
            open(os.path.join(torn, "step-3.pt"), "wb") as dst:
        dst.write(src.read(os.path.getsize(src.name) // 2))
    os.sync()
    return {"torch-3": whole, "torch-3, newest torn": torn}


def hf_dirs(base: str) -> str:
    hf = os.path.join(base, "hf-10k")
    os.mkdir(hf)
    for i in range(1, 10_001):
        d = os.path.join(hf, f"checkpoint-{i}")
        os.mkdir(d)
        with open(os.path.join(d, "trainer_state.json"), "w") as f:
            f.write("{}")
    os.sync()
    return hf


SIDE_BY_SIDE = """
import json, os, random, sys, time
from runai_entry.checkpoints import discover
path, rounds = sys.argv[1], int(sys.argv[2])
def listing():
    with os.scandir(path) as it:
        return list(it)
def discovery():
    return discover(path, timeout=None, verify=True)
runs = {"scandir": listing, "discover": discovery}
times = {k: [] for k in runs}
for _ in range(rounds):
    for k in random.sample(list(runs), len(runs)):
        t = time.perf_counter()
        runs[k]()
        times[k].append(time.perf_counter() - t)
found = discovery()
print(json.dumps({**times, "chosen": found.chosen and found.chosen.name,
                  "gave_up": getattr(found, "gave_up", None), "skipped": len(found.skipped)}))
"""


def side_by_side(trees: dict[str, str], dirs: dict[str, str], rounds: int,
                 report: common.Report) -> None:
    """discover() against os.scandir in one interpreter, per tree, in turn."""
    print(f"\nin-process, {rounds} rounds each, scandir and discover(verify=True) in turn")
    print(f"  {'tree':<8}{'directory':<18}{'scandir median s':>18}{'discover median s':>19}"
          f"{'extra s':>9}  chosen / gave_up / skipped")
    for dirname in ("files-100k", "files-100k junk"):
        for tree, root in trees.items():
            out = subprocess.run([common.PYTHON, "-c", SIDE_BY_SIDE, dirs[dirname], str(rounds)],
                                 check=True, capture_output=True, text=True, cwd=root,
                                 env={**os.environ, "PYTHONPATH": root}).stdout
            got = json.loads(out)
            scan, disc = statistics.median(got["scandir"]), statistics.median(got["discover"])
            print(f"  {tree:<8}{dirname:<18}{scan:>18.3f}{disc:>19.3f}{disc - scan:>9.3f}  "
                  f"{got['chosen']} / {got['gave_up']} / {got['skipped']}", flush=True)
            report.row(f"{dirname}: in-process discover(verify=True) vs os.scandir ({tree})",
                       {"runai-entry": f"{disc:.3f} s", "other": f"scandir {scan:.3f} s, "
                        f"extra {disc - scan:.3f} s"}, "(reading)", None)


def startup(trees: dict[str, str], dirs: dict[str, str], rounds: int,
            report: common.Report) -> None:
    """runai-entry --checkpoint-dir D -- date: to the job's start, and the whole run."""
    cases = [(tree, d) for tree in trees for d in ("empty", "files-100k", "files-100k junk")]
    to_job: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    whole: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    cpu: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    for _, (tree, d) in common.interleaved(cases, rounds):
        env = {**os.environ, "PYTHONPATH": trees[tree], "RUNAI_ENTRY_LOG_LEVEL": "warning"}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time_ns()
        out = subprocess.run([common.PYTHON, "-m", "runai_entry", "--checkpoint-dir", dirs[d],
                              "--", "sh", "-c", "date +%s%N", "sh"], check=True,
                             capture_output=True, text=True, env=env, cwd=trees[tree]).stdout
        end = time.time_ns()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        to_job[(tree, d)].append((int(out.split()[0]) - start) / 1e9)
        whole[(tree, d)].append((end - start) / 1e9)
        # CPU of runai-entry, its helpers and the job, whole run: what the load cannot inflate
        # as much as it does wall time.
        cpu[(tree, d)].append(after.ru_utime + after.ru_stime
                              - before.ru_utime - before.ru_stime)
    print(f"\nstart-up, {rounds} rounds interleaved: python -m runai_entry --checkpoint-dir D"
          " -- sh -c 'date +%s%N' sh")
    print(f"  {'tree':<8}{'directory':<18}{'to the job s':>14}{'extra s':>9}"
          f"{'whole run s':>13}{'extra s':>9}{'CPU, whole s':>14}{'extra s':>9}")
    for tree, d in cases:
        job, run = statistics.median(to_job[(tree, d)]), statistics.median(whole[(tree, d)])
        job0 = statistics.median(to_job[(tree, "empty")])
        run0 = statistics.median(whole[(tree, "empty")])
        used, used0 = statistics.median(cpu[(tree, d)]), statistics.median(cpu[(tree, "empty")])
        print(f"  {tree:<8}{d:<18}{job:>14.3f}{job - job0:>9.3f}{run:>13.3f}{run - run0:>9.3f}"
              f"{used:>14.3f}{used - used0:>9.3f}")
        if d == "empty":
            continue
        ok = job - job0 <= STARTUP_TARGET_S if tree == "now" and d == "files-100k" else None
        report.row(f"{d}: start-up, to the job / whole run / CPU of the whole run, extra over "
                   f"an empty directory ({tree})",
                   {"runai-entry": f"{job - job0:.3f} s / {run - run0:.3f} s / "
                                   f"{used - used0:.3f} s",
                    "other": f"empty directory: {job0:.3f} s / {run0:.3f} s / {used0:.3f} s"},
                   f"≤ {STARTUP_TARGET_S:g} s to the job" if ok is not None else "(reading)",
                   None if ok is None else ("pass" if ok else "FAIL"))


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def timed(what: str, path: str, n: str) -> tuple[float, str]:
    out = subprocess.run([common.PYTHON, "-c", SCRIPT, what, path, n], check=True,
                         capture_output=True, text=True, cwd=common.REPO).stdout.split()
    return float(out[0]), out[1]


def syscalls(what: str, path: str, n: str, tmp: str) -> dict[str, int]:
    """strace -c -f counts of the script with the call, minus the script without it."""
    counts: list[dict[str, int]] = []
    for mode in (what, "none"):
        log = os.path.join(tmp, "strace.txt")
        subprocess.run(["strace", "-c", "-f", "-o", log, common.PYTHON, "-c", SCRIPT, mode, path,
                        n], check=True, capture_output=True, cwd=common.REPO)
        table: dict[str, int] = {}
        with open(log) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 5 and fields[3].isdigit() and fields[-1] != "total":
                    table[fields[-1]] = int(fields[3])
        counts.append(table)
    return {k: v - counts[1].get(k, 0) for k, v in counts[0].items() if v - counts[1].get(k, 0)}


def main() -> int:
    cli = common.parser(__doc__.splitlines()[0])
    cli.add_argument("--only", choices=["torch", "side-by-side"],
                     help="torch: only the verification cases (torch-3), which need no 100k "
                     "directory; side-by-side: only the in-process and start-up comparisons")
    cli.add_argument("--rounds", type=int, default=10,
                     help="rounds of the side-by-side comparisons (default 10)")
    cli.add_argument("--before", metavar="TREE",
                     help="a checkout of an older commit, measured side by side with this one")
    args = cli.parse_args()
    report = common.Report("checkpoint discovery", args)
    warm_reps, cold_reps = (1, 1) if args.quick else (10, 3)
    base = common.temp_dir("discovery", "/tmp")
    print("building the directories ...", flush=True)
    dirs = build(base, args.quick, args.only)
    print(common.machine_load())
    if args.only != "torch":
        trees = {"now": common.REPO, **({"before": args.before} if args.before else {})}
        rounds = 3 if args.quick else args.rounds
        side_by_side(trees, dirs, rounds, report)
        startup(trees, dirs, rounds, report)
        if args.only == "side-by-side":
            report.note(common.machine_load())
            report.write()
            return 0
    cases = [
        ("files-100k", "verify", "10"),
        ("files-100k junk", "verify", "10"),
        ("files-100k", "discover", "10"),
        ("files-100k", "discover", "1"),
        ("files-100k", "discover", "all"),
        ("files-100k", "glob", "-"),
        ("files-100k + last.ckpt", "discover", "10"),
        ("hf-10k", "discover", "10"),
        ("hf-10k", "discover", "all"),
        ("torch-3", "discover", "10"),
        ("torch-3", "verify", "10"),
        ("torch-3, newest torn", "verify", "10"),
    ]
    if args.quick:
        cases = [c for c in cases if c[2] in ("10", "-")]
    cases = [c for c in cases if c[0] in dirs]
    can_drop = drop_caches()
    if not can_drop:
        report.note("cannot drop caches (not root?): cold figures skipped")
    print(f"\n  {'case':<48}{'warm median s':>14}{'warm max s':>12}{'cold median s':>15}"
          f"{'stat calls':>12}{'getdents64':>12}{'listdir opens':>14}  chosen")
    for dirname, what, n in cases:
        path = dirs[dirname]
        label = f"{dirname}: " + ("glob + getmtime" if what == "glob"
                                   else f"discover(max_candidates={n}"
                                   + (", verify=True)" if what == "verify" else ")"))
        timed(what, path, n)  # warm the caches
        warm = [timed(what, path, n) for _ in range(warm_reps)]
        cold = []
        for _ in range(cold_reps if can_drop else 0):
            drop_caches()
            cold.append(timed(what, path, n)[0])
        calls = syscalls(what, path, n, base)
        stats_calls = sum(calls.get(k, 0) for k in STAT_CALLS)
        opens = calls.get("openat", 0)
        w = [t for t, _ in warm]
        cold_median = statistics.median(cold) if cold else float("nan")
        print(f"  {label:<48}{statistics.median(w):>14.3f}{max(w):>12.3f}{cold_median:>15.3f}"
              f"{stats_calls:>12}{calls.get('getdents64', 0):>12}{opens:>14}  {warm[0][1]}",
              flush=True)
        if what == "glob" or (dirname.startswith("files-100k") and n == "10") \
                or dirname == "hf-10k" or "last" in dirname or dirname.startswith("torch"):
            ok = None
            if dirname == "files-100k" and what == "verify":
                cold_ok = not cold or max(cold) <= TARGET_S
                ok = max(w) <= TARGET_S and cold_ok and stats_calls < 100
            report.row(
                label,
                {"runai-entry" if what != "glob" else "reference":
                 f"warm {statistics.median(w):.3f} s, cold {cold_median:.3f} s; "
                 f"{stats_calls} stat, {calls.get('getdents64', 0)} getdents64, "
                 f"{opens} openat"},
                f"≤ {TARGET_S:g} s; stats O(candidates)" if ok is not None else "(reading)",
                None if ok is None else ("pass" if ok else "FAIL"),
            )
    report.note(f"warm: median of {warm_reps} fresh interpreters; cold: median of {cold_reps} "
                f"after drop_caches; " + common.machine_load())
    report.write()
    return 0


if __name__ == "__main__":
    with common.session():
        sys.exit(main())
