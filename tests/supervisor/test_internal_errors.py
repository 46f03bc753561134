"""No internal error exits 1, the preempt code: closed standard descriptors, a stderr nobody
reads, and a bug that escapes every handler (exit 70, one line) — the real runai-entry each time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runai_entry.core.errors import EXIT_INTERNAL_ERROR
from tests.harness.spawning import ENTRY, child_env


def _run_closed(fds: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """runai-entry ARGS started by a shell with the descriptors ``fds`` closed (``<&-``...);
    what it wrote to stderr, when stderr stays open, goes to a file."""
    command = " ".join(map(_quote, [*ENTRY, *args]))
    log = tmp_path / "stderr"
    redirect = "" if "2" in fds else f" 2>{_quote(str(log))}"
    closing = " ".join(f"{fd}>&-" if fd != "0" else "0<&-" for fd in fds)
    r = subprocess.run(["sh", "-c", f"exec {command}{redirect} {closing}"], timeout=60,
                       env=child_env(RUNAI_ENTRY_LOG_FORMAT="json"), capture_output=False,
                       text=True)
    r.stderr = log.read_text() if log.exists() else ""
    return r


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


class TestClosedStandardDescriptors:
    @pytest.mark.parametrize("fds", ["0", "1", "2", "01", "012"])
    def test_a_job_runs_and_its_code_comes_back(self, fds: str, tmp_path: Path) -> None:
        """Started with stdin, stdout or stderr closed, runai-entry still reads the checkpoint
        directory (its helper's memfd must not land on fd 0-2), runs the job, records it, and
        exits with the job's code."""
        out = tmp_path / "out"
        r = _run_closed(fds, ["--checkpoint-dir", str(tmp_path / "c"), "--", "sh", "-c",
                              f"echo ran > {_quote(str(out))}; exit 7"], tmp_path)
        assert r.returncode == 7, r.stderr
        assert out.read_text() == "ran\n"
        assert "Traceback" not in r.stderr
        history = (tmp_path / "c" / ".runai-entry" / "history.jsonl").read_text()
        assert '"exit_code":7' in history

    def test_a_configuration_error_with_stderr_closed_is_still_exit_2(self,
                                                                        tmp_path: Path) -> None:
        r = _run_closed("2", ["--grace-period", "x", "true"], tmp_path)
        assert r.returncode == 2


class TestStderrNobodyReads:
    def test_a_configuration_error_into_a_broken_pipe_is_exit_2(self) -> None:
        """The reader of stderr went away: the one line cannot be written, the code still
        says what happened (no traceback, no exit 1)."""
        read, write = os.pipe()
        os.close(read)
        try:
            r = subprocess.run([*ENTRY, "--grace-period", "x", "true"], stderr=write,
                               stdout=subprocess.DEVNULL, timeout=60, env=child_env())
        finally:
            os.close(write)
        assert r.returncode == 2


# A bug: something in runai-entry raises what nothing expects.
BUG = """
import sys
import runai_entry.cli as cli
def broken(config):
    raise KeyError("no such thing")
cli._run_mode = broken
cli.main(sys.argv[1:])
"""


class TestLastResort:
    def test_a_bug_is_one_line_and_exit_70(self) -> None:
        r = subprocess.run([sys.executable, "-c", BUG, "--", "true"], capture_output=True,
                           text=True, timeout=60, env=child_env())
        assert r.returncode == EXIT_INTERNAL_ERROR == 70
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith("runai-entry: internal error (a bug in runai-entry")
        assert "KeyError: 'no such thing'" in lines[0] and "<string>:5" in lines[0]


# A bug in the bookkeeping after the job: writing the history line raises what nothing expects.
BROKEN_FINISH = """
import sys
import runai_entry.supervisor.before_and_after as bookkeeping
def broken(*args, **kwargs):
    raise TypeError("a record nobody expected")
bookkeeping.finish = broken
from runai_entry.cli import main
main(sys.argv[1:])
"""


class TestTheJobsCodeOutlivesABugInItsRecord:
    @pytest.mark.parametrize(("args", "code"), [
        (["--", "sh", "-c", "exit 5"], 5),
        (["--simulate-preempt", "0.3s", "--", "sleep", "30"], 1),  # still requeued
    ])
    def test_the_jobs_code_stands_and_the_bug_is_logged(self, tmp_path: Path, args: list[str],
                                                        code: int) -> None:
        r = subprocess.run([sys.executable, "-c", BROKEN_FINISH, "--checkpoint-dir",
                            str(tmp_path), *args], capture_output=True, text=True, timeout=60,
                           env=child_env(RUNAI_ENTRY_LOG_FORMAT="json"))
        assert r.returncode == code, r.stderr
        assert "Traceback" not in r.stderr
        events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
        (failed,) = [e for e in events if e["event"] == "attempt_not_recorded"]
        assert "TypeError: a record nobody expected at <string>:5" in failed["problem"]
        assert events[-1]["event"] == "exit" and events[-1]["code"] == code


class TestStdoutNobodyReads:
    def test_inspect_into_a_closed_pipe_is_not_a_bug(self, tmp_path: Path) -> None:
        """``runai-entry --inspect ... | head -1``: the reader leaves early; that is no
        internal error, and no traceback. A long history makes the report outgrow the pipe's
        buffer, so the write itself fails."""
        state = tmp_path / ".runai-entry"
        state.mkdir()
        line = json.dumps({"attempt": 1, "outcome": "failed", "resumed_from": "/c/" + "x" * 200})
        (state / "history.jsonl").write_text((line + "\n") * 2000)
        read, write = os.pipe()
        os.close(read)
        try:
            r = subprocess.run([*ENTRY, "--inspect", "--checkpoint-dir", str(tmp_path)],
                               stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
                               env=child_env())
        finally:
            os.close(write)
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
