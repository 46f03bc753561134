"""The drill's table and verdict: pure functions of the history's records, and the real drill."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from runai_entry.core.attempt_record import AttemptRecord
from runai_entry.history import report
from runai_entry.history.goodput import NEVER_BEAT
from runai_entry.history.report import span
from runai_entry.history.store import read_history, record_attempt, utc_timestamp
from tests.harness.spawning import ENTRY, child_env
from tests.supervisor.test_resume import PICKLE

# A trainer that, like Lightning's OnExceptionCheckpoint, saves under the same name at every
# stop: on_exception.ckpt is rewritten in place (a valid zip, so verification passes it).
REWRITER = """
import os, signal, sys, time, zipfile
directory = os.environ["RUNAI_ENTRY_CHECKPOINT_DIR"]
os.makedirs(directory, exist_ok=True)
resume = os.environ.get("RUNAI_ENTRY_RESUME_FROM")
step = int(zipfile.ZipFile(resume).read("step")) if resume else 0
print("start", step, flush=True)
def save(*_):
    with zipfile.ZipFile(os.path.join(directory, "on_exception.ckpt"), "w") as z:
        z.writestr("step", str(step))
    sys.exit(0)
signal.signal(signal.SIGTERM, save)
while step < int(sys.argv[1]):
    time.sleep(0.02)
    step += 1
