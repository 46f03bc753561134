"""Jobs that load their data in worker processes, preempted under runai-entry.

PyTorch's DataLoader workers die of SIGTERM, and their trainer then raises instead of saving: the
stop signal must reach the trainer and leave its workers to it
(runai_entry/supervisor/delivery.py). Each job here saves at the stop and the next attempt starts
at exactly that step, with the workers started by fork, spawn and forkserver, behind a shell that
does not exec, under torchrun, and with a service process that the trainer still talks to while it
saves. The exactness tests resume bit-identically with torchdata's StatefulDataLoader as the
Checkpointer's data position.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.e2e.jobs import PYTHON, TORCHRUN, Process, started, under_entry
from tests.training_scripts.procs import script

SCRIPT = script("loader_workers.py")
STEP = re.compile(r"^step (\d+)$")
STOPPED = re.compile(r"^stopped at step (\d+)$")
RESUMED = re.compile(r"^resumed from \S+ at step (\d+)$")
WEIGHTS = re.compile(r"^weights ([0-9a-f]{64})$")
RAISED = re.compile(r" raised |DataLoader worker|is killed by signal")


def job(ckpt: Path, *args: str) -> list[str]:
    return [PYTHON, SCRIPT, "--ckpt-dir", str(ckpt), *args]


def preempt_after(run: Process, steps: int) -> int:
    """Once the workers run and ``steps`` more steps are done, SIGTERM runai-entry; the step
    the job saved at the stop."""
    run.expect(r"^worker pids ")
    first = int(run.expect(STEP).group(1))
    while int(run.expect(STEP).group(1)) < first + steps:
        pass
    run.signal(signal.SIGTERM)
    stopped = int(run.expect(STOPPED).group(1))
    assert run.wait() == 1, run.tail()
    assert not run.matches(RAISED), run.tail()
    assert run.events("exit")[-1]["reason"] == "preempted"
    return stopped


def resume_and_finish(ckpt: Path, command: list[str], at: int) -> str:
    """The next attempt: it must start at exactly ``at``; returns its final weights."""
    with started(under_entry(ckpt, command)) as run:
        assert int(run.expect(RESUMED).group(1)) == at, run.tail()
        weights = run.expect(WEIGHTS).group(1)
        assert run.wait() == 0, run.tail()
    return weights


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_trainer_saves_at_the_stop_and_resumes_there(tmp_path: Path, method: str) -> None:
    """The trainer saves at the stop, with its service still answering; nothing raises."""
    ckpt = tmp_path / "ckpt"
    command = job(ckpt, "--start-method", method, "--service", "--step-delay", "0.02",
                  "--steps", "100000")
    with started(under_entry(ckpt, command)) as run:
        stopped = preempt_after(run, 5)
        assert run.matches(re.compile(rf"^service answered ack {stopped}$")), run.tail()
    finish = job(ckpt, "--start-method", method, "--steps", str(stopped + 3))
    resume_and_finish(ckpt, finish, stopped)


@pytest.mark.slow
def test_behind_a_shell_that_does_not_exec(tmp_path: Path) -> None:
    """The shell dies of the signal; python below it handles it and saves; its workers live."""
    ckpt = tmp_path / "ckpt"
    trainer = " ".join(job(ckpt, "--step-delay", "0.02", "--steps", "100000"))
    with started(under_entry(ckpt, ["sh", "-c", f"{trainer}; echo after"])) as run:
        stopped = preempt_after(run, 5)
    resume_and_finish(ckpt, job(ckpt, "--steps", str(stopped + 3)), stopped)


@pytest.mark.slow
def test_torchrun_two_ranks_each_with_data_workers(tmp_path: Path) -> None:
    """torchrun's agent answers SIGTERM by killing each worker's session, data workers and
    all: the ranks get the stop signal first, the agent only once they are gone."""
    ckpt = tmp_path / "ckpt"

    def ranks(*args: str) -> list[str]:
        return [*TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "0",
                SCRIPT, "--ckpt-dir", str(ckpt), *args]

    with started(under_entry(ckpt, ranks("--step-delay", "0.02", "--steps", "100000"))) as run:
        stopped = preempt_after(run, 5)
    resume_and_finish(ckpt, ranks("--steps", str(stopped + 3)), stopped)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "world"), [("fork", 1), ("spawn", 1), ("fork", 2),
                                               ("spawn", 2)])
def test_stateful_loader_resumes_bit_identical(tmp_path: Path, method: str, world: int) -> None:
    """With StatefulDataLoader as the data position, the workers' prefetching does not move
    the resume: preempted mid-epoch, the run ends with an uninterrupted run's weights."""
    def command(ckpt: Path, *args: str) -> list[str]:
        options = ["--stateful", "--start-method", method, "--steps", "30", *args]
        if world == 1:
            return job(ckpt, *options)
        return [*TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "0",
                SCRIPT, "--ckpt-dir", str(ckpt), *options]

    with started(under_entry(tmp_path / "reference", command(tmp_path / "reference"))) as run:
        expected = run.expect(WEIGHTS).group(1)
        assert run.wait() == 0, run.tail()
    ckpt = tmp_path / "ckpt"
    # 96 samples / world / 8 per batch: the stop falls inside the first or second epoch.
    with started(under_entry(ckpt, command(ckpt, "--step-delay", "0.1"))) as run:
        stopped = preempt_after(run, 3)
    assert 0 < stopped < 30
    assert resume_and_finish(ckpt, command(ckpt), stopped) == expected
