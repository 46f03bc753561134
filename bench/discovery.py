"""Checkpoint discovery: ``discover()`` on a directory of 100,000 files and one of 10,000 step
directories, warm and cold cache, with the system calls counted by ``strace -c -f``.

Each timing runs in a fresh interpreter (imports done before the clock starts) so no Python
cache carries over; "cold" drops the page, dentry and inode caches first (``sync; echo 3 >
/proc/sys/vm/drop_caches``, root only; skipped with a note otherwise). System calls are counted
for the same script with and without the ``discover()`` call, and the difference reported, so
the interpreter's own start-up does not count.

Directories (in /tmp, on the same disk as the repository):
* files-100k: ``step-0.pt`` … ``step-99999.pt``, 1 byte each: ordered by the number in the name.
* files-100k + last.ckpt: the same plus one unnumbered ``last.ckpt`` (Lightning's habit), which
  switches the ordering to mtimes: every candidate is stat'ed.
* hf-10k: ``checkpoint-N/trainer_state.json`` for N = 1 … 10,000 (the Hugging Face layout).
* torch-3: ``step-1.pt`` … ``step-3.pt``, each a real ``torch.save`` of 400 tensors (100 MB), to
  price verification (on by default in the supervisor): it opens the chosen file and reads its
  zip central directory. torch-3, newest torn: ``step-3.pt`` cut in half, so verification
  rejects it and reads ``step-2.pt`` too.
The peer is the idiom people write today: ``max(glob('*.pt'), key=os.path.getmtime)``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

import common

TARGET_S = 0.5
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
    files = os.path.join(base, "files-100k")
    os.mkdir(files)
    for i in range(100_000):
        with open(os.path.join(files, f"step-{i}.pt"), "wb") as f:
            f.write(b"x")
    if quick:
        return {"files-100k": files, "hf-10k": hf_dirs(base), **torch_dirs(base)}
    last = os.path.join(base, "files-100k-last")
    os.mkdir(last)
    for name in os.listdir(files):
        os.link(os.path.join(files, name), os.path.join(last, name))
    with open(os.path.join(last, "last.ckpt"), "wb") as f:
        f.write(b"x")
    return {"files-100k": files, "files-100k + last.ckpt": last, "hf-10k": hf_dirs(base),
            **torch_dirs(base)}


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
    cli.add_argument("--only", choices=["torch"],
                     help="only the verification cases (torch-3), which need no 100k directory")
    args = cli.parse_args()
    report = common.Report("checkpoint discovery", args)
    warm_reps, cold_reps = (1, 1) if args.quick else (10, 3)
    base = common.temp_dir("discovery", "/tmp")
    print("building the directories ...", flush=True)
    dirs = build(base, args.quick, args.only)
    print(common.machine_load())
    cases = [
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
        if what == "glob" or (dirname == "files-100k" and n == "10") or dirname == "hf-10k" \
                or "last" in dirname or dirname.startswith("torch"):
            ok = None
            if dirname == "files-100k" and what == "discover":
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
