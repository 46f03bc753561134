"""A history and a directory others wrote: every reader survives every malformed record.

The history lives on shared storage: old versions, other jobs and people write it too. Each
case here once crashed a reader (exit 1, the requeue code, or a traceback from --inspect), or
made it print what is not JSON, or draw a picture of eight thousand years. The fuzz test at the
end generates malformed records from fixed seeds and runs every reader over them: --inspect,
--inspect --json, --timeline, and the crash-loop guard at the start of a real attempt.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from runai_entry.core.attempt_record import AttemptRecord
from runai_entry.history.crashloop import guard_status, without_progress
from runai_entry.history.goodput import attempt_figures, goodput, per_member
from runai_entry.history.report import goodput_lines, incidents, render_table, verdict
from runai_entry.history.store import STATE_DIR, utc_timestamp
from runai_entry.history.timeline import render
from tests.harness.spawning import ENTRY, child_env
from tests.history.test_report import readme_schema
from tests.supervisor.test_resume import PICKLE

T0 = 1_780_000_000.0
#: The biggest timeline a history of a few dozen records may draw.
MAX_SVG_BYTES = 1 << 20

GOOD: dict[str, Any] = {
    "attempt": 1, "member": "0", "host": "h", "pid": 7, "ids": {"POD_NAME": "p"},
    "started_at": utc_timestamp(T0), "ended_at": utc_timestamp(T0 + 60),
    "command": ["python", "train.py"], "outcome": "preempted", "exit_code": 1,
    "returncode": -15, "simulated": False, "ran_for_s": 52.0, "stop_signal": "SIGTERM",
    "stop_timeout_s": 28.0, "grace_used_s": 2.0, "followed": {"member": "1"}, "hang": None,
    "stop_at": utc_timestamp(T0 + 50), "first_step_at": utc_timestamp(T0 + 5),
    "last_step": 420, "last_step_at": utc_timestamp(T0 + 49),
    "first_failure": {"pid": 9, "how": "exited 3", "returncode": 3,
                      "at": utc_timestamp(T0 + 30), "command": True},
    "resumed_from": "/c/step-100.pt", "resumed_step": 100, "resumed_mtime": T0 - 100,
    "newest_at_end": "/c/step-400.pt", "newest_step": 400, "newest_mtime": T0 + 40,
    "skipped_at_end": [{"name": "step-500.pt", "reason": "empty file"}],
    "newest_at_stop": {"path": "/c/step-400.pt", "step": 400, "mtime": T0 + 40},
    "checkpoints": [{"path": "/c/step-400.pt", "step": 400, "mtime": T0 + 40}],
    "save_estimate": {"bytes": 1e9, "seconds": 2.0, "estimate_s": 3.0, "share": 0.9,
                      "budget_s": 28.0},
}

#: Raw JSON values that no field should hold, as text (NaN and Infinity are Python's tokens).
HOSTILE = ["[]", "{}", '""', '"x"', "true", "false", "null", "0", "-1", "1e308", "-1e308",
           "1e400", "NaN", "Infinity", "-Infinity", "1" + "0" * 40, "3.5",
           '"9999-12-31T23:59:59+00:00"', '"0001-01-01T00:00:00+14:00"', '"2026-13-45"',
           json.dumps("\x1b[31mred\x1b[0m\nsecond line\r\x07"), json.dumps("é" * 20000),
           '{"path": 1, "step": "x", "mtime": NaN}', '[{"path": [], "mtime": 1e400}, 3]',
           '[{"name": 1, "reason": null}, "x"]', '{"pid": "7", "how": 3, "command": 1}',
           '{"member": [], "share": Infinity}', '[[[[[[[[[[]]]]]]]]]]']
#: Bytes that are not UTF-8, dropped inside a string.
NOT_UTF8 = [b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x80"]


def hostile_line(rng: random.Random) -> bytes:
    """One line of the history: a good record with some fields replaced, removed, given bytes
    that are not UTF-8, or cut short; now and then something that is no record at all."""
    roll = rng.random()
    if roll < 0.05:
        return rng.choice([b"[1, 2]", b'"text"', b"null", b"{", b"\x00\x01\x02", b"{}"])
    fields = {key: json.dumps(value) for key, value in GOOD.items()}
    fields["attempt"] = str(rng.randint(-3, 40))
    fields["member"] = json.dumps(rng.choice(["0", "1", "w\x1b[2J", "0"]))
    for key in rng.sample(sorted(fields), rng.randint(1, len(fields))):
        action = rng.random()
        if action < 0.2:
            del fields[key]
        else:
            fields[key] = rng.choice(HOSTILE)
    line = ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}").encode()
    if rng.random() < 0.15:  # bytes that are not UTF-8 inside a value
        at = line.find(b'"/c/')
        if at >= 0:
            line = line[:at + 4] + rng.choice(NOT_UTF8) + line[at + 4:]
    if rng.random() < 0.05:
        line = line[:rng.randint(1, len(line))]  # torn
    return line


def write_history(directory: Path, lines: list[bytes]) -> None:
    (directory / STATE_DIR).mkdir(parents=True, exist_ok=True)
    (directory / STATE_DIR / "history.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def run_entry(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENTRY, *args], capture_output=True, text=True, timeout=60,
                          errors="backslashreplace",
                          env=child_env(**{"PYTHONIOENCODING": "utf-8:strict",
                                           "RUNAI_ENTRY_LOG_FORMAT": "json", **env}))


def no_crash(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr[-3000:]
    assert r.returncode not in (1, 70), r.stderr[-3000:]


def strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity are not JSON."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in the JSON output")
    return json.loads(text, parse_constant=refuse)


class TestOneRecord:
    """The cases found by hand, each a crash once."""

    def test_an_outcome_that_is_a_list_does_not_stop_the_job(self, tmp_path: Path) -> None:
        """The crash-loop guard reads the history before the start: one record of the wrong
        shape crashed it with exit 1, the requeue code, for ever."""
        write_history(tmp_path, [b'{"member":"0","outcome":[]}'])
        (tmp_path / "step-1.pt").write_bytes(PICKLE)
        r = run_entry("--checkpoint-dir", str(tmp_path), "--", "sh", "-c", "exit 3")
        no_crash(r)
        assert r.returncode == 3

    def test_nan_and_infinity_never_reach_the_json(self, tmp_path: Path) -> None:
        write_history(tmp_path, [
            json.dumps({**GOOD, "ran_for_s": float("nan")}).encode(),
            json.dumps({**GOOD, "attempt": 2, "ran_for_s": float("inf"),
                        "grace_used_s": float("-inf")}).encode(),
            b'{"attempt": 3, "ran_for_s": 1e400, "started_at": "2026-01-01T00:00:00Z"}'])
        r = run_entry("--inspect", "--json", "--checkpoint-dir", str(tmp_path))
        no_crash(r)
        report = strict_json(r.stdout)
        jsonschema.validate(report, readme_schema())

    def test_a_record_from_year_9999_draws_a_picture_of_bounded_size(self,
                                                                     tmp_path: Path) -> None:
        write_history(tmp_path, [
            json.dumps(GOOD).encode(),
            json.dumps({**GOOD, "attempt": 2, "started_at": "9999-12-31T00:00:00+00:00",
                        "ended_at": "9999-12-31T00:01:00+00:00"}).encode()])
        svg = tmp_path / "t.svg"
        r = run_entry("--inspect", "--timeline", str(svg), "--checkpoint-dir", str(tmp_path))
        no_crash(r)
        assert r.returncode == 0
        assert svg.stat().st_size < MAX_SVG_BYTES

    def test_attempts_decades_apart_draw_a_picture_of_bounded_size(self) -> None:
        """Two readable times a century apart: the axis ticks stay a handful."""
        far = {**GOOD, "attempt": 2, "started_at": utc_timestamp(T0 + 100 * 365 * 86400)}
        records = [AttemptRecord.from_json(GOOD), AttemptRecord.from_json(far)]
        assert len(render(records, "t").encode()) < MAX_SVG_BYTES

    def test_a_checkpoint_name_that_is_not_utf8_under_a_strict_stdout(self,
                                                                       tmp_path: Path) -> None:
        (tmp_path / os.fsdecode(b"step-3-\xff.pt")).write_bytes(PICKLE)
        (tmp_path / os.fsdecode(b"step-2-\xfe.pt")).write_bytes(b"")  # skipped: empty
        r = run_entry("--inspect", "--checkpoint-dir", str(tmp_path))
        no_crash(r)
        assert r.returncode == 0
        assert "step-3-\\xff.pt" in r.stdout and "step-2-\\xfe.pt: empty" in r.stdout
        r = run_entry("--inspect", "--json", "--checkpoint-dir", str(tmp_path))
        no_crash(r)
        report = strict_json(r.stdout)
        assert report["next"]["path"].endswith("step-3-\\xff.pt")
        assert report["skipped"][0]["name"] == "step-2-\\xfe.pt"

    def test_control_characters_in_names_are_escaped_in_the_report(self,
                                                                   tmp_path: Path) -> None:
        name = "step-3-\x1b]0;owned\x07\x1b[2J\nfake line.pt"
        (tmp_path / name).write_bytes(PICKLE)
        write_history(tmp_path, [json.dumps({**GOOD, "resumed_from": f"/c/{name}",
                                             "member": "a\x1b[31m"}).encode()])
        r = run_entry("--inspect", "--checkpoint-dir", str(tmp_path))
        no_crash(r)
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout
        assert "\nfake line" not in r.stdout
        assert "step-3-\\x1b]0;owned\\x07\\x1b[2J\\nfake line.pt" in r.stdout

    def test_control_characters_in_names_are_escaped_in_the_console_log(self,
                                                                        tmp_path: Path) -> None:
        name = "step-3-\x1b[2J\nfake.pt"
        (tmp_path / name).write_bytes(PICKLE)
        r = run_entry("--checkpoint-dir", str(tmp_path), "--", "true",
                      RUNAI_ENTRY_LOG_FORMAT="console")
        no_crash(r)
        assert r.returncode == 0
        assert "\x1b[2J" not in r.stderr and "\nfake.pt" not in r.stderr
        assert "step-3-\\x1b[2J\\nfake.pt" in r.stderr


# A job that writes a heartbeat file whose times are NaN, then exits 0.
NAN_BEAT = f"""
import os, struct
path = os.path.join(os.environ["RUNAI_ENTRY_HEARTBEAT_DIR"], str(os.getpid()))
layout = struct.Struct("=qqqdddqd")
nan = float("nan")
with open(path, "wb") as f:
    f.write(layout.pack(os.getpid(), 5, 3, nan, nan, 0.0, {struct.calcsize("q")}, nan))
