"""The log: one event per step, JSON lines for machines, one console line per event for people."""

from __future__ import annotations

import json
import re
import subprocess

from tests.harness.spawning import ENTRY


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENTRY, *args, "sh", "-c", "echo out; exit 3"], capture_output=True,
                          text=True, timeout=30)


class TestJson:
    def test_every_line_is_a_json_event(self) -> None:
        """Each stderr line parses, with timestamp, level, event and the logger's name."""
        r = _run("--log-format", "json")
        events = [json.loads(line) for line in r.stderr.splitlines()]
        assert [e["event"] for e in events] == ["started", "process_exited", "exit"]
        for e in events:
            assert e["logger"] == "runai-entry"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", e["timestamp"])
        assert events[-1] == {**events[-1], "level": "warning", "code": 3, "reason": "failed"}
        assert r.stdout == "out\n"  # the job's output is not mixed into the log stream

    def test_level_filters(self) -> None:
        """--log-level warning keeps only warnings and errors."""
        r = _run("--log-format", "json", "--log-level", "warning")
        assert [json.loads(line)["event"] for line in r.stderr.splitlines()] == ["exit"]


class TestConsole:
    def test_one_readable_line_per_event(self) -> None:
        """The console form prints each event on one line with its name and fields."""
        r = _run("--log-format", "console")
        lines = r.stderr.splitlines()
        assert len(lines) == 3
        assert "started" in lines[0] and "[runai-entry]" in lines[0]
        assert "exit" in lines[2] and "code=3" in lines[2]
        assert not any(line.startswith("{") for line in lines)

    def test_auto_is_json_when_stderr_is_not_a_terminal(self) -> None:
        """auto picks JSON lines when stderr is a pipe, as under a container runtime."""
        r = _run()
        assert all(line.startswith("{") for line in r.stderr.splitlines())
