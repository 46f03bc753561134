"""Tests for runai_entry.history.store: real processes racing on real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from runai_entry.core.attempt_record import AttemptRecord
from runai_entry.core.errors import ConfigError
from runai_entry.core.outcome import Outcome
from runai_entry.history.store import (
    DEFAULT_MEMBER,
    HISTORY_FILE,
    STATE_DIR,
    HistoryUnavailable,
    base_record,
    count_attempt,
    member_of,
    platform_ids,
    read_history,
    record_attempt,
    utc_now,
)

BEGIN = (
    "import sys\nfrom runai_entry.history.store import count_attempt\n"
    "print(count_attempt(sys.argv[1]))\n"
)
APPEND = (
    "import sys\n"
    "from runai_entry.core.attempt_record import AttemptRecord\n"
    "from runai_entry.history.store import record_attempt\n"
    "writer, count = sys.argv[2], int(sys.argv[3])\n"
    "for i in range(count):\n"
    "    record_attempt(sys.argv[1], AttemptRecord.from_json({\n"
    "        'writer': writer, 'seq': i, 'pad': 'x' * (i % 300), 'text': 'line\\nbreak ✓'}))\n"
)


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without any member variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("POD_INDEX", "RANK", "NODE_RANK")}
    env.update(extra)
    return env


def start_many(code: str, args: list[list[str]], envs: list[dict[str, str]]) -> list[str]:
    """Start every child at once, then wait for all; return their stdouts."""
    procs = [
        subprocess.Popen([sys.executable, "-c", code, *a], stdout=subprocess.PIPE, text=True, env=e)
        for a, e in zip(args, envs, strict=True)
    ]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        outputs.append(out.strip())
    return outputs


class TestMember:
    @pytest.mark.parametrize(
        ("environ", "member"),
        [
            ({}, DEFAULT_MEMBER),
            ({"RANK": "3"}, "3"),
            ({"RANK": "3", "NODE_RANK": "1"}, "1"),
            ({"RANK": "3", "POD_INDEX": "2"}, "2"),
            ({"JOB_COMPLETION_INDEX": "5", "PET_NODE_RANK": "4"}, "5"),
            ({"RUNAI_ENTRY_MEMBER": "worker-a", "POD_INDEX": "2"}, "worker-a"),
            ({"POD_INDEX": "  ", "RANK": "7"}, "7"),
        ],
    )
    def test_table(self, environ: dict[str, str], member: str) -> None:
        """The pod's index comes from the most specific variable present; default one member."""
        assert member_of(environ) == member

    @pytest.mark.parametrize("value", ["../x", "a/b", "..", "x" * 65, "sp ace"])
    def test_unusable_names_rejected(self, value: str) -> None:
        """A member name becomes a file name, so path-like or odd values are a config error."""
        with pytest.raises(ConfigError, match="RUNAI_ENTRY_MEMBER"):
            member_of({"RUNAI_ENTRY_MEMBER": value})