"""


class TestHeartbeatValues:
    @pytest.mark.parametrize("value", ["float('nan')", "float('inf')", "-1.0", "1e300"])
    def test_a_beat_that_is_not_a_time_keeps_the_jobs_code_and_its_record(
            self, tmp_path: Path, value: str) -> None:
        job = NAN_BEAT.replace("nan = float(\"nan\")", f"nan = {value}")
        r = run_entry("--checkpoint-dir", str(tmp_path), "--", sys.executable, "-c", job)
        no_crash(r)
        assert r.returncode == 0, r.stderr
        (line,) = (tmp_path / STATE_DIR / "history.jsonl").read_text().splitlines()
        record = json.loads(line)  # as written, not as read back
        assert record["exit_code"] == 0 and record["outcome"] == "completed"
        if value == "1e300":  # ahead of the clock: read as now, within the attempt
            assert record["started_at"] <= record["first_step_at"] <= record["ended_at"]
        else:  # not a time at all: not a beat
            assert record["first_step_at"] is None and record["last_step"] is None


# -- the fuzz test --------------------------------------------------------------------------------

SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_pure_reader_survives_generated_records(seed: int) -> None:
    """The figures, the table, the verdict, the guard and the picture over 60 generated
    records, parsed as read_history parses them."""
    rng = random.Random(seed)
    records = []
    for _ in range(60):
        try:
            raw = json.loads(hostile_line(rng).decode("utf-8", "surrogateescape"),
                             parse_constant=lambda _: None)
        except (ValueError, RecursionError):
            continue
        if isinstance(raw, dict):
            records.append(AttemptRecord.from_json(raw))
    figures = attempt_figures(records)
    for f in figures:
        for value in (f.ran_for_s, f.stop_s, f.productive_s, f.startup_s, f.lost_s):
            assert value is None or 0 <= value < float("inf")
    json.dumps([f.as_dict() for f in figures], allow_nan=False)
    json.dumps(goodput(figures).as_dict(), allow_nan=False)
    for g in per_member(figures).values():
        json.dumps(g.as_dict(), allow_nan=False)
    render_table(records)
    goodput_lines(records)
    incidents(records)
    verdict(records)
    for member in ("0", "1"):
        without_progress(records, member)
        guard_status(records, member, 3)
    assert len(render(records, "fuzz").encode()) < MAX_SVG_BYTES


@pytest.mark.parametrize("seed", range(3))
def test_every_reader_of_the_real_command_survives_a_generated_history(
        seed: int, tmp_path: Path) -> None:
    """--inspect, --inspect --json (valid JSON, the README's schema) and --timeline (a bounded
    picture) under a strict UTF-8 stdout, and the crash-loop guard of a real attempt: never a
    traceback, never exit 1."""
    rng = random.Random(1000 + seed)
    write_history(tmp_path, [hostile_line(rng) for _ in range(40)])
    (tmp_path / "step-1.pt").write_bytes(PICKLE)
    (tmp_path / os.fsdecode(b"step-2-\x1b[1m\xff\n.pt")).write_bytes(PICKLE)
    r = run_entry("--inspect", "--checkpoint-dir", str(tmp_path))
    no_crash(r)
    assert r.returncode == 0 and "\x1b" not in r.stdout
    r = run_entry("--inspect", "--json", "--checkpoint-dir", str(tmp_path))
    no_crash(r)
    jsonschema.validate(strict_json(r.stdout), readme_schema())
    svg = tmp_path / "t.svg"
    r = run_entry("--inspect", "--timeline", str(svg), "--checkpoint-dir", str(tmp_path))
    no_crash(r)
    assert r.returncode == 0 and svg.stat().st_size < MAX_SVG_BYTES
    r = run_entry("--checkpoint-dir", str(tmp_path), "--", "sh", "-c", "exit 3")
    no_crash(r)
    assert r.returncode in (3, 86)


def test_the_generator_makes_what_it_claims() -> None:
    """The fuzz test tries what it says: wrong types, missing keys, NaN, year 9999, bytes that
    are not UTF-8, control characters and torn lines all occur in the seeds used."""
    lines = b"\n".join(hostile_line(random.Random(seed)) for seed in range(200))
    for needle in (b"NaN", b"Infinity", b"9999-12-31", b"\\u001b", b"[]", b"\xff", b"1e400"):
        assert needle in lines, needle
    assert sum(not line.endswith(b"}") for line in lines.split(b"\n")) > 3


def test_the_drill_reads_its_own_records_as_checked_as_the_history(tmp_path: Path) -> None:
    """The drill's records come back from the bookkeeping, which copies the Checkpointer's
    save estimate from the state directory: another writer's junk there must not crash the
    drill's verdict."""
    state = tmp_path / STATE_DIR
    state.mkdir()
    (state / "save-estimate.json").write_text('{"share": "most", "bytes": [], "seconds": null}')
    r = run_entry("--simulate-preempt", "0.3s", "--simulate-requeue", "1", "--checkpoint-dir",
                  str(tmp_path), "--", "sleep", "1")
    no_crash(r)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "runai-entry preemption drill" in r.stderr


