"""Job-wide preemption: two members of one job share a checkpoint directory; only one of them
gets SIGTERM, and both must stop and exit with the preempt code.

Real runai-entry processes, each with its own probe job, told apart by ``POD_INDEX`` as on
Run:ai. (tests/test_e2e_ddp.py does the same with torchrun across two loopback nodes.)
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import psutil

from tests.conftest import probe

MARKER = Path(".runai-entry") / "preempting"


def member(entry, ck: Path, index: str, *job: str, options: tuple[str, ...] = ()):
    return entry(["--checkpoint-dir", str(ck), *options, "--", *job],
                 env={"POD_INDEX": index})


def history(ck: Path) -> list[dict]:
    text = (ck / ".runai-entry" / "history.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_sigterm_to_one_member_stops_every_member(entry, tmp_path: Path) -> None:
    """Member 1 gets no SIGTERM, yet its job receives the stop signal, and both exit 1: member
    0 "preempted", member 1 "followed-peer". The history and --inspect say who followed whom."""
    ck = tmp_path / "ck"
    m0 = member(entry, ck, "0", *probe("--name", "m0"))
    m1 = member(entry, ck, "1", *probe("--name", "m1"))
    m0.expect("m0 ready")
    m1.expect("m1 ready")
    m0.signal(signal.SIGTERM)
    m1.expect("m1 signal SIGTERM")  # the stop signal, from member 1's own runai-entry
    assert m0.wait() == 1
    assert m1.wait() == 1
    assert m0.event("exit")["reason"] == "preempted"
    assert m1.event("exit")["reason"] == "followed-peer"
    started = m1.event("preemption_started")
    assert started["cause"] == "peer"
    assert started["peer"]["member"] == "0"

    outcomes = {r["member"]: r for r in history(ck)}
    assert outcomes["0"]["outcome"] == "preempted"
    assert outcomes["1"]["outcome"] == "followed-peer"
    assert outcomes["1"]["followed"]["member"] == "0"
    assert outcomes["1"]["exit_code"] == 1

    shown = entry(["--inspect", "--checkpoint-dir", str(ck)])
    assert shown.wait() == 0
    assert any("followed-peer (member 0)" in line for line in shown.lines), shown.lines


def test_job_that_ends_by_itself_while_a_peer_preempts_exits_with_the_preempt_code(
        entry, tmp_path: Path) -> None:
    """Member 1's trainer ignores SIGTERM and exits 0 once member 0 announced its preemption
    (ranks that agreed to stop): exit 1, not 0, so the job is requeued, not "Succeeded"."""
    ck = tmp_path / "ck"
    marker = ck / MARKER
    m0 = member(entry, ck, "0", *probe("--name", "m0"))
    m1 = member(entry, ck, "1", "sh", "-c",
                f"trap '' TERM; echo m1 ready; until [ -e {marker} ]; do sleep 0.01; done; "
                "exit 0")
    m0.expect("m0 ready")
    m1.expect("m1 ready")
    m0.signal(signal.SIGTERM)
    assert m0.wait() == 1
    assert m1.wait() == 1
    exited = m1.event("exit")
    assert exited["reason"] == "followed-peer"
    assert exited["returncode"] == 0


def test_a_job_that_completes_on_every_member_exits_0(entry, tmp_path: Path) -> None:
    """No one preempted: each member exits with its command's code, 0."""
    ck = tmp_path / "ck"
    members = [member(entry, ck, str(i), sys.executable, "-c", "print('done')")
               for i in range(2)]
    for m in members:
        assert m.wait() == 0
        assert m.event("exit")["reason"] == "completed"
    assert not (ck / MARKER).exists()


def test_an_announcement_from_an_earlier_attempt_is_not_followed(entry,
                                                                 tmp_path: Path) -> None:
    """A marker left by the previous attempt's preemption is the baseline, not news."""
    ck = tmp_path / "ck"
    (ck / MARKER).parent.mkdir(parents=True)
    (ck / MARKER).write_text(json.dumps({"member": "0", "attempt": 1, "token": "earlier"}))
    m1 = member(entry, ck, "1", sys.executable, "-c", "import time; time.sleep(1.5)")
    assert m1.wait() == 0
    assert m1.event("exit")["reason"] == "completed"


def test_a_single_member_job_is_unaffected(entry, tmp_path: Path) -> None:
    """Without a member identity nothing watches, nothing is announced: only the job is a child
    of runai-entry, and a preemption is just that."""
    ck = tmp_path / "ck"
    e = entry(["--checkpoint-dir", str(ck), "--", *probe("--name", "solo")])
    pid = int(e.expect(r"solo ready (\d+)").group(1))
    assert [p.pid for p in psutil.Process(e.pid).children()] == [pid]
    e.signal(signal.SIGTERM)
    assert e.wait() == 1
    assert e.event("exit")["reason"] == "preempted"
    assert not (ck / MARKER).exists()


def test_off_switch(entry, tmp_path: Path) -> None:
    """--job-wide-preemption off: a member with an identity announces nothing."""
    ck = tmp_path / "ck"
    m0 = member(entry, ck, "0", *probe("--name", "m0"), options=("--job-wide-preemption", "off"))
    m0.expect("m0 ready")
    m0.signal(signal.SIGTERM)
    assert m0.wait() == 1
    assert not (ck / MARKER).exists()
    assert os.path.exists(ck / ".runai-entry" / "history.jsonl")
