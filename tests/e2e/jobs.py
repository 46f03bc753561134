"""Run the examples the way users do: under runai-entry, requeued until they exit 0.

Everything is a real process in a session of its own, read line by line as it runs; whatever
happens, the whole session is SIGKILLed on the way out (and tests/conftest.py's autouse fixture
reaps anything that escaped it, torchrun workers included).
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.harness.spawning import PYTHON, REPO, child_env, free_port, spawn
from tests.harness.spawning import Child as Process

__all__ = ["PYTHON", "REPO", "Process", "free_port"]

EXAMPLES = REPO / "examples"
ENTRY = [PYTHON, "-m", "runai_entry"]
TORCHRUN = [PYTHON, "-m", "torch.distributed.run"]

STOPPED = re.compile(r"stop signal \(([^)]+)\): saved step (\d+) ")  # (SIGTERM) or (another rank's)
RESUMED = re.compile(r"^resumed from step-(\d+)\.(?:pt|safetensors) at step (\d+)$")
FINISHED = re.compile(r"^finished: step (\d+), .*weights sha256 ([0-9a-f]{64})")
STEP = re.compile(r"^step (\d+) loss ")


def example(name: str) -> str:
    return str(EXAMPLES / name)


def job_env(**extra: str) -> dict[str, str]:
    """The child environment of tests/harness/spawning.py, plus what the examples need here."""
    return child_env(GLOO_SOCKET_IFNAME="lo", KERAS_BACKEND="torch",
                     RUNAI_ENTRY_LOG_FORMAT="json", **extra)


def seeded_rng(name: str) -> random.Random:
    """A Random seeded from $E2E_SEED or at random; the seed is printed (pytest shows it on a
    failure) so that a failing sequence of preemptions can be replayed."""
    seed = int(os.environ.get("E2E_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{name}: E2E_SEED={seed}")
    return random.Random(seed)


@contextmanager
def started(argv: Sequence[str], env: dict[str, str] | None = None) -> Iterator[Process]:
    """Start ``argv`` with the examples' environment; SIGKILL its whole session on the way out."""
    with spawn(argv, job_env() if env is None else env) as process:
        yield process


def under_entry(checkpoint_dir: Path, command: Sequence[str], *options: str) -> list[str]:
    return [*ENTRY, "--checkpoint-dir", str(checkpoint_dir), *options, "--", *command]


_references: dict[tuple[str, ...], str] = {}


def reference_weights(command: Sequence[str], directory: Path) -> str:
    """The final weights' sha256 of ``command`` run once, uninterrupted, under runai-entry.

    Cached per command for the whole pytest run: several tests compare against the same run.
    """
    key = tuple(command)
    if key not in _references:
        with started(under_entry(directory, command)) as run:
            rc = run.wait()
            finished = run.matches(FINISHED)
            assert rc == 0 and finished, run.tail()
        _references[key] = finished[-1].group(2)
    return _references[key]


def preempted_then_finished(ckpt: Path, command: Sequence[str], rng: random.Random,
                            preemptions: int, training: str = r"^training: ",
                            spread: int = 40) -> re.Match[str]:
    """Run ``command`` under runai-entry, preempted ``preemptions`` times at random steps and
    requeued until it finishes: every stop saves the step it reached, every attempt resumes at
    exactly that step. Returns the last attempt's FINISHED line."""
    resume_at = 0
    for attempt in range(preemptions + 1):
        with started(under_entry(ckpt, command)) as run:
            if attempt:
                resumed = run.expect(RESUMED)
                assert int(resumed.group(1)) == int(resumed.group(2)) == resume_at, run.tail()
            run.expect(training)
            if attempt == preemptions:
                assert run.wait() == 0, run.tail()
                finished = run.matches(FINISHED)
                assert finished, run.tail()
                return finished[-1]
            seen = stop_at_random_step(run, rng, resume_at, spread)
            saved = run.expect(STOPPED)
            assert run.wait() == 1, run.tail()
            assert saved.group(1) == "SIGTERM"
            # The save on the stop signal holds every step done: nothing to redo.
            assert int(saved.group(2)) >= seen
            exited = run.events("exit")[-1]
            assert exited["reason"] == "preempted" and exited["code"] == 1
            resume_at = int(saved.group(2))
    raise AssertionError("unreachable: the last attempt returns")


def stop_at_random_step(run: Process, rng: random.Random, start: int, spread: int) -> int:
    """Wait until the job has done a random step in (start, start + spread], then SIGTERM
    runai-entry a random fraction of a step later. Returns the step seen last."""
    target = start + rng.randint(1, spread)
    while True:
        step = int(run.expect(STEP).group(1))
        if step >= target:
            break
    time.sleep(rng.uniform(0.0, 0.02))
    run.signal(signal.SIGTERM)
    return step
