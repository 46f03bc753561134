"""Exit latency: the job's last process exits → the supervisor has exited.

Settled: each run starts a supervisor in front of ``probe exit-on-stdin``, waits until the
supervisor sleeps in sigtimedwait (so runai-entry's late imports are not counted), then writes
one byte to the probe's stdin: the probe stamps CLOCK_MONOTONIC and exits.

At once: the job is ``probe stamp``, which stamps and exits as soon as it is exec'd, while the
supervisor is still finishing its own start (a job that fails at import, ``-- true``).

The benchmark stamps the moment its blocking waitpid on the supervisor returns. Its own
wake-up is in every peer's figure alike. Peers alternate in a fresh random order each round.
"""

from __future__ import annotations

import subprocess
import sys

import common

TARGET_RATIO = 1.5
TARGET_PLUS_MS = 1.0


def one(peer: str, env: dict[str, str], probe: str) -> float:
    job = common.start(peer, [probe, "exit-on-stdin"], env=env, stdin=subprocess.PIPE)
    assert job.proc.stdin is not None
    if not common.read_line(job, peer).startswith("ready"):
        raise RuntimeError(f"{peer}: no ready line")
    common.wait_until_waiting(job.pid)
    job.proc.stdin.write("x")
    job.proc.stdin.flush()
    exited = int(common.read_line(job, peer).split()[1])
    job.proc.wait()  # the exit itself, not the harness's readers
    done = common.monotonic_ns()
    job.kill()
    return (done - exited) / 1e6


def at_once(peer: str, env: dict[str, str], probe: str) -> float:
    job = common.start(peer, [probe, "stamp"], env=env)
    exited = int(common.read_line(job, peer).split()[1])
    job.proc.wait()  # the exit itself, not the harness's readers
    done = common.monotonic_ns()
    job.kill()
    return (done - exited) / 1e6


def main() -> int:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    report = common.Report("exit latency", args)
    reps = 10 if args.quick else 200
    probe = common.probe()
    variants = {
        "runai-entry": ("runai-entry", {}),
        "runai-entry (info log)": ("runai-entry", {"RUNAI_ENTRY_LOG_LEVEL": "info"}),
        "tini": ("tini", {}),
        "dumb-init": ("dumb-init", {}),
    }
    print(common.machine_load())
    series: dict[str, list[float]] = {label: [] for label in variants}
    early: dict[str, list[float]] = {label: [] for label in variants}
    for _, label in common.interleaved(variants, reps):
        peer, env = variants[label]
        series[label].append(one(peer, env, probe))
        early[label].append(at_once(peer, env, probe))
    for metric, title, data in (
            ("job exiting at once: median / p99", "job exits at once (still starting)", early),
            ("median / p99", "last job process exits", series)):
        stats = common.print_stats(f"{title} → supervisor reaped, {reps} runs each", "ms",
                                   data, baseline="tini")
        ours, tini = stats["runai-entry"], stats["tini"]
        limit = TARGET_RATIO * tini["median"] + TARGET_PLUS_MS
        report.row(
            metric,
            {label: common.cell(s, "ms") for label, s in stats.items()}
            | {"ratio": f"median {common.ratio(ours['median'], tini['median'])} of tini "
                        f"(limit {limit:.3f} ms)"},
            f"median ≤ {TARGET_RATIO}× tini + {TARGET_PLUS_MS:g} ms",
            "pass" if ours["median"] <= limit else "FAIL",
        )
    report.note(f"{reps} runs per peer, interleaved; " + common.machine_load())
    report.write()
    return 0


if __name__ == "__main__":
    with common.session():
        sys.exit(main())