def test_the_checkpointers_estimate_is_checked_before_it_enters_the_history(
        tmp_path: Path) -> None:
    """The estimate is the job's file: only the figures that read as figures reach the line
    (the line is what the history's readers, and the next versions, take as checked)."""
    state = tmp_path / STATE_DIR
    state.mkdir()
    (state / "save-estimate.json").write_text(
        '{"share": "most", "bytes": [], "seconds": 2.5, "stall_s": -1}')
    r = run_entry("--checkpoint-dir", str(tmp_path), "--", "true")
    no_crash(r)
    (line,) = (state / "history.jsonl").read_text().splitlines()
    assert json.loads(line)["save_estimate"] == {"seconds": 2.5}


def test_a_checkpoint_list_that_is_not_one_is_unknown_not_empty(tmp_path: Path) -> None:
    """A preempted record whose ``checkpoints`` is junk cannot tell whether the stop saved:
    --inspect says nothing about it, rather than "nothing was saved at the stop signal". An
    attempt number that is not one reads as ?, as a missing one does."""
    record = {**GOOD, "attempt": None, "outcome": "preempted", "checkpoints": "junk",
              "newest_at_stop": None, "followed": None}
    write_history(tmp_path, [json.dumps(record).encode()])
    r = run_entry("--inspect", "--checkpoint-dir", str(tmp_path))
    no_crash(r)
    assert "nothing was saved at the stop signal" not in r.stdout, r.stdout
    table = r.stdout.splitlines()
    row = table[table.index(next(line for line in table if line.startswith("attempts ("))) + 3]
    assert row.split()[0] == "?", row


