"""The typed attempt record: every older or odd line → the record, and every line this version
writes back exactly as it was written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runai_entry.core.attempt_record import (
    FIELDS,
    AttemptRecord,
    Checkpoint,
    ProcessFailure,
    SaveEstimate,
    SkippedCheckpoint,
)
from runai_entry.core.outcome import OWN_PREEMPTION, PREEMPTED, Outcome
from runai_entry.history.store import record_attempt
from tests.harness.spawning import ENTRY, child_env
from tests.history import test_store
from tests.history.test_goodput import CASES, OLD
from tests.history.test_hostile_history import GOOD
from tests.history.test_report import TIMED
from tests.history.test_timeline import LINES
from tests.supervisor.test_resume import PICKLE


def test_every_field_has_its_check_in_the_order_the_line_holds_it() -> None:
    names = [name for name in AttemptRecord.__dataclass_fields__ if name not in
             ("extra", "absent")]
    assert list(FIELDS) == names


# -- old and odd lines → the record ---------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    # As 0.1 wrote it: what it lacks reads as None, and the record knows it is old.
    ({"attempt": 1, "outcome": "completed"},
     {"attempt": 1, "outcome": Outcome.COMPLETED, "started_at": None, "checkpoints": None,
      "predates_heartbeats": True, "predates_stop_time": True}),
    # Written since heartbeats: a null first_step_at means the job never beat.
    ({"first_step_at": None, "stop_at": None},
     {"first_step_at": None, "predates_heartbeats": False, "predates_stop_time": False}),
    # An outcome this version does not know (a newer one's) keeps its name.
    ({"outcome": "evicted"}, {"outcome": "evicted", "outcome_text": "evicted"}),
    ({"outcome": "killed-at-deadline"},
     {"outcome": Outcome.KILLED_AT_DEADLINE, "outcome_text": "killed-at-deadline"}),
    # Wrong types, out of range, not finite: unknown.
    ({"attempt": "3", "ran_for_s": -1, "grace_used_s": 1e300, "simulated": 1,
      "started_at": "9999-12-31T00:00:00+00:00", "member": 0},
     {"attempt": None, "ran_for_s": None, "grace_used_s": None, "simulated": None,
      "started_at": None, "member": None}),
    # Nested objects are typed; the parts that are not what they should be are dropped.
    ({"checkpoints": [{"path": "/c/a", "step": "9", "mtime": 5.0}, 4],
      "newest_at_stop": {"path": "/c/a"},
      "skipped_at_end": [{"name": "b", "reason": "empty"}, {"name": 1}],
      "first_failure": {"pid": 7, "how": "exited 3", "command": True},
      "stop_failure": {"pid": "7", "how": "exited 3", "command": True},
      "save_estimate": {"seconds": 2.5, "share": "most"}},
     {"checkpoints": (Checkpoint("/c/a", None, 5.0),),
      "newest_at_stop": Checkpoint("/c/a", None, None),
      "skipped_at_end": (SkippedCheckpoint("b", "empty"),),
      "first_failure": ProcessFailure(7, "exited 3", None, True, None),
      "stop_failure": None,
      "save_estimate": SaveEstimate(seconds=2.5)}),
    # A list that is not one: unknown, not empty (so "nothing was saved" is not concluded).
    ({"checkpoints": "junk", "command": "python train.py"},
     {"checkpoints": None, "command": None}),
    # Who followed whom, from the peer's announcement (free-form).
    ({"followed": {"member": 2, "token": "x"}}, {"followed_member": "2"}),
    ({"followed": None}, {"followed_member": None}),
    # The identity of the checkpoints: the three parts, whichever are known.
    ({"resumed_from": "/c/a", "resumed_step": 4, "newest_at_end": "/c/a", "newest_mtime": 9.0},
     {"resumed": Checkpoint("/c/a", 4, None), "newest": Checkpoint("/c/a", None, 9.0)}),
], ids=["0.1", "never-beat", "newer-outcome", "outcome", "wrong-types", "nested",
        "not-a-list", "followed", "followed-none", "identity"])
def test_old_and_odd_lines(line: dict[str, Any], expected: dict[str, Any]) -> None:
    record = AttemptRecord.from_json(line)
    assert {name: getattr(record, name) for name in expected} == expected


def test_a_newer_versions_keys_are_kept_and_written_back() -> None:
    """Nothing a newer version wrote is lost by a record passed on; no reader uses it."""
    line = {"attempt": 2, "outcome": "preempted", "gpu_hours": 3.5, "notes": {"a": [1]}}
    record = AttemptRecord.from_json(line)
    assert record.extra == {"gpu_hours": 3.5, "notes": {"a": [1]}}
    assert record.to_json() == line


def test_own_lines_are_typed_but_not_bounded() -> None:
    """The line this process made (the termination message's) keeps names of any length; one
    read from disk is held to the bounds."""
    line = {"resumed_from": "/c/" + "x" * 5000, "first_failure": {
        "pid": 7, "how": "y" * 5000, "command": True}, "ran_for_s": 1e12, "attempt": "3"}
    own = AttemptRecord.from_json(line, own=True)
    assert own.resumed_from == line["resumed_from"] and own.ran_for_s == 1e12
    assert own.first_failure is not None and own.first_failure.how == "y" * 5000
    assert own.attempt is None  # the type is still checked
    read = AttemptRecord.from_json(line)
    assert (read.resumed_from, read.first_failure, read.ran_for_s) == (None, None, None)


def test_filled_takes_only_what_the_line_lacks() -> None:
    record = AttemptRecord.partial(outcome=Outcome.PREEMPTED, returncode=None)
    filled = record.filled(outcome=Outcome.FAILED, returncode=3, ran_for_s=2.0)
    assert (filled.outcome, filled.returncode, filled.ran_for_s) == (Outcome.PREEMPTED, None, 2.0)
    assert filled.to_json() == {"outcome": "preempted", "returncode": None, "ran_for_s": 2.0}


# -- round trip: every shape the suite writes -----------------------------------------------------


def _shapes() -> dict[str, dict[str, Any]]:
    shapes = {"hostile-good": GOOD, "goodput-old": OLD,
              "store-old": json.loads(test_store.TestOldRecordsStillRead.LINE),
              "spawn-failure": {"exit_code": 127, "outcome": "not-found"},
              "preempted-before-start": {"exit_code": 1, "outcome": "preempted"},
              "bare": {"attempt": 1}}
    for name, (records, _, _) in CASES.items():
        shapes.update({f"goodput-{name}-{i}": r for i, r in enumerate(records)})
    shapes.update({f"timeline-{i}": r for i, r in enumerate(LINES)})
    shapes.update({f"report-{i}": r for i, r in enumerate(TIMED)})
    return shapes


SHAPES = _shapes()


@pytest.mark.parametrize("line", SHAPES.values(), ids=SHAPES.keys())
def test_round_trip(line: dict[str, Any]) -> None:
    assert AttemptRecord.from_json(line).to_json() == line


def _attempt(directory: Path, *args: str) -> None:
    subprocess.run([*ENTRY, "--checkpoint-dir", str(directory), "--resume-flag", "", *args],
                   capture_output=True, timeout=60, env=child_env(), check=False)


def test_the_lines_a_real_run_writes_come_back_byte_for_byte(tmp_path: Path) -> None:
    """A fresh start, a resume with a checkpoint written and the Checkpointer's estimate, a
    preemption in the drill, a failure: each line re-written from its record is the line."""
    state = tmp_path / ".runai-entry"
    _attempt(tmp_path, "--", "true")
    (tmp_path / "step-1.pt").write_bytes(PICKLE)
    state.joinpath("save-estimate.json").write_text(json.dumps(
        {"bytes": 1000, "seconds": 0.5, "stall_s": 0.1, "estimate_s": 0.6, "budget_s": 28.0,
         "share": 0.021}))
    save = f"import shutil; shutil.copy('{tmp_path}/step-1.pt', '{tmp_path}/step-2.pt')"
    _attempt(tmp_path, "--", "python3", "-c", save)
    _attempt(tmp_path, "--simulate-preempt", "0.3s", "--simulate-requeue", "1", "--", "sleep",
             "1")
    _attempt(tmp_path, "--", "sh", "-c", "exit 3")
    lines = (state / "history.jsonl").read_text().splitlines()
    assert len(lines) == 5
    records = [AttemptRecord.from_json(json.loads(line)) for line in lines]
    again = tmp_path / "again"  # written back by the history's own writer
    again.mkdir()
    for r in records:
        record_attempt(again, r)
    assert (again / ".runai-entry" / "history.jsonl").read_text().splitlines() == lines
    assert [r.outcome for r in records] == [Outcome.COMPLETED, Outcome.COMPLETED,
                                            Outcome.PREEMPTED, Outcome.COMPLETED, Outcome.FAILED]
    assert records[1].save_estimate == SaveEstimate(1000, 0.5, 0.1, 0.6, 28.0, 0.021)
    assert records[1].newest_at_end == str(tmp_path / "step-2.pt") and records[1].newest_digest
    assert records[0].newest_digest is None and "newest_digest" not in json.loads(lines[0])


# -- the outcomes ---------------------------------------------------------------------------------


def test_the_preempted_sets() -> None:
    """The platform took the job away: the member's own preemption, or a peer's."""
    assert {Outcome.PREEMPTED, Outcome.KILLED_AT_DEADLINE, Outcome.FOLLOWED_PEER} == PREEMPTED
    assert PREEMPTED - {Outcome.FOLLOWED_PEER} == OWN_PREEMPTION
    assert AttemptRecord.from_json({"outcome": "followed-peer"}).outcome in PREEMPTED
    assert AttemptRecord.from_json({"outcome": "hung"}).outcome not in PREEMPTED


def test_the_exit_code_policy_and_the_history_share_one_outcome() -> None:
    from runai_entry.supervisor.exitcodes import Outcome as PolicyOutcome

    assert PolicyOutcome is Outcome