print("finished", step, flush=True)
"""


# The tables below hold records as the history's lines; the readers take them as the history
# reads them (AttemptRecord.from_json).


def verdict(lines: list[dict[str, Any]]) -> list[str]:
    return report.verdict([AttemptRecord.from_json(line) for line in lines])


def render_table(lines: list[dict[str, Any]]) -> str:
    return report.render_table([AttemptRecord.from_json(line) for line in lines])


def goodput_lines(lines: list[dict[str, Any]]) -> list[str]:
    return report.goodput_lines([AttemptRecord.from_json(line) for line in lines])


def incidents(lines: list[dict[str, Any]]) -> list[str]:
    return report.incidents([AttemptRecord.from_json(line) for line in lines])


def _record(attempt: int, outcome: str, resumed: tuple[str | None, float | None],
            newest: tuple[str | None, float | None]) -> dict[str, object]:
    return {"attempt": attempt, "outcome": outcome, "ran_for_s": 8.0,
            "resumed_from": resumed[0], "resumed_step": None, "resumed_mtime": resumed[1],
            "newest_at_end": newest[0], "newest_step": None, "newest_mtime": newest[1]}


class TestLostWork:
    def test_rewritten_checkpoint_under_the_same_name_is_new(self) -> None:
        """on_exception.ckpt rewritten at the stop (a later mtime) is a new checkpoint."""
        ckpt = "/c/on_exception.ckpt"
        records = [_record(1, "preempted", (None, None), (ckpt, 100.0)),
                   _record(2, "preempted", (ckpt, 100.0), (ckpt, 108.5)),
                   _record(3, "completed", (ckpt, 108.5), (ckpt, 108.5))]
        assert verdict(records) == []

    def test_same_checkpoint_untouched_is_lost_work(self) -> None:
        """The same name with the same mtime at the end: nothing new was saved."""
        ckpt = "/c/on_exception.ckpt"
        records = [_record(1, "preempted", (None, None), (ckpt, 100.0)),
                   _record(2, "preempted", (ckpt, 100.0), (ckpt, 100.0))]
        assert verdict(records) == [
            "attempt 2: preempted without writing a new checkpoint — its 8.0s of work were lost"]

    def test_records_without_identity_compare_names(self) -> None:
        """A history written before mtimes were recorded still gets the old verdict."""
        old = {"attempt": 1, "outcome": "preempted", "ran_for_s": 2.0,
               "resumed_from": "/c/a.pt", "newest_at_end": "/c/a.pt"}
        assert len(verdict([old])) == 1


class TestDrillWithARewrittenCheckpoint:
    def test_drill_says_ok_when_each_stop_rewrites_the_same_file(self, tmp_path: Path) -> None:
        """The real drill over a trainer that rewrites on_exception.ckpt: no lost work."""
        script = tmp_path / "rewriter.py"
        script.write_text(REWRITER)
        r = subprocess.run(
            [*ENTRY, "--log-format", "json", "--simulate-preempt", "1s", "--simulate-requeue",
             "2", "--grace-period", "4s", "--kill-margin", "1s", "--resume-flag", "",
             "--checkpoint-dir", str(tmp_path / "ckpt"), sys.executable, str(script), "150"],
            capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        starts = [line for line in r.stdout.splitlines() if line.startswith("start")]
        assert len(starts) == 3 and starts[0] == "start 0" and starts[2] != "start 0"
        assert "verdict: OK" in r.stderr, r.stderr


def _r(attempt: int, outcome: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {"attempt": attempt, "outcome": outcome, "exit_code": 1,
                               "ran_for_s": 9.0, "stop_signal": "SIGTERM", "stop_timeout_s": 28,
                               "grace_used_s": 1.0, "resumed_from": None, "resumed_step": None,
                               "newest_at_end": None, "newest_step": None}
    base.update(fields)
    return base


class TestVerdictTable:
    """Each kind of problem the verdict names, one row per case, and the cases it must not."""

    @pytest.mark.parametrize(("records", "expected"), [
        ([_r(1, "preempted", newest_at_end="/c/step-2.pt", newest_step=2)], []),
        ([_r(1, "preempted")], ["attempt 1: preempted without writing a new checkpoint"]),
        ([_r(1, "killed-at-deadline", newest_at_end="/c/step-2.pt", newest_step=2)],
         ["attempt 1: still running at the deadline and SIGKILLed"]),
        ([_r(1, "preempted", grace_used_s=25.0, newest_at_end="/c/step-2.pt", newest_step=2)],
         ["attempt 1: the save took 25.0s of the 28s budget (89%)"]),
        ([_r(1, "preempted", newest_at_end="/c/step-5.pt", newest_step=5),
          _r(2, "completed", exit_code=0, resumed_from="/c/step-3.pt", resumed_step=3,
             newest_at_end="/c/step-9.pt", newest_step=9)],
         ["attempt 2: resumed from step-3.pt although step-5.pt was newer"]),
        # A member that followed a peer's preemption saved nothing itself: not lost work.
        ([_r(1, "followed-peer")], []),
        ([_r(1, "completed", exit_code=0, newest_at_end="/c/step-9.pt")], []),
    ], ids=["saved", "lost-work", "killed", "slow-save", "went-back", "followed", "completed"])
    def test_table(self, records: list[dict[str, object]], expected: list[str]) -> None:
        problems = verdict(records)
        assert len(problems) == len(expected), problems
        for problem, start in zip(problems, expected, strict=True):
            assert problem.startswith(start), problem


class TestRenderTable:
    def test_one_member(self) -> None:
        """Columns: attempt, ran for, start-up, productive, lost, stop → exit against the
        budget, queue wait, resumed from, newest at exit, exit; names, not paths."""
        table = render_table([
            _r(1, "preempted", newest_at_end="/c/step-2.pt"),
            _r(2, "completed", exit_code=0, grace_used_s=None, ran_for_s=3.25,
               resumed_from="/c/step-2.pt", newest_at_end="/c/step-9.pt"),
        ])
        assert table.splitlines() == [
            "attempt  ran for  start-up  productive  lost  stop → exit (budget)  queue  "
            "resumed from   newest at exit  exit",
            "-------  -------  --------  ----------  ----  --------------------  -----  "
            "-------------  --------------  -----------",
            "1        9.0s     ?         8.0s        ?     SIGTERM → 1.0s (28s)  -      "
            "(fresh start)  step-2.pt       1 preempted",
            "2        3.2s     ?         3.2s        0s    -                     -      "
            "step-2.pt      step-9.pt       0 completed",
        ]

    def test_figures_with_the_new_fields(self) -> None:
        """With start, first step, stop and write times: every column has its figure."""
        lines = render_table(TIMED).splitlines()
        assert lines[2].split()[:6] == ["1", "52s", "5.0s", "35s", "10s", "SIGTERM"]
        assert lines[3].split()[:5] == ["2", "30s", "3.0s", "27s", "0s"]
        assert lines[3].split()[5:7] == ["-", "8.0s"]  # no stop; the queue: 52 → 60

    def test_members_and_who_followed_whom(self) -> None:
        """Several pods in one history: a member column, and the member a follower followed."""
        table = render_table([
            _r(1, "preempted", member="0"),
            _r(1, "followed-peer", member="1", followed={"member": "0", "attempt": 1}),
        ])
        lines = table.splitlines()
        assert lines[0].startswith("member  attempt")
        assert lines[3].startswith("1       1") and lines[3].endswith("1 followed-peer (member 0)")


T0 = 1_800_000_000.0


def _at(seconds: float) -> str:
    return utc_timestamp(T0 + seconds)


def _timed(attempt: int, outcome: str, start: float, ran_for: float, first_step: float | None,
           **fields: object) -> dict[str, object]:
    return _r(attempt, outcome, started_at=_at(start), ran_for_s=ran_for,
              first_step_at=None if first_step is None else _at(first_step), **fields)


C40 = {"path": "/c/step-400.pt", "step": 400, "mtime": T0 + 40}
#: Preempted at 50 (2 s to stop), last saved at 40; requeued 8 s later, completed.
TIMED = [
    _timed(1, "preempted", 0, 52, 5, grace_used_s=2.0, stop_at=_at(50), checkpoints=[C40],
           newest_at_end=C40["path"], newest_step=400, newest_mtime=C40["mtime"]),
    _timed(2, "completed", 60, 30, 63, exit_code=0, grace_used_s=None, stop_at=None,
           resumed_from=C40["path"], resumed_step=400, resumed_mtime=C40["mtime"],
           newest_at_end="/c/step-900.pt", newest_step=900, newest_mtime=T0 + 89),
]


class TestSpan:
    @pytest.mark.parametrize(("seconds", "text"), [
        (None, "?"), (0.0, "0s"), (0.01, "0s"), (2.54, "2.5s"), (48.4, "48s"), (62, "1m 2s"),
        (750, "12m 30s"), (60, "1m"), (7500, "2h 5m"), (7200, "2h")])
    def test_table(self, seconds: float | None, text: str) -> None:
        assert span(seconds) == text


class TestGoodputLine:
    def test_the_line(self) -> None:
        """Productive 35 + 27 of a 90 s wall; start-up 5 + 3, lost 10, stop 2, queue 8."""
        assert goodput_lines(TIMED) == [
            "goodput 69% of 1m 30s: start-up 8.0s, lost work 10s, stop 2.0s, "
            "waiting in the queue 8.0s"]

    def test_says_what_is_unknown(self) -> None:
        """A job that never beats: start-up unknown, and why, in which attempts."""
        never = [{**r, "first_step_at": None} for r in TIMED]
        lines = goodput_lines(never)
        assert lines[0].startswith("goodput at most 78% of 1m 30s: start-up unknown, lost work 10s")
        assert lines[1:] == [
            f"  {NEVER_BEAT} (attempt 1, attempt 2)"]

    def test_each_member_has_its_line(self) -> None:
        records = [{**r, "member": m} for m in ("0", "1") for r in TIMED]
        lines = goodput_lines(records)
        assert lines[0].startswith("goodput 69% of 1m 30s")
        assert [line.split(":")[0] for line in lines[1:]] == ["  member 0", "  member 1"]


class TestIncidents:
    def test_first_failure_and_skipped(self) -> None:
        record = _r(3, "failed", first_failure={
            "pid": 4242, "how": "killed by SIGKILL", "returncode": -9,
            "at": "2027-01-15T08:00:30.125+00:00", "command": False},
            skipped_at_end=[{"name": "step-9.pt", "reason": "truncated zip"}])
        assert incidents([record]) == [
            "attempt 3: first to end abnormally: pid 4242 (a process the command started) "
            "killed by SIGKILL at 08:00:30.125",
            "attempt 3: at its end, skipped step-9.pt: truncated zip"]

    def test_none(self) -> None:
        assert incidents(TIMED) == []


class TestGoodputVerdict:
    def test_slow_start_up_is_named(self) -> None:
        """Start-up over a quarter of the attempt: 20 s of 52 s."""
        records = [{**TIMED[0], "first_step_at": _at(20)}]
        problems = [p for p in verdict(records) if "start-up" in p]
        assert len(problems) == 1 and problems[0].startswith(
            "attempt 1: start-up took 20s of its 52s (38%) before the first step"), problems

    def test_a_few_seconds_of_start_up_in_a_short_drill_attempt_are_not_named(self) -> None:
        """3 s of 8 s: the drill's cadence, not a problem of the job's."""
        records = [{**TIMED[0], "ran_for_s": 8.0, "first_step_at": _at(3),
                    "stop_at": _at(7.9), "grace_used_s": 0.1}]
        assert not [p for p in verdict(records) if "start-up took" in p]

    def test_a_short_last_attempt_is_not_named_for_its_start_up(self) -> None:
        """The attempt that completes soon after its resume is mostly start-up: no finding."""
        records = [{**TIMED[0], "first_step_at": _at(20), "outcome": "completed",
                    "exit_code": 0, "stop_at": None, "grace_used_s": None}]
        assert not [p for p in verdict(records) if "start-up took" in p]

    def test_lost_work_over_one_interval_is_named(self) -> None:
        """Checkpoints every 10 s, 10.5 s lost, in a record without its stop time (older
        than stop_at): the stop-time save did not happen."""
        saved = [{"path": f"/c/step-{s}.pt", "step": s, "mtime": T0 + t}
                 for s, t in ((395, 39.5), (300, 29.5), (200, 19.5))]
        records = [{**TIMED[0], "checkpoints": saved, "newest_at_end": "/c/step-395.pt",
                    "newest_step": 395, "newest_mtime": T0 + 39.5}]
        del records[0]["stop_at"]
        problems = verdict(records)
        assert problems == ["attempt 1: 10s of work lost, more than one checkpoint interval "
                            "(10s) — nothing was saved at the stop signal: save on it "
                            "(Checkpointer does), or checkpoint more often"]

    def test_no_save_after_the_stop_signal_is_named(self) -> None:
        """Checkpoints every 10 s, the stop 10.5 s after the last: the job does not save on
        the stop signal, and the verdict says so with the loss and how soon it ended."""
        saved = [{"path": f"/c/step-{s}.pt", "step": s, "mtime": T0 + t}
                 for s, t in ((395, 39.5), (300, 29.5), (200, 19.5))]
        records = [{**TIMED[0], "checkpoints": saved, "newest_at_end": "/c/step-395.pt",
                    "newest_step": 395, "newest_mtime": T0 + 39.5, "grace_used_s": 0.1,
                    "ran_for_s": 50.1}]
        assert verdict(records) == [
            "attempt 1: nothing was saved at the stop signal — the newest checkpoint predates "
            "it, 10s of work were lost, and it ended 0.1s after the signal; save on the stop "
            "signal: a SIGTERM handler, the Checkpointer, the HF Trainer's "
            "enable_jit_checkpoint, Lightning's OnExceptionCheckpoint"]

    def test_a_periodic_save_just_before_the_stop_is_still_named(self) -> None:
        """Little was lost, because a periodic save had just landed: the job still does not
        save at the stop, and the next preemption will not be so lucky."""
        saved = [{"path": f"/c/step-{s}.pt", "step": s, "mtime": T0 + t}
                 for s, t in ((400, 49.9), (300, 25), (200, 10))]
        problems = verdict([{**TIMED[0], "checkpoints": saved}])
        assert len(problems) == 1 and "nothing was saved at the stop signal" in problems[0]

    def test_a_save_after_the_stop_signal_is_not_named(self) -> None:
        saved = [{"path": f"/c/step-{s}.pt", "step": s, "mtime": T0 + t}
                 for s, t in ((401, 50.5), (300, 25), (200, 10))]
        assert verdict([{**TIMED[0], "checkpoints": saved}]) == []

    def test_what_failed_during_the_stop_is_named(self) -> None:
        """A data worker killed under its trainer: the stop saved nothing, and why."""
        crash = {"pid": 812, "how": "killed by SIGTERM", "returncode": -15, "command": False,
                 "at": _at(50.01)}
        problems = verdict([{**TIMED[0], "stop_failure": crash}])
        assert len(problems) == 1 and problems[0].endswith(
            "; during the stop, pid 812 (a process the command started) killed by SIGTERM at "
            f"{_at(50.01)[11:23]}; save on the stop signal: a SIGTERM handler, the "
            "Checkpointer, the HF Trainer's enable_jit_checkpoint, Lightning's "
            "OnExceptionCheckpoint"), problems


README = (Path(__file__).parents[2] / "README.md").read_text()


def readme_schema() -> dict[str, Any]:
    """The JSON Schema README.md gives for ``--inspect --json``: the one source of it."""
    section = README[README.index("### `--inspect --json`"):]
    block = section[section.index("```json") + len("```json"):]
    schema: dict[str, Any] = json.loads(block[:block.index("```")])
    return schema


def _inspect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENTRY, "--inspect", *args], capture_output=True, text=True,
                          timeout=60, env=child_env())


class TestInspectJson:
    def _directory(self, tmp_path: Path, records: list[dict[str, object]]) -> Path:
        (tmp_path / "step-900.pt").write_bytes(PICKLE)
        (tmp_path / "step-950.pt").write_bytes(b"")  # empty: skipped
        for record in records:
            record_attempt(tmp_path, AttemptRecord.from_json(record))
        return tmp_path

    def test_prints_one_object_that_follows_the_readme_schema(self, tmp_path: Path) -> None:
        """The real --inspect --json on a history of new and old records: it parses, follows the
        README's schema, and carries the same figures as the table."""
        failed = {**TIMED[1], "attempt": 3, "outcome": "failed", "exit_code": 3,
                  "first_failure": {"pid": 7, "how": "exited 3", "returncode": 3,
                                    "at": _at(95), "command": True},
                  "skipped_at_end": [{"name": "step-950.pt", "reason": "empty file"}]}
        # As 0.1 wrote them: no times, no member, no mtime of the checkpoint resumed from.
        old = {"attempt": 4, "outcome": "completed", "exit_code": 0, "ran_for_s": 2.0,
               "resumed_from": "/c/step-900.pt"}
        directory = self._directory(tmp_path, [*TIMED, failed, old])
        r = _inspect("--json", "--checkpoint-dir", str(directory))
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)  # the whole of stdout is one JSON object
        jsonschema.validate(report, readme_schema())
        first = report["attempts"][0]
        assert (first["startup_s"], first["stop_s"], first["lost_s"], first["productive_s"],
                first["requeue_wait_s"]) == (5.0, 2.0, 10.0, 35.0, None)
        assert report["attempts"][2]["first_failure"]["how"] == "exited 3"
        # 10 s in attempt 1; 1 s in attempt 3 (step-900.pt, written at 89 s, resumed by 4).
        assert report["goodput"]["badput_s"]["lost_work"] == pytest.approx(11.0)
        assert report["next"]["path"] == str(directory / "step-900.pt")
        assert report["skipped"] == [{"name": "step-950.pt", "reason": "empty file"}]

    def test_a_directory_that_does_not_exist_yet(self, tmp_path: Path) -> None:
        r = _inspect("--json", "--checkpoint-dir", str(tmp_path / "none"))
        report = json.loads(r.stdout)
        jsonschema.validate(report, readme_schema())
        assert (report["exists"], report["attempts"], report["next"]) == (False, [], None)
        assert report["goodput"]["fraction"] is None

    def test_schema_rejects_what_it_should(self) -> None:
        """The schema is not a rubber stamp: a missing figure or a wrong type fails it."""
        schema = readme_schema()
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"attempts": []}, schema)
        report = {"checkpoint_dir": "/c", "exists": True, "storage_warning": None,
                  "attempts": [{"attempt": "one"}], "goodput": {}, "members": {},
                  "checkpoint_interval_s": None, "problems": [], "next": None, "skipped": []}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(report, schema)

    def test_text_report_has_the_goodput_line_and_the_incidents(self, tmp_path: Path) -> None:
        failed = {**TIMED[1], "attempt": 3, "outcome": "failed",
                  "first_failure": {"pid": 7, "how": "killed by SIGKILL", "returncode": -9,
                                    "at": _at(95), "command": False}}
        directory = self._directory(tmp_path, [*TIMED, failed])
        svg = tmp_path / "t.svg"
        r = _inspect("--timeline", str(svg), "--checkpoint-dir", str(directory))
        assert r.returncode == 0, r.stderr
        assert "\ngoodput " in r.stdout
        assert ("  attempt 3: first to end abnormally: pid 7 (a process the command started) "
                "killed by SIGKILL at 08:01:35.000") in r.stdout
        assert svg.read_text().startswith("<svg") and "attempt 3" in svg.read_text()

    @pytest.mark.parametrize(("args", "message"), [
        (["--json", "--checkpoint-dir", "/x", "true"], "--json goes with --inspect"),
        (["--timeline", "t.svg", "true"], "--timeline goes with --inspect or the drill"),
    ])
    def test_options_out_of_place(self, args: list[str], message: str) -> None:
        r = subprocess.run([*ENTRY, *args], capture_output=True, text=True, timeout=60,
                           env=child_env())
        assert r.returncode == 2
        assert r.stderr.strip().splitlines() == [f"runai-entry: error: {message}" + r.stderr
                                                 .strip().split(message, 1)[1]]