class TestBeginAttempt:
    def test_counts_across_separate_runs(self, tmp_path: Path) -> None:
        """Each new process against the same directory gets the next number, from 1."""
        ckpt = tmp_path / "new" / "ckpt"
        numbers = [
            subprocess.run(
                [sys.executable, "-c", BEGIN, str(ckpt)],
                capture_output=True,
                text=True,
                env=child_env(),
                check=True,
                timeout=60,
            ).stdout.strip()
            for _ in range(3)
        ]
        assert numbers == ["1", "2", "3"]
        assert (ckpt / STATE_DIR / f"attempt.{DEFAULT_MEMBER}").read_text() == "3\n"

    def test_sigkilled_run_has_used_its_number(self, tmp_path: Path) -> None:
        """The count is on disk before the job starts: a SIGKILL right after does not undo it."""
        code = (
            "import os, signal, sys\n"
            "from runai_entry.history.store import count_attempt\n"
            "count_attempt(sys.argv[1])\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=child_env())
        assert done.returncode == -signal.SIGKILL
        assert count_attempt(tmp_path, {}) == 2

    def test_concurrent_same_member_never_share_a_number(self, tmp_path: Path) -> None:
        """Eight processes of one member racing: each number handed out exactly once."""
        outputs = start_many(BEGIN, [[str(tmp_path)]] * 8, [child_env()] * 8)
        assert sorted(int(o) for o in outputs) == list(range(1, 9))

    def test_pods_of_one_job_agree(self, tmp_path: Path) -> None:
        """Eight pods (POD_INDEX 0-7) starting together all get 1, and all get 2 next time."""
        envs = [child_env(POD_INDEX=str(i)) for i in range(8)]
        assert start_many(BEGIN, [[str(tmp_path)]] * 8, envs) == ["1"] * 8
        assert start_many(BEGIN, [[str(tmp_path)]] * 8, envs) == ["2"] * 8

    def test_unwritable_state_dir(self, tmp_path: Path) -> None:
        """A state directory that cannot be created raises HistoryUnavailable, naming why."""
        blocker = tmp_path / "ckpt"
        blocker.write_text("a file where the directory should be")
        with pytest.raises(HistoryUnavailable, match="ENOTDIR"):
            count_attempt(blocker, {})
        with pytest.raises(HistoryUnavailable, match="ENOTDIR"):
            record_attempt(blocker, AttemptRecord.partial(attempt=1))

    def test_read_only_for_this_user(self) -> None:
        """A checkpoint directory the user may read but not write: HistoryUnavailable (EACCES).

        root ignores mode bits, so a child drops to uid 65534 first.
        """
        if os.geteuid() != 0:
            pytest.skip("needs root to drop privileges in a child")
        code = (
            "import os, sys\n"
            "from runai_entry.history.store import count_attempt, HistoryUnavailable\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "try:\n"
            "    count_attempt(sys.argv[1], {})\n"
            "except HistoryUnavailable as exc:\n"
            "    print(exc); sys.exit(3)\n"
        )
        with tempfile.TemporaryDirectory() as top:
            os.chmod(top, 0o755)
            done = subprocess.run(
                [sys.executable, "-c", code, top], capture_output=True, text=True, timeout=60
            )
        assert done.returncode == 3, done.stderr
        assert "EACCES" in done.stdout

    def test_foreign_counter_content_refused(self, tmp_path: Path) -> None:
        """A counter that holds something else is an error, not a silent restart at 1."""
        (tmp_path / STATE_DIR).mkdir()
        (tmp_path / STATE_DIR / f"attempt.{DEFAULT_MEMBER}").write_text("banana")
        with pytest.raises(HistoryUnavailable, match="not an attempt count"):
            count_attempt(tmp_path, {})


class TestHistory:
    def test_round_trip(self, tmp_path: Path) -> None:
        """Records come back in order, unicode and newlines in values intact."""
        assert read_history(tmp_path) == []
        record_attempt(tmp_path, AttemptRecord.from_json(
            {"attempt": 1, "outcome": "preempted", "note": "a\nb ✓"}))
        record_attempt(tmp_path, AttemptRecord.from_json(
            {"attempt": 2, "outcome": "completed", "path": Path("/x y")}))
        assert [r.to_json() for r in read_history(tmp_path)] == [
            {"attempt": 1, "outcome": "preempted", "note": "a\nb ✓"},
            {"attempt": 2, "outcome": "completed", "path": "/x y"},
        ]
        assert (tmp_path / STATE_DIR / HISTORY_FILE).read_text().count("\n") == 2

    def test_concurrent_appends_never_interleave(self, tmp_path: Path) -> None:
        """8 processes x 200 appends: 1,600 lines, each valid JSON, each writer's in order."""
        args = [[str(tmp_path), f"w{i}", "200"] for i in range(8)]
        start_many(APPEND, args, [child_env()] * 8)
        lines = (tmp_path / STATE_DIR / HISTORY_FILE).read_text().splitlines()
        assert len(lines) == 1600
        records = [json.loads(line) for line in lines]
        assert Counter(r["writer"] for r in records) == {f"w{i}": 200 for i in range(8)}
        for i in range(8):
            assert [r["seq"] for r in records if r["writer"] == f"w{i}"] == list(range(200))

    def test_torn_last_line_tolerated_and_closed_off(self, tmp_path: Path) -> None:
        """A line cut short by a crash is skipped on read, and the next append starts afresh."""
        record_attempt(tmp_path, AttemptRecord.partial(attempt=1))
        with open(tmp_path / STATE_DIR / HISTORY_FILE, "ab") as f:
            f.write(b'{"attempt": 2, "outc')
        assert read_history(tmp_path) == [AttemptRecord.partial(attempt=1)]
        record_attempt(tmp_path, AttemptRecord.partial(attempt=3))
        assert [r.attempt for r in read_history(tmp_path)] == [1, 3]

    def test_non_object_lines_skipped(self, tmp_path: Path) -> None:
        """Lines that are valid JSON but not objects, or invalid UTF-8, are skipped too."""
        (tmp_path / STATE_DIR).mkdir()
        (tmp_path / STATE_DIR / HISTORY_FILE).write_bytes(b'[1]\n\xff\xfe\n{"attempt": 4}\n\n')
        assert [r.to_json() for r in read_history(tmp_path)] == [{"attempt": 4}]


class TestRecordFields:
    def test_base_record(self) -> None:
        """attempt, member, host, pid and the platform ids present; extra fields merged."""
        environ = {"POD_INDEX": "1", "JOB_UUID": "u-1", "JOB_NAME": "train", "EMPTY": ""}
        record = base_record(3, environ, outcome=Outcome.PREEMPTED, grace_used_s=12.5)
        assert record.attempt == 3 and record.member == "1"
        assert record.pid == os.getpid() and record.host
        assert record.ids == {"JOB_UUID": "u-1", "JOB_NAME": "train", "POD_INDEX": "1"}
        assert (record.outcome, record.grace_used_s) == (Outcome.PREEMPTED, 12.5)
        assert record.to_json()["outcome"] == "preempted"

    def test_platform_ids_skip_empty(self) -> None:
        """Only variables that are set and non-empty are copied."""
        assert platform_ids({"POD_NAME": "", "NODE_NAME": "n1", "OTHER": "x"}) == {
            "NODE_NAME": "n1"
        }

    def test_utc_now(self) -> None:
        """ISO 8601 with an explicit UTC offset, parseable by datetime.fromisoformat."""
        stamp = utc_now()
        assert stamp.endswith("+00:00")
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0)


