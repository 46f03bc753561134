"""Job-wide preemption: two members of one job share a checkpoint directory; only one of them
gets SIGTERM, and both must stop and exit with the preempt code.

Real runai-entry processes, each with its own probe job, told apart by ``POD_INDEX`` as on
Run:ai. (tests/e2e/test_ddp.py does the same with torchrun across two loopback nodes.)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from runai_entry.history.store import utc_timestamp
from runai_entry.supervisor.guardian import NAME as GUARDIAN
from runai_entry.supervisor.jobwide_markers import CLOCK_SKEW, for_this_attempt
from tests.harness.spawning import probe

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
    of runai-entry (beside its guardian), and a preemption is just that."""
    ck = tmp_path / "ck"
    e = entry(["--checkpoint-dir", str(ck), "--", *probe("--name", "solo")])
    pid = int(e.expect(r"solo ready (\d+)").group(1))
    assert [p.pid for p in psutil.Process(e.pid).children() if p.name() != GUARDIAN] == [pid]
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


# -- a marker counts only for the attempt it was written for ---------------------------------------

#: Run as the member's job: put back the marker's own bytes without writing a new announcement,
#: as a purge-avoidance script (touch), rsync or cp -a do, then end by itself with 0.
TOUCH = "import os, sys; os.utime(sys.argv[1])"
COPY_BACK = (
    "import os, sys\n"
    "data = open(sys.argv[1], 'rb').read()\n"
    "open(sys.argv[1] + '.copy', 'wb').write(data)\n"
    "os.replace(sys.argv[1] + '.copy', sys.argv[1])\n"
)
#: Run as the member's job: a peer of this attempt announces its preemption, then the job ends
#: by itself with 0 (its ranks agreed to stop).
ANNOUNCE_NOW = (
    "import json, os, sys\n"
    "from runai_entry.history.store import utc_now\n"
    "record = {'member': '0', 'attempt': int(os.environ['RUNAI_ENTRY_ATTEMPT']),\n"
    "          'host': 'peer', 'token': 'peer', 'cause': 'SIGTERM', 'at': utc_now()}\n"
    "open(sys.argv[1] + '.new', 'w').write(json.dumps(record))\n"
    "os.replace(sys.argv[1] + '.new', sys.argv[1])\n"
)


def earlier_attempt(ck: Path, at: str | None) -> None:
    """Member 1 ran once before; member 0's preemption then left the marker, written ``at``."""
    (ck / MARKER).parent.mkdir(parents=True)
    (ck / ".runai-entry" / "attempt.1").write_text("1\n")
    record = {"member": "0", "attempt": 1, "host": "old", "token": "earlier", "cause": "SIGTERM"}
    if at is not None:
        record["at"] = at
    (ck / MARKER).write_text(json.dumps(record) + "\n")


@pytest.mark.parametrize("job", [TOUCH, COPY_BACK], ids=["touch", "copy-back"])
@pytest.mark.parametrize("written", [3600.0, None, -10 * 365 * 86400.0],
                         ids=["an-hour-before", "undated", "years-ahead"])
def test_an_old_marker_touched_during_an_attempt_is_not_followed(
        entry, tmp_path: Path, job: str, written: float | None) -> None:
    """The previous attempt's marker, changed on disk but not rewritten during this attempt:
    the job that ends by itself keeps its own exit code, 0. Before, it exited 1 as
    "followed-peer", and so did every member of every later attempt while the touching went on.
    """
    ck = tmp_path / "ck"
    earlier_attempt(ck, None if written is None else utc_timestamp(time.time() - written))
    m1 = member(entry, ck, "1", sys.executable, "-c", job, str(ck / MARKER))
    assert m1.wait() == 0, m1.output()
    assert m1.event("exit")["reason"] == "completed"
    assert history(ck)[-1]["attempt"] == 2


def test_a_marker_written_for_this_attempt_is_followed(entry, tmp_path: Path) -> None:
    """Over an old marker, a peer's announcement for this attempt still stops this member: the
    job that ends by itself meanwhile exits with the preempt code, 1."""
    ck = tmp_path / "ck"
    earlier_attempt(ck, utc_timestamp(time.time() - 3600))
    m1 = member(entry, ck, "1", sys.executable, "-c", ANNOUNCE_NOW, str(ck / MARKER))
    assert m1.wait() == 1, m1.output()
    assert m1.event("exit")["reason"] == "followed-peer"
    assert history(ck)[-1]["followed"]["host"] == "peer"


class TestForThisAttempt:
    """The rule itself, with two clocks: ours (``since``, ``now``) and the writer's (``at``)."""

    SINCE = 1_800_000_000.0  # this attempt began
    NOW = SINCE + 3600.0  # an hour into it

    def counts(self, attempt: object, after_since: float, ours: int | None = 5) -> bool:
        record = {"attempt": attempt, "at": utc_timestamp(self.SINCE + after_since)}
        return for_this_attempt(record, ours, self.SINCE, self.NOW)

    @pytest.mark.parametrize(("attempt", "after_since", "counts"), [
        (5, 600.0, True),  # a peer of this attempt, during it
        (5, -CLOCK_SKEW / 2, True),  # its clock behind ours, or preempted as we started
        (4, 600.0, True),  # a peer that counts behind us (we were restarted on our own)
        (6, 600.0, True),  # one that counts ahead (it was)
        (4, -CLOCK_SKEW / 2, False),  # the previous attempt's, just before ours: a fast requeue
        (5, -2 * CLOCK_SKEW, False),  # before this attempt, beyond any clock skew
        (5, 3600.0 + 2 * CLOCK_SKEW, False),  # from the future, beyond any clock skew
        ("5", 600.0, True),  # an attempt that is not a number says nothing either way
    ])
    def test_table(self, attempt: object, after_since: float, counts: bool) -> None:
        assert self.counts(attempt, after_since) is counts

    def test_without_our_attempt_number_only_the_time_decides(self) -> None:
        assert self.counts(4, -CLOCK_SKEW / 2, ours=None)
        assert not self.counts(4, -2 * CLOCK_SKEW, ours=None)

    @pytest.mark.parametrize("at", [None, 1_800_000_600, "yesterday", "2027-01-15T08:10:00",
                                    ["2027-01-15T08:10:00+00:00"]])
    def test_a_marker_that_cannot_be_dated_does_not_count(self, at: object) -> None:
        assert not for_this_attempt({"attempt": 5, "at": at}, 5, self.SINCE, self.NOW)