# A job that never beats: a numbered file every 0.2 s, nothing at the stop (a shell script's way).
PERIODIC = """
import os, sys, time
directory = os.environ["RUNAI_ENTRY_CHECKPOINT_DIR"]
resume = os.environ.get("RUNAI_ENTRY_RESUME_FROM")
step = int(os.path.basename(resume)[5:-3]) if resume else 0
while step < int(sys.argv[1]):
    time.sleep(0.02)
    step += 1
    if step % 10 == 0:
        with open(os.path.join(directory, f"step-{step}.pt.tmp"), "wb") as f:
            f.write(b"\\x80\\x04K\\x01.")  # a pickle: verification passes it
        os.replace(os.path.join(directory, f"step-{step}.pt.tmp"),
                   os.path.join(directory, f"step-{step}.pt"))
"""


class TestDrillGoodput:
    def test_drill_prints_goodput_and_draws_the_timeline(self, tmp_path: Path) -> None:
        """The real drill on a job without heartbeat: the goodput line says start-up is unknown,
        lost work comes from the files' write times, and --timeline writes the picture."""
        script, svg = tmp_path / "periodic.py", tmp_path / "drill.svg"
        script.write_text(PERIODIC)
        (tmp_path / "ckpt").mkdir()
        r = subprocess.run(
            [*ENTRY, "--log-format", "json", "--simulate-preempt", "1.5s", "--simulate-requeue",
             "1", "--grace-period", "4s", "--kill-margin", "1s", "--resume-flag", "",
             "--timeline", str(svg), "--checkpoint-dir", str(tmp_path / "ckpt"),
             sys.executable, str(script), "100"],
            capture_output=True, text=True, timeout=60, env=child_env())
        assert r.returncode == 0, r.stderr
        assert "\ngoodput at most " in r.stderr, r.stderr
        assert f"{NEVER_BEAT} (attempt 1, attempt 2)" \
            in r.stderr or "start-up unknown: recorded before" in r.stderr
        table = r.stderr[r.stderr.index("runai-entry preemption drill"):].splitlines()
        first = table[3].split()
        assert first[0] == "1" and first[2] == "?"  # start-up unknown
        record = read_history(tmp_path / "ckpt")[0]
        if record.checkpoints or record.newest_mtime:  # write times recorded
            lost = float(first[4].rstrip("s"))
            # At most one 0.2 s period, plus a loaded machine's slack; 0 when a save landed
            # between the stop decision and the job's receipt of the signal (it holds the work).
            assert 0 <= lost < 0.6
        else:
            assert first[4] == "?" and "lost work unknown" in r.stderr
        root = ET.fromstring(svg.read_text())
        bars = [g for g in root.iter("{http://www.w3.org/2000/svg}g")
                if g.get("class") == "attempt"]
        assert [b.get("data-outcome") for b in bars] == ["preempted", "completed"]
        assert f"timeline: {svg}" in r.stderr


class TestPartlyUnknown:
    def test_known_part_and_unknown_rest(self) -> None:
        """Lost work known in one attempt (0 s, completed), unknown in the other: both said."""
        records = [{**TIMED[0], "newest_mtime": None, "checkpoints": []},
                   {**TIMED[1], "resumed_mtime": None}]
        line = goodput_lines(records)[0]
        assert "lost work 0s + unknown," in line and line.startswith("goodput at most ")
