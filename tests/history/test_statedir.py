"""A hostile state directory: what others plant in ``<checkpoint-dir>/.runai-entry/`` redirects
no write of runai-entry's (it runs as root) and holds none of its helpers; the job still runs.

The real runai-entry, against real links, FIFOs and hard links (runai_entry/history/statedir.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from runai_entry.history.statedir import open_dir, read_file
from runai_entry.history.store import (
    HISTORY_FILE,
    LOCK_FILE,
    STATE_DIR,
    count_attempt,
    read_history,
)
from runai_entry.supervisor.jobwide_markers import MARKER

#: Short, so that a helper stuck on a FIFO (as before) fails the test quickly with exit 75.
STORAGE_TIMEOUT = "3"
#: The job: prints the attempt number it was given, then exits 0.
JOB = [sys.executable, "-c", "import os; print('attempt', os.environ.get('RUNAI_ENTRY_ATTEMPT'))"]


def run(entry, ck: Path, *options: str, job: list[str] = JOB, env: dict[str, str] | None = None):
    e = entry(["--checkpoint-dir", str(ck), "--storage-timeout", STORAGE_TIMEOUT, *options,
               "--", *job], env=env)
    assert e.wait(timeout=60) == 0, e.output()
    assert e.event("exit")["reason"] == "completed"
    return e


def state(ck: Path) -> Path:
    (ck / STATE_DIR).mkdir(parents=True)
    return ck / STATE_DIR


def test_a_history_linked_elsewhere_is_not_appended_to(entry, tmp_path: Path) -> None:
    """``history.jsonl -> victim``: the victim keeps its bytes; the attempt runs, counted, and
    its record is not kept, with a warning that names the link."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"echo hello\n")
    ck = tmp_path / "ck"
    (state(ck) / HISTORY_FILE).symlink_to(victim)
    e = run(entry, ck)
    assert victim.read_bytes() == b"echo hello\n"
    assert "attempt 1" in e.lines
    assert "symbolic link" in e.event("attempt_not_recorded")["problem"]


def test_a_lock_linked_elsewhere_creates_nothing_there(entry, tmp_path: Path) -> None:
    """``lock -> path``: nothing is created at the path; the job runs without an attempt
    number, and the warning says why."""
    target = tmp_path / "created-by-root"
    ck = tmp_path / "ck"
    (state(ck) / LOCK_FILE).symlink_to(target)
    e = run(entry, ck)
    assert not os.path.lexists(target)
    assert "attempt None" in e.lines
    assert "symbolic link" in e.event("attempt_history_unavailable")["problem"]


def test_a_state_directory_linked_elsewhere_is_ignored(entry, tmp_path: Path) -> None:
    """``.runai-entry -> elsewhere``: nothing is written elsewhere (no counter, no history);
    the job still runs, without history, and the warning names the link."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / STATE_DIR).symlink_to(elsewhere)
    e = run(entry, ck, env={"POD_INDEX": "0"})
    assert os.listdir(elsewhere) == []
    assert "attempt None" in e.lines
    assert "symbolic link" in e.event("attempt_history_unavailable")["problem"]
    assert "symbolic link" in e.event("attempt_not_recorded")["problem"]
    assert "symbolic link" in e.event("peers_not_checked")["problem"]  # nor job-wide preemption


def test_a_world_writable_state_directory_is_ignored(entry, tmp_path: Path) -> None:
    """Mode 777 (anyone on the cluster may plant records): refused, whoever owns it."""
    ck = tmp_path / "ck"
    os.chmod(state(ck), 0o777)
    e = run(entry, ck)
    assert os.listdir(ck / STATE_DIR) == []
    assert "any user" in e.event("attempt_history_unavailable")["problem"]


def test_a_history_with_another_name_is_not_appended_to(entry, tmp_path: Path) -> None:
    """A hard link from the history to a file outside: the file keeps its bytes."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"0 * * * * root true\n")
    ck = tmp_path / "ck"
    os.link(victim, state(ck) / HISTORY_FILE)
    e = run(entry, ck)
    assert victim.read_bytes() == b"0 * * * * root true\n"
    assert "hard links" in e.event("attempt_not_recorded")["problem"]


@pytest.mark.parametrize("name", [HISTORY_FILE, LOCK_FILE, "attempt.0", MARKER,
                                  "save-estimate.json"])
def test_a_fifo_as_a_state_file_holds_nothing(entry, tmp_path: Path, name: str) -> None:
    """A FIFO in place of any state file: no helper waits on it (which showed as a hung mount,
    exit 75, or as an attempt not recorded), the job runs and exits with its own code, 0. The
    history is kept unless the FIFO stands where it, its lock or its counter belong."""
    ck = tmp_path / "ck"
    os.mkfifo(state(ck) / name)
    e = run(entry, ck, env={"POD_INDEX": "0"})  # a member: the marker is read too
    if name in (HISTORY_FILE, LOCK_FILE, "attempt.0"):
        problems = [n["problem"] for n in e.events() if n["event"].startswith("attempt_")]
        assert problems and all("FIFO" in p for p in problems), e.events()
    else:
        assert [r.outcome for r in read_history(ck)] == ["completed"]


def test_a_fifo_in_the_heartbeat_directory_holds_nothing(entry, tmp_path: Path) -> None:
    """The job (or anything in it) makes a FIFO named like a heartbeat file: the watchdog and
    the end of the attempt, which read them on runai-entry's own thread, are not held."""
    job = ["sh", "-c", 'mkfifo "$RUNAI_ENTRY_HEARTBEAT_DIR/$$"; echo made']
    e = run(entry, tmp_path / "ck", "--hang-timeout", "60", job=job)
    assert "made" in e.lines


class TestLibrary:
    """The same refusals where history.py is called directly (--inspect reads this way)."""

    def test_a_refused_state_directory_raises_history_unavailable(self,
                                                                   tmp_path: Path) -> None:
        (tmp_path / STATE_DIR).symlink_to(tmp_path)
        from runai_entry.history.store import HistoryUnavailable

        with pytest.raises(HistoryUnavailable, match="symbolic link"):
            count_attempt(tmp_path, {})
        with pytest.raises(HistoryUnavailable, match="symbolic link"):
            read_history(tmp_path)
        assert sorted(os.listdir(tmp_path)) == [STATE_DIR]

    def test_a_fifo_history_is_refused_not_read(self, tmp_path: Path) -> None:
        from runai_entry.history.store import HistoryUnavailable

        os.mkfifo(state(tmp_path) / HISTORY_FILE)
        with pytest.raises(HistoryUnavailable, match="FIFO"):
            read_history(tmp_path)

    def test_regular_files_are_read(self, tmp_path: Path) -> None:
        """The safe path is the ordinary one: a file that is there is read, one that is not is
        None, and a directory made by us is accepted."""
        count_attempt(tmp_path, {})
        fd = open_dir(tmp_path)
        try:
            assert read_file(fd, "attempt.0") == b"1\n"
            assert read_file(fd, "absent") is None
        finally:
            os.close(fd)
