"""Storage that may hang: what running its I/O in helper processes costs, and what it buys.

1. Start-up with a checkpoint directory (a local one, 20 checkpoints): runai-entry's exec → the
   job's exec (probe exec-stamp … probe stamp), in the container form (settings in the
   environment). With ``--src DIR`` the same runs also import runai-entry from DIR (an older
   checkout), side by side, so a change's cost is measured in one run.
2. SIGTERM while the checkpoint directory hangs (sshfs over loopback, its sftp-server stopped;
   as tests/harness/netfs.py): SIGTERM → runai-entry's exit. Target ≤ 1 s. Skipped without
   sshfs/sshd.

    .venv/bin/python bench/storage.py [--quick] [--src /tmp/old/checkout]
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import common

sys.path.insert(0, common.REPO)

from tests.harness.netfs import NetworkMount, missing, wait_for_hung_helper


def startup(env: dict[str, str], n: int) -> list[float]:
    probe = common.probe()
    times = []
    for _ in range(n):
        out = subprocess.run([probe, "exec-stamp", common.PYTHON, "-m", "runai_entry", "--",
                              probe, "stamp"], env=env, capture_output=True, check=True).stdout
        stamps = dict(line.split()[:2] for line in out.decode().splitlines())
        times.append((int(stamps["S"]) - int(stamps["E"])) / 1e6)
    return times


def sigterm_while_hung(n: int) -> list[float]:
    root = Path(common.temp_dir("netfs"))
    mount = NetworkMount(root)
    try:
        ck = mount.mount / "ck"
        ck.mkdir()
        (ck / "step-00000001.pt").write_bytes(pickle.dumps(None, protocol=4))
        mount.freeze()
        times = []
        env = dict(os.environ, RUNAI_ENTRY_CHECKPOINT_DIR=str(ck),
                   RUNAI_ENTRY_LOG_LEVEL="warning", RUNAI_ENTRY_LOG_FORMAT="json")
        for _ in range(n):
            proc = subprocess.Popen([common.PYTHON, "-m", "runai_entry", "--", "true"],
                                    env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            wait_for_hung_helper(proc.pid)
            sent = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            code = proc.wait(30)
            times.append((time.monotonic() - sent) * 1e3)
            if code != 1:
                raise RuntimeError(f"exit {code}, not the preempt code")
        return times
    finally:
        mount.close()


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--src", help="also measure runai-entry imported from this checkout")
    args = p.parse_args()
    report = common.Report("storage", args)
    n = 10 if args.quick else 40
    print(common.machine_load())

    ck = common.temp_dir("ck")
    for i in range(20):
        # Pickles, as torch.save's legacy format: verification (on by default) passes them.
        Path(ck, f"step-{i:08d}.pt").write_bytes(pickle.dumps(b"x" * 1024, protocol=4))
    base = {k: v for k, v in os.environ.items() if not k.startswith("RUNAI_ENTRY_")}
    base.update(RUNAI_ENTRY_LOG_LEVEL="warning", RUNAI_ENTRY_LOG_FORMAT="json",
                PYTHONPATH=common.REPO)
    series = {}
    sources = {"this checkout": common.REPO, **({"--src": args.src} if args.src else {})}
    for _ in range(2):  # interleaved rounds, so a load spike hits every variant alike
        for name, src in sources.items():
            env = dict(base, PYTHONPATH=src)
            series.setdefault(f"{name}, no dir", []).extend(startup(env, n // 2))
            env["RUNAI_ENTRY_CHECKPOINT_DIR"] = ck
            series.setdefault(f"{name}, --checkpoint-dir", []).extend(startup(env, n // 2))
    stats = common.print_stats("start-up: exec → job's exec", "ms", series)
    for name in sources:
        with_dir, without = stats[f"{name}, --checkpoint-dir"], stats[f"{name}, no dir"]
        report.row(f"start-up with --checkpoint-dir ({name}): median / p99",
                   {"runai-entry": common.cell(with_dir, "ms"),
                    "other / ratio": f"no dir {common.cell(without, 'ms')}; +"
                    f"{with_dir['median'] - without['median']:.1f} ms"},
                   "(reading)", None)

    why = missing()
    if why:
        print(f"\nSIGTERM while the mount hangs: skipped ({why})")
    else:
        hung = common.print_stats("SIGTERM while the mount hangs → exit", "ms",
                                  {"runai-entry": sigterm_while_hung(5 if args.quick else 20)})
        s = hung["runai-entry"]
        report.row("SIGTERM while the checkpoint mount hangs → exit (preempt code): median / max",
                   {"runai-entry": f"{common.fmt(s['median'], 'ms')} / max "
                    f"{common.fmt(s['max'], 'ms')}"},
                   "≤ 1 s", "pass" if s["max"] <= 1000 else "FAIL")
    report.write()


if __name__ == "__main__":
    with common.session():
        main()