class TestParseRecord:
    """What a checked record holds: the rules of core/attempt_record.py, by example."""

    @pytest.mark.parametrize(("key", "value", "read"), [
        ("outcome", [], None), ("outcome", "failed", "failed"),
        ("attempt", True, None), ("attempt", 1 << 70, None), ("attempt", 3, 3),
        ("ran_for_s", float("nan"), None), ("ran_for_s", -1.0, None), ("ran_for_s", 1e300, None),
        ("ran_for_s", 12, 12.0),
        ("started_at", "9999-12-31T00:00:00+00:00", None), ("started_at", "yesterday", None),
        ("started_at", "2026-03-01T12:00:00.000+00:00", "2026-03-01T12:00:00.000+00:00"),
        ("resumed_from", "x" * 5000, None), ("newest_mtime", float("inf"), None),
        ("first_failure", {"pid": "7", "how": "exited 3", "command": True}, None),
        ("first_failure", {"pid": 7, "how": "exited 3", "command": True},
         {"pid": 7, "how": "exited 3", "command": True, "returncode": None, "at": None}),
        ("skipped_at_end", [{"name": "a", "reason": "b"}, {"name": 1}, "x"],
         [{"name": "a", "reason": "b"}]),
        ("checkpoints", [{"path": "/c/a", "step": "9", "mtime": T0}, 4],
         [{"path": "/c/a", "step": None, "mtime": T0}]),
        # A figure the Checkpointer did not write (or wrote as junk) stays out of the line.
        ("save_estimate", {"share": "most", "bytes": 1e9}, {"bytes": 1e9}),
    ])
    def test_each_field(self, key: str, value: Any, read: Any) -> None:
        assert AttemptRecord.from_json({key: value}).to_json() == {key: read}

    def test_present_keys_stay_present_and_unknown_keys_pass(self) -> None:
        """An old record is told apart by the keys it lacks (no first_step_at: recorded before
        heartbeats); a bad value must not make it look old."""
        record = AttemptRecord.from_json({"first_step_at": 3, "note": "kept"})
        assert record.to_json() == {"first_step_at": None, "note": "kept"}
        assert not record.predates_heartbeats and record.predates_stop_time
        assert "stop_at" not in AttemptRecord.from_json({}).to_json()
