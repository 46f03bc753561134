"""Run every benchmark and write one Markdown table: ``python bench/run_all.py [--quick]``.

Each benchmark runs as its own process (its detail goes to the terminal as it runs); their
summary rows are gathered into one table, printed and written to bench/results/latest.md with
the machine it ran on; the full console output goes to bench/results/latest.log.
Use the repository's venv interpreter (``.venv/bin/python bench/run_all.py``); torch is needed
only by atomic_save.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import common

# reaping last: its 10,000 processes inflate the load average for minutes after it.
SCRIPTS = ["signal_latency.py", "exit_latency.py", "startup.py", "idle.py", "deadline.py",
           "discovery.py", "atomic_save.py", "reaping.py"]
COLUMNS = ["runai-entry", "tini", "dumb-init"]


def machine() -> list[str]:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "?")
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    commit = subprocess.run(["git", "-C", common.REPO, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    versions = []
    for tool in ([common.TINI, "--version"], [common.DUMB_INIT, "--version"]):
        out = subprocess.run(tool, capture_output=True, text=True)
        versions.append((out.stdout + out.stderr).strip())
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"runai-entry commit {commit}",
        f"- machine: {os.cpu_count()} CPUs ({model}), {mem_kb / 2**20:.0f} GiB RAM, "
        f"kernel {platform.release()}",
        f"- Python {platform.python_version()} ({common.PYTHON}); {'; '.join(versions)}",
    ]


def cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|")


def table(results: list[dict]) -> list[str]:
    lines = ["| benchmark | metric | " + " | ".join(COLUMNS)
             + " | other / ratio | target | verdict |",
             "|" + "---|" * (len(COLUMNS) + 5)]
    for result in results:
        for row in result["rows"]:
            values = dict(row["values"])
            main = [cell(values.pop(c, "")) for c in COLUMNS]
            other = "; ".join(f"{k}: {v}" if k not in ("ratio", "reference") else v
                              for k, v in values.items())
            verdict = row["verdict"] or "—"
            if verdict.startswith("FAIL"):
                verdict = f"**{verdict}**"
            lines.append(f"| {row['benchmark']} | {cell(row['metric'])} | " + " | ".join(main)
                         + f" | {cell(other)} | {cell(row['target'])} | {verdict} |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions: under 2 minutes")
    p.add_argument("--only", nargs="+", metavar="SCRIPT", help="run only these (e.g. idle.py)")
    args = p.parse_args()
    os.makedirs(common.RESULTS, exist_ok=True)
    scripts = [s if s.endswith(".py") else s + ".py" for s in (args.only or SCRIPTS)]
    results, failed = [], []
    header = machine()
    load_before = common.machine_load()
    started = time.monotonic()
    log_path = os.path.join(common.RESULTS, "latest.log")
    with open(log_path, "w", encoding="utf-8") as log, \
            tempfile.TemporaryDirectory(prefix="runai-bench-") as tmp:
        for script in scripts:
            out_json = os.path.join(tmp, script + ".json")
            argv = [sys.executable, os.path.join(common.BENCH, script), "--json", out_json]
            if args.quick:
                argv.append("--quick")
            t = time.monotonic()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, cwd=common.REPO)
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    sys.stdout.write(line)
                    log.write(line)
                proc.wait()
            except KeyboardInterrupt:
                proc.terminate()  # the benchmark cleans up its own processes on SIGTERM
                proc.wait()
                raise
            took = f"({script}: {time.monotonic() - t:.0f} s)\n"
            sys.stdout.write(took)
            log.write(took)
            if proc.returncode != 0 or not os.path.exists(out_json):
                failed.append(script)
                continue
            with open(out_json, encoding="utf-8") as f:
                results.append(json.load(f))
    lines = [f"# runai-entry benchmarks{' (--quick)' if args.quick else ''}", "", *header,
             f"- machine load: before {load_before}; after {common.machine_load()}",
             f"- suite wall time: {time.monotonic() - started:.0f} s", "", *table(results), ""]
    for result in results:
        for note in result["notes"]:
            lines.append(f"- {result['benchmark']}: {note}")
    if failed:
        lines.append(f"\n**Benchmarks that did not finish: {', '.join(failed)}** "
                     f"(see {log_path})")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    with open(os.path.join(common.RESULTS, "latest.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