class TestOldRecordsStillRead:
    #: A line exactly as bookkeeping wrote it before the goodput fields (no stop_at,
    #: first_step_at, last_step, checkpoints, first_failure or skipped_at_end).
    LINE = (b'{"attempt":2,"member":"0","host":"vm","pid":22244,"ids":{},'
            b'"started_at":"2026-12-02T05:05:17.204+00:00","ended_at":"2026-12-02T05:05:18.668'
            b'+00:00","command":["python","train.py"],"outcome":"preempted","exit_code":1,'
            b'"returncode":0,"simulated":true,"ran_for_s":1.464,"stop_signal":"SIGTERM",'
            b'"stop_timeout_s":3.0,"grace_used_s":0.164,"followed":null,"hang":null,'
            b'"resumed_from":"/c/step-70.pt","resumed_step":70,"resumed_mtime":null,'
            b'"newest_at_end":"/c/step-130.pt","newest_step":130,"newest_mtime":1796187918.0}\n')

    def test_figures_from_a_record_written_before_them(self, tmp_path: Path) -> None:
        """Read back from the file: the stop from grace_used_s, lost work from the newest
        checkpoint's mtime, start-up unknown and said so."""
        from runai_entry.history.goodput import NO_HEARTBEAT_RECORD, attempt_figures

        (tmp_path / STATE_DIR).mkdir()
        (tmp_path / STATE_DIR / HISTORY_FILE).write_bytes(self.LINE)
        (figures,) = attempt_figures(read_history(tmp_path))
        assert figures.stop_s == pytest.approx(0.164)
        # The stop signal went out at 18.504; the checkpoint was written at 18.0.
        assert figures.lost_s == pytest.approx(0.504, abs=0.002)
        assert figures.startup_s is None and figures.unknown == (NO_HEARTBEAT_RECORD,)
