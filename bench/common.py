"""What every benchmark shares: the peers, the probe, statistics, results, and clean-up.

Each benchmark script runs on its own (``python bench/signal_latency.py --quick``) and, given
``--json PATH``, also writes its summary rows there for ``run_all.py`` to put in one table.

Clean-up: the benchmark process makes itself a child subreaper, so every process it starts —
supervisors, their jobs, and anything those orphan — stays below it; :func:`kill_everything`
(run on exit, on Ctrl-C and on SIGTERM) SIGKILLs and reaps all of them, and temporary
directories are removed by :func:`temp_dir`'s own registry.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, REPO)  # the tests' child-process harness is the benchmarks' too
from tests.harness.diskfs import drop_cache as drop_cache  # noqa: E402
from tests.harness.spawning import Child as Child  # noqa: E402

RESULTS = os.path.join(BENCH, "results")

#: The interpreter and console script under test: the repository's venv (the editable install),
#: unless RUNAI_ENTRY_BIN points at another install (run_all.py's regular-install pass).
PYTHON = os.environ.get("BENCH_PYTHON") or os.path.join(REPO, ".venv", "bin", "python")
RUNAI_ENTRY = os.environ.get("RUNAI_ENTRY_BIN") or os.path.join(REPO, ".venv", "bin", "runai-entry")
TINI = shutil.which("tini") or "/usr/bin/tini"
DUMB_INIT = shutil.which("dumb-init") or "/usr/bin/dumb-init"

#: How each supervisor is started in front of a job. tini: its default forwarding (to the child
#: only, no -g), plus -s because it is not PID 1 here and otherwise warns and does not reap.
#: dumb-init: its default (setsid mode, forwards to the child's process group).
#: runai-entry: the container form (no option: click is not imported), logs at warning; the
#: settings go in the environment (see SUPERVISOR_ENV).
SUPERVISORS: dict[str, list[str]] = {
    "runai-entry": [RUNAI_ENTRY, "--"],
    "tini": [TINI, "-s", "--"],
    "dumb-init": [DUMB_INIT],
}
SUPERVISOR_ENV: dict[str, dict[str, str]] = {
    "runai-entry": {"RUNAI_ENTRY_LOG_LEVEL": "warning", "RUNAI_ENTRY_LOG_FORMAT": "json"},
    "tini": {},
    "dumb-init": {},
}
PEERS = tuple(SUPERVISORS)
#: Not a peer: the least a Python supervisor can do (bench/python_floor.py), the floor under
#: runai-entry's signal latency on this machine.
SUPERVISORS["python floor"] = [PYTHON, os.path.join(BENCH, "python_floor.py")]
SUPERVISOR_ENV["python floor"] = {}


def interleaved(labels: Iterable[str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, label) for every label in every round, in a fresh random order each round, so
    that the machine's noise falls on every peer alike."""
    order = list(labels)
    for n in range(rounds):
        random.shuffle(order)
        for label in order:
            yield n, label


def monotonic_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# -- arguments and results ------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer repetitions (for debugging)")
    p.add_argument("--json", metavar="PATH", help="also write the summary rows here")
    return p


