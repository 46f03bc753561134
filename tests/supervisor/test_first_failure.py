"""The first failure: which job process ended abnormally first, and how (torch elastic's root
cause), recorded in the history; what ends after runai-entry stops the job is a consequence."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from runai_entry.history.store import read_history
from tests.e2e.jobs import TORCHRUN, job_env, started
from tests.harness.spawning import TESTS

# The command starts a grandchild that outlives its parent (so it is re-parented to
# runai-entry, which reaps it), prints its pid, and dies of SIGKILL; the command exits 1 later.
ORPHAN_KILLED = """
import os, signal, sys, time
r, w = os.pipe()
if os.fork() == 0:
    if os.fork() == 0:
        os.close(r)
        os.write(w, str(os.getpid()).encode()); os.close(w)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(0)
os.close(w)
print("orphan", os.read(r, 64).decode(), flush=True)
os.wait()
time.sleep(1.5)
sys.exit(1)
"""


def test_a_process_killed_under_its_owner_during_the_stop_is_the_stop_failure(
        entry, tmp_path: Path) -> None:
    """The trainer's child is killed during the stop and the trainer exits unsaved: the
    history keeps it as the stop's failure, and --inspect's verdict names it beside "nothing
    was saved" rather than passing the stop as a preemption like any other."""
    owner = [sys.executable, str(TESTS / "probes" / "owner.py"), "--on-stop", "crash"]
    e = entry(["--checkpoint-dir", str(tmp_path), "--", *owner])
    e.expect("child ready")
    e.expect_event("started")
    time.sleep(0.8)  # the observer's first scan (0.5 s) has seen the child: not a synchronisation
    e.signal(signal.SIGTERM)
    died = int(e.expect(r"^child (\d+) died").group(1))
    assert e.wait() == 1
    (record,) = read_history(tmp_path)
    assert record.stop_failure.pid == died, record
    assert record.stop_failure.how == "killed by SIGKILL"
    assert record.first_failure is None  # before the stop, nothing failed
    shown = entry(["--inspect", "--checkpoint-dir", str(tmp_path)])
    assert shown.wait() == 0
    assert any(f"during the stop, pid {died} (a process the command started) killed by SIGKILL"
               in line for line in shown.lines), shown.lines
    as_json = entry(["--inspect", "--json", "--checkpoint-dir", str(tmp_path)])
    assert as_json.wait() == 0
    (attempt,) = json.loads("\n".join(as_json.lines))["attempts"]
    assert attempt["stop_failure"]["pid"] == died and attempt["first_failure"] is None


def test_an_orphan_killed_first_is_the_first_failure(entry, tmp_path: Path) -> None:
    e = entry(["--checkpoint-dir", str(tmp_path), "--", sys.executable, "-c", ORPHAN_KILLED])
    assert e.wait() == 1
    orphan = int(next(line for line in e.lines if line.startswith("orphan")).split()[1])
    (record,) = read_history(tmp_path)
    failure = record.first_failure
    assert failure is not None
    assert failure.pid == orphan
    assert failure.how == "killed by SIGKILL"
    assert failure.returncode == -signal.SIGKILL
    assert failure.command is False
    assert record.started_at <= failure.at <= record.ended_at


def test_the_command_failing_is_the_first_failure(entry, tmp_path: Path) -> None:
    e = entry(["--checkpoint-dir", str(tmp_path), "--", "sh", "-c", "exit 3"])
    assert e.wait() == 3
    (record,) = read_history(tmp_path)
    assert record.first_failure.how == "exited 3"
    assert record.first_failure.command is True


def test_a_preempted_job_dying_of_the_stop_signal_has_no_first_failure(entry,
                                                                       tmp_path: Path) -> None:
    """Dying of our SIGTERM is the stop working, not a failure of the job's own."""
    e = entry(["--checkpoint-dir", str(tmp_path), "--simulate-preempt", "0.3", "--",
               "sleep", "30"])
    assert e.wait() == 1
    (record,) = read_history(tmp_path)
    assert record.outcome == "preempted"
    assert record.first_failure is None
    assert record.stop_at is not None


RANK_KILLED = """
import os, signal, time
rank = int(os.environ["RANK"])
print(f"rank {rank} pid {os.getpid()}", flush=True)
# The observer's scans thin out (0.5 s, 1.5 s, 3.5 s, 7.5 s, 15.5 s after the start): a
# process that started at T is found by about 2T. Workers start within seconds even here.
time.sleep(10)
if rank == 1:
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)  # rank 0 waits for torchrun to stop it
"""


@pytest.mark.slow
def test_under_torchrun_the_rank_killed_first_is_the_first_failure(tmp_path: Path) -> None:
    """torchrun reaps its own workers, so only the observer can say that rank 1 died of SIGKILL
    first; torchrun's SIGTERM to rank 0 and its own exit 1 come after, and are consequences."""
    script = tmp_path / "rank_killed.py"
    script.write_text(RANK_KILLED)
    ck = tmp_path / "ck"
    argv = [sys.executable, "-m", "runai_entry", "--checkpoint-dir", str(ck), "--",
            *TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "0",
            str(script)]
    with started(argv, job_env()) as run:
        run.expect("rank 1 pid", timeout=120)
        assert run.wait(timeout=120) == 1, run.tail()
        rank1 = int(re.search(r"rank 1 pid (\d+)", run.output()).group(1))
    (record,) = read_history(ck)
    assert record.outcome == "failed"
    assert record.first_failure.pid == rank1, record.first_failure
    assert record.first_failure.how == "killed by SIGKILL"
    assert record.first_failure.command is False
