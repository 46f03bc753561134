"""Chaos soak: preempt a real training run N times at random moments and check it recovers.

    python bench/chaos_soak.py                      # 100 preemptions of examples/train_pytorch.py
    python bench/chaos_soak.py --preemptions 8 --seed 1 --json out.json   # the CI version
    python bench/chaos_soak.py --launcher torchrun  # the DDP example, two workers

The job is ``runai-entry --checkpoint-dir DIR --verify-checkpoints -- <example>``, requeued the
way the platform does it: the same command again until it exits 0. Each preemption picks at
random

* *when*: ``startup`` (0-1.5 s after the start, usually before the job has loaded anything),
  ``step`` (a random step into the run, plus a fraction of a step), or ``save`` (the moment the
  job announces a periodic save, so the signal lands while the checkpoint is being written);
* *to whom*: ``entry`` (runai-entry only, as the kubelet does to PID 1: it forwards the stop
  signal), ``all`` (every process of the tree at once), or ``one`` (a single job process: the
  trainer, or one torchrun worker; runai-entry does not know).

It reports attempts, the exit-code histogram, the steps lost per preemption (steps done by an
attempt minus the step the next one resumed at), grace used, the checkpoints runai-entry rejected
at resume and why, and whether the final weights are bit-identical to an uninterrupted run's.
Exit status: 0 when every preemption was recovered with no step lost and the weights match.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runai_entry.supervisor.guardian import NAME as GUARDIAN  # noqa: E402
from tests.harness.spawning import Child, start  # noqa: E402  — the tests' harness, not a copy

PYTHON = sys.executable
ENTRY = [PYTHON, "-m", "runai_entry"]
STEPS_PER_EPOCH = 44  # 1,438 training digits in batches of 32 (16 per rank on two ranks)

STEP = re.compile(r"^step (\d+) loss ")
SAVING = re.compile(r"(?:^|checkpointer: )saving step (\d+)$")  # the library logs it (verbose=True)
STOPPED = re.compile(r"stop signal \(([^)]+)\): saved step (\d+) ")  # (SIGTERM) or (another rank's)
FINISHED = re.compile(r"^finished: step (\d+), .*weights sha256 ([0-9a-f]{64})")
ATTEMPT_TIMEOUT = 300.0


def job_command(launcher: str, epochs: int, width: int) -> list[str]:
    args = ["--epochs", str(epochs), "--width", str(width), "--save-every", "10", "--verbose"]
    if launcher == "python":
        return [PYTHON, str(REPO / "examples" / "train_pytorch.py"), *args]
    return [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--max-restarts", "0", str(REPO / "examples" / "train_ddp.py"), *args]


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNAI_ENTRY_")}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               RUNAI_ENTRY_LOG_FORMAT="json")
    return env


def job_processes(attempt: Child) -> list[psutil.Process]:
    """The job's processes (below runai-entry), the trainers last; not runai-entry's guardian,
    a fork of runai-entry whose command line names the training script too (and which takes no
    signal but SIGKILL: "one" aimed at it was no preemption at all)."""
    try:
        below = psutil.Process(attempt.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in below if _name(p) != GUARDIAN]


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def steps(attempt: Child) -> list[int]:
    return [int(m.group(1)) for m in map(STEP.search, attempt.lines) if m]


def finish(attempt: Child) -> int | None:
    """The attempt's exit code, or None when it is still running after ATTEMPT_TIMEOUT."""
    try:
        return attempt.wait(ATTEMPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None


def deliver(attempt: Child, to: str, rng: random.Random) -> str:
    """Send SIGTERM as ``to`` says; returns what was signalled, for the log."""
    if to == "entry":
        os.kill(attempt.proc.pid, signal.SIGTERM)
        return "runai-entry"
    tree = job_processes(attempt)
    if to == "all":
        targets = [attempt.proc.pid, *(p.pid for p in tree)]
    else:
        # "one": a single process that trains: the script itself, or one torchrun worker.
        trainers = [p for p in tree if any(s.endswith(".py") and "examples" in s
                                           for s in _cmdline(p))]
        if not trainers:  # not started yet: the process runai-entry started, whatever it is
            trainers = tree[:1]
        if not trainers:
            os.kill(attempt.proc.pid, signal.SIGTERM)
            return "runai-entry (no job process yet)"
        targets = [rng.choice(trainers).pid]
    for pid in targets:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return f"{len(targets)} process(es)"


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def preempt(attempt: Child, rng: random.Random, resume_at: int) -> dict[str, Any]:
    """Pick a moment and a delivery, wait for the moment, send the signal."""
    when = rng.choices(["startup", "step", "save"], weights=[2, 5, 3])[0]
    to = rng.choice(["entry", "entry", "all", "one"])
    deadline = time.monotonic() + ATTEMPT_TIMEOUT
    record: dict[str, Any] = {"when": when, "to": to, "in_save": False}
    if when == "startup":
        time.sleep(rng.uniform(0.0, 1.5))
    elif when == "step":
        target = resume_at + rng.randint(1, 20)
        while (line := attempt.next_line(deadline)) is not None:
            m = STEP.search(line)
            if m and int(m.group(1)) >= target:
                break
        time.sleep(rng.uniform(0.0, 0.02))
    else:
        while (line := attempt.next_line(deadline)) is not None:
            if SAVING.search(line):
                break
    last = next((line for line in reversed(attempt.lines) if not line.startswith("{")), "")
    record["in_save"] = bool(SAVING.search(last))
    record["trained_before_signal"] = bool(steps(attempt))
    record["signalled"] = deliver(attempt, to, rng)
    record["at_s"] = round(time.monotonic() - attempt.started, 3)
    return record


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_uninterrupted(command: list[str], directory: Path) -> str | None:
    attempt = start([*ENTRY, "--checkpoint-dir", str(directory), "--", *command], job_env())
    try:
        rc = finish(attempt)
        found = [m for m in map(FINISHED.search, attempt.lines) if m]
        if rc != 0 or not found:
            print("\n".join(attempt.lines[-30:]), file=sys.stderr)
            return None
        return found[-1].group(2)
    finally:
        attempt.kill()


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    # Enough steps that N preemptions never reach the end: each one lets the job progress by up
    # to 20 steps (a "step" moment) or 11 (a "save" moment), and a loaded machine adds more.
    epochs = args.epochs or max(2, (args.preemptions * 20) // STEPS_PER_EPOCH + 2)
    command = job_command(args.launcher, epochs, args.width)
    say(f"chaos soak: {args.preemptions} preemptions, seed {args.seed}, {args.launcher}, "
        f"{epochs} epochs ({epochs * STEPS_PER_EPOCH} steps), in {workdir}")
    reference = run_uninterrupted(command, workdir / "reference")
    say(f"uninterrupted run: weights sha256 {reference}")

    ckpt = workdir / "ckpt"
    argv = [*ENTRY, "--checkpoint-dir", str(ckpt), "--verify-checkpoints",
            "--grace-period", args.grace_period, "--", *command]
    attempts: list[dict[str, Any]] = []
    preemptions = 0
    final_sha = None
    while len(attempts) < args.preemptions * 3 + 10:  # a bound, should recovery never finish
        resume_at = attempts[-1]["reached"] if attempts else 0
        attempt = start(argv, job_env())
        try:
            record: dict[str, Any] = {"attempt": len(attempts) + 1, "preemption": None}
            if preemptions < args.preemptions:
                record["preemption"] = preempt(attempt, rng, resume_at)
                preemptions += 1
            rc = finish(attempt)
        finally:
            attempt.kill()
        resuming = attempt.events("resuming")
        if resuming:
            record["resumed_at"] = resuming[-1]["step"]
        elif attempt.events("starting_fresh"):
            record["resumed_at"] = 0
        else:  # runai-entry died before choosing a checkpoint: the job never started
            record["resumed_at"] = None
        record["skipped"] = [(e["name"], e["reason"]) for e in attempt.events("checkpoint_skipped")]
        before = resume_at if record["resumed_at"] is None else record["resumed_at"]
        record["reached"] = max([before, *steps(attempt)])
        stopped = [m for m in map(STOPPED.search, attempt.lines) if m]
        record["saved_on_stop"] = int(stopped[-1].group(2)) if stopped else None
        exits = attempt.events("exit")
        record["exit_code"] = "hung" if rc is None else rc
        record["reason"] = exits[-1]["reason"] if exits else None
        record["grace_used"] = exits[-1].get("grace_used") if exits else None
        record["ran_for"] = round(time.monotonic() - attempt.started, 3)
        attempts.append(record)
        finished = [m for m in map(FINISHED.search, attempt.lines) if m]
        p = record["preemption"] or {}
        say(f"attempt {record['attempt']:3d}: resumed at {record['resumed_at']!s:>4}, "
            f"reached {record['reached']:4d}, "
            + (f"SIGTERM {p['when']:7s} to {p['to']:5s} at {p['at_s']:6.2f}s"
               + (" (during a save)" if p["in_save"] else "") + ", " if p else "")
            + f"exit {record['exit_code']} {record['reason']}"
            + (f", grace used {record['grace_used']:.2f}s" if record["grace_used"] else ""))
        if rc == 0 and finished:
            final_sha = finished[-1].group(2)
            break
        if rc is None:
            say("attempt hung: giving up")
            break
        if rc not in (0, 1):
            say("\n".join(attempt.lines[-15:]))
    return report(args, epochs, reference, final_sha, attempts)


def report(args: argparse.Namespace, epochs: int, reference: str | None,
           final_sha: str | None, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    # Steps lost by an attempt: the steps it did minus the step the next attempt that started
    # the job resumed at (an attempt whose runai-entry died before starting it is skipped).
    for i, a in enumerate(attempts):
        later = [b for b in attempts[i + 1:] if b["resumed_at"] is not None]
        a["lost"] = a["reached"] - later[0]["resumed_at"] if later else None
    preempted = [a for a in attempts if a["preemption"]]
    lost = [a.get("lost") for a in preempted]
    recovered = [a for a in preempted if a.get("lost") is not None]
    grace = [a["grace_used"] for a in attempts if a["grace_used"] is not None]
    skipped = collections.Counter(reason for a in attempts for _, reason in a["skipped"])
    codes = collections.Counter(str(a["exit_code"]) for a in attempts)
    moments = collections.Counter(
        (a["preemption"]["when"], a["preemption"]["to"]) for a in preempted)
    in_save = sum(1 for a in preempted if a["preemption"]["in_save"])
    result = {
        "command": " ".join(["python bench/chaos_soak.py", *sys.argv[1:]]),
        "seed": args.seed,
        "launcher": args.launcher,
        "epochs": epochs,
        "preemptions": len(preempted),
        "attempts": len(attempts),
        "recovered": len(recovered),
        "exit_codes": dict(sorted(codes.items())),
        "steps_lost": {"total": sum(x for x in lost if x is not None),
                       "max": max((x for x in lost if x is not None), default=None),
                       "preemptions_losing_steps": sum(1 for x in lost if x)},
        "grace_used_s": {"p50": percentile(grace, 0.5), "p99": percentile(grace, 0.99),
                         "max": max(grace, default=None), "n": len(grace)},
        "signals_during_a_save": in_save,
        "moments": {f"{w}/{t}": n for (w, t), n in sorted(moments.items())},
        "checkpoints_rejected": dict(skipped),
        "reference_sha256": reference,
        "final_sha256": final_sha,
        "weights_match": reference is not None and final_sha == reference,
        "attempt_log": attempts,
    }
    ok = (result["recovered"] == args.preemptions and result["weights_match"]
          and result["steps_lost"]["total"] == 0)
    result["ok"] = ok
    g = result["grace_used_s"]
    lines = [
        "",
        "chaos soak report",
        f"  preemptions        {len(preempted)} (recovered: {len(recovered)} of {len(preempted)})",
        f"  attempts           {len(attempts)}",
        f"  exit codes         {', '.join(f'{k}: {v}' for k, v in result['exit_codes'].items())}",
        f"  moments            {', '.join(f'{k}: {v}' for k, v in result['moments'].items())}",
        f"  during a save      {in_save}",
        f"  steps lost         {result['steps_lost']['total']} in total, "
        f"{result['steps_lost']['preemptions_losing_steps']} preemptions lost any "
        f"(max {result['steps_lost']['max']})",
        "  grace used         " + (f"p50 {g['p50']:.2f}s  p99 {g['p99']:.2f}s  max {g['max']:.2f}s"
                                   f"  (n={g['n']}, runai-entry's own measure)" if grace
                                   else "none measured"),
        "  rejected at resume " + (", ".join(f"{r}: {n}" for r, n in skipped.items())
                                   or "none"),
        f"  final weights      {'identical' if result['weights_match'] else 'DIFFERENT'} "
        f"({final_sha})",
        f"verdict: {'OK' if ok else 'FAILED'}",
    ]
    say("\n".join(lines))
    return result


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preemptions", type=int, default=100)
    p.add_argument("--seed", type=int, default=None, help="default: random, and printed")
    p.add_argument("--launcher", choices=["python", "torchrun"], default="python")
    p.add_argument("--epochs", type=int, default=0, help="default: enough for the preemptions")
    p.add_argument("--width", type=int, default=16, help="the example's --width")
    p.add_argument("--grace-period", default="30s")
    p.add_argument("--workdir", type=Path, help="default: a temporary directory, removed after")
    p.add_argument("--json", type=Path, help="write the full results here")
    args = p.parse_args()
    # Killed by hand: unwind, so that every attempt's process tree is SIGKILLed on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = soak(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="chaos-soak-") as tmp:
            result = soak(args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