class Report:
    """Collects a benchmark's summary rows and prints its detail as it goes."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        print(f"## {name}{' (quick)' if args.quick else ''}", flush=True)

    def row(self, metric: str, values: dict[str, str], target: str, verdict: str | None) -> None:
        """One line of the summary table: a metric, one cell per peer, the target and verdict."""
        self.rows.append({"benchmark": self.name, "metric": metric, "values": values,
                          "target": target, "verdict": verdict})

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"note: {text}", flush=True)

    def print_markdown(self) -> None:
        """The summary rows as docs/benchmarks.md's table rows: metric, each cell, target,
        verdict."""
        for row in self.rows:
            cells = " | ".join(str(v) for v in row["values"].values() if v != "")
            print(f"| {row['metric']} | {cells} | {row['target']} | {row['verdict']} |",
                  flush=True)

    def write(self) -> None:
        if self.args.json:
            with open(self.args.json, "w", encoding="utf-8") as f:
                json.dump({"benchmark": self.name, "rows": self.rows, "notes": self.notes}, f)


# -- statistics -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every value printed was measured)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "min": min(values),
        "median": statistics.median(values),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def print_stats(title: str, unit: str, series: Mapping[str, Sequence[float]],
                baseline: str | None = None) -> dict[str, dict[str, float]]:
    """Print min / median / p99 / max per peer, and the median and p99 ratios to ``baseline``."""
    stats = {name: summary(values) for name, values in series.items() if values}
    width = max(22, *(len(name) + 2 for name in stats))
    print(f"\n{title} ({unit})")
    print(f"  {'':<{width}}{'n':>6}{'min':>11}{'median':>11}{'p99':>11}{'max':>11}"
          + (f"{'med ratio':>11}{'p99 ratio':>11}" if baseline else ""))
    for name, s in stats.items():
        line = f"  {name:<{width}}{s['n']:>6}" + "".join(
            f"{s[k]:>11.3f}" for k in ("min", "median", "p99", "max"))
        if baseline and baseline in stats:
            b = stats[baseline]
            line += f"{ratio(s['median'], b['median']):>11}{ratio(s['p99'], b['p99']):>11}"
        print(line)
    sys.stdout.flush()
    return stats


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"
    return f"{value:.3g} {unit}"


def cell(s: dict[str, float], unit: str) -> str:
    """median / p99 for the summary table."""
    return f"{fmt(s['median'], unit)} / p99 {fmt(s['p99'], unit)}"


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


# -- the probe ------------------------------------------------------------------------------------

_probe_path: str | None = None


def probe() -> str:
    """Compile bench/probe.c (static, -O2) once per benchmark process; return its path."""
    global _probe_path
    if _probe_path is None:
        out = os.path.join(temp_dir("probe"), "probe")
        subprocess.run(["gcc", "-O2", "-static", "-o", out, os.path.join(BENCH, "probe.c")],
                       check=True)
        _probe_path = out
    return _probe_path


# -- processes ------------------------------------------------------------------------------------


def become_subreaper() -> None:
    """PR_SET_CHILD_SUBREAPER: whatever our supervisors orphan comes back to us to kill."""
    from runai_entry.supervisor.prctl import set_child_subreaper  # the repository's own, not a copy

    set_child_subreaper()


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc (runai-entry's own scan; no psutil)."""
    from runai_entry.supervisor.processes import children_by_parent

    return children_by_parent().get(pid, [])


def descendants_of(pid: int) -> list[int]:
    result, todo = [], [pid]
    while todo:
        kids = children_of(todo.pop())
        result.extend(kids)
        todo.extend(kids)
    return result


def kill_everything() -> None:
    """SIGKILL and reap every descendant of this process, until none is left."""
    me = os.getpid()
    for _ in range(50):
        victims = descendants_of(me)
        if not victims:
            break
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)


def wait_until_waiting(pid: int, timeout: float = 30.0) -> None:
    """Block until ``pid`` sleeps in sigtimedwait/sigwaitinfo: the supervisor is ready.

    Every supervisor here waits for signals in rt_sigtimedwait; until it is there (runai-entry
    still importing structlog and psutil after the exec), a measurement would time its start-up.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/wchan") as f:
                if f.read().startswith("do_sigtimedwait"):
                    return
        except FileNotFoundError:
            raise RuntimeError(f"supervisor {pid} exited before it was ready") from None
        time.sleep(0.002)
    raise TimeoutError(f"supervisor {pid} never reached sigtimedwait")


def start(peer: str, job: Sequence[str], *, env: dict[str, str] | None = None,
          stdin: Any = subprocess.DEVNULL, prefix: Sequence[str] = ()) -> Child:
    """Start ``job`` under supervisor ``peer`` in a session of its own, with the tests' harness:
    stdout read line by line (:func:`read_line`), stderr kept apart in ``.stderr``."""
    full_env = dict(os.environ)
    full_env.update(SUPERVISOR_ENV[peer])
    full_env.update(env or {})
    return Child([*prefix, *SUPERVISORS[peer], *job], env=full_env, stdin=stdin, apart=True,
                 cwd=os.getcwd())


def read_line(job: Child, what: str, timeout: float = 60.0) -> str:
    """The next line ``job`` printed; an error naming ``what`` if it ends or is silent."""
    line = job.next_line(time.monotonic() + timeout)
    if line is None:
        raise RuntimeError(f"{what}: no line from the probe (exit {job.proc.poll()}); "
                           f"stderr: {job.stderr[-5:]}")
    return line.strip()


# -- temporary directories ------------------------------------------------------------------------

_temp_dirs: list[str] = []


def temp_dir(tag: str, base: str | None = None) -> str:
    path = tempfile.mkdtemp(prefix=f"runai-bench-{tag}-", dir=base)
    _temp_dirs.append(path)
    return path


def _remove_temp_dirs() -> None:
    while _temp_dirs:
        shutil.rmtree(_temp_dirs.pop(), ignore_errors=True)


# -- running a benchmark --------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Wrap a benchmark's main: subreaper, clean-up on any exit, SIGTERM treated as Ctrl-C."""
    become_subreaper()
    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(_remove_temp_dirs)
    atexit.register(kill_everything)
    try:
        yield
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        kill_everything()
        _remove_temp_dirs()
