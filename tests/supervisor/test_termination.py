"""The termination message (--termination-log): the real runai-entry, in every outcome, leaves
a summary under 4 KB that says what happened and why the exit code is what it is."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runai_entry.config.loading import Config
from runai_entry.core.attempt_record import AttemptRecord
from runai_entry.supervisor.attempt import Attempt
from runai_entry.supervisor.exitcodes import Outcome
from runai_entry.supervisor.loop import Failure, Result
from runai_entry.supervisor.termination import MAX_BYTES, fit, message, shorten, target
from tests.harness.netfs import network_mount

__all__ = ["network_mount"]  # the fixture (a real sshfs mount whose server can be frozen)

PICKLE = b"\x80\x04N."  # a pickle of None: verification passes it
SAVES_AT_STOP = """
import os, signal, sys, time
from runai_entry.training import heartbeat
d = os.environ["RUNAI_ENTRY_CHECKPOINT_DIR"]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
for step in range(1, 1000):
    heartbeat(step)
    if stop:
        open(os.path.join(d, f"step-{step:08d}.pt"), "wb").write(b"\\x80\\x04N.")
        sys.exit(0)
    time.sleep(0.05)
"""


def typed(record: dict[str, object]) -> AttemptRecord:
    """The attempt's record as the supervisor hands it over: typed, its values unbounded."""
    return AttemptRecord.from_json(record, own=True)


def read(path: Path) -> str:
    data = path.read_bytes()
    assert 0 < len(data) < MAX_BYTES, len(data)
    return data.decode("utf-8")


def run(entry, tmp_path: Path, *args: str, code: int, env: dict[str, str] | None = None) -> str:
    log = tmp_path / "termination-log"
    e = entry(["--termination-log", str(log), *args], env=env)
    assert e.wait(timeout=60) == code, e.tail()
    return read(log)


def job(source: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(source)]


def test_completed(entry, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "step-00000007.pt").write_bytes(PICKLE)
    os.utime(ck / "step-00000007.pt", (time.time() - 125, time.time() - 125))
    text = run(entry, tmp_path, "--checkpoint-dir", str(ck), "--", "true", code=0)
    lines = text.splitlines()
    assert lines[0] == "runai-entry: completed: the command exited 0 → exit 0"
    assert lines[1].startswith("attempt 1, ran ")
    assert lines[2].startswith("resumed from: step-00000007.pt (step 7, written 2m ")
    assert lines[3].startswith("newest checkpoint: step-00000007.pt (step 7, written 2m ")


def test_preempted_saves_at_the_stop(entry, tmp_path: Path) -> None:
    """A real SIGTERM: the requeue code and why, the checkpoint the stop wrote, the grace used."""
    ck = tmp_path / "ck"
    log = tmp_path / "termination-log"
    e = entry(["--termination-log", str(log), "--checkpoint-dir", str(ck), "--grace-period",
               "10s", "--", *job(SAVES_AT_STOP)])
    e.expect_event("started")
    time.sleep(0.5)
    e.signal(signal.SIGTERM)
    assert e.wait(timeout=60) == 1
    text = read(log)
    assert text.startswith("runai-entry: preempted (SIGTERM) and stopped within the grace period"
                           " → exit 1, the requeue code: the platform starts the job again\n")
    assert "resumed from: nothing (a fresh start)\n" in text
    assert "newest checkpoint: step-000000" in text and "written 0s ago" in text
    assert "lost work: 0s\n" in text
    assert "grace used: " in text and " of the 8s budget (" in text


def test_failed_with_the_first_failure(entry, tmp_path: Path) -> None:
    text = run(entry, tmp_path, "--checkpoint-dir", str(tmp_path / "ck"), "--", "sh", "-c",
               "exit 3", code=3)
    assert text.startswith("runai-entry: failed: the command exited 3 → exit 3 (its own status)")
    assert "\nfirst failure: pid " in text and "(the command) exited 3 at " in text


def test_killed_by_a_signal_without_a_checkpoint_directory(entry, tmp_path: Path) -> None:
    text = run(entry, tmp_path, "--", "sh", "-c", "kill -SEGV $$", code=139)
    assert text.startswith("runai-entry: failed: the command was killed by signal 11 → exit "
                           "139 (128 + the signal)")


def test_killed_at_the_deadline(entry, tmp_path: Path) -> None:
    text = run(entry, tmp_path, "--simulate-preempt", "0.5s", "--grace-period", "1.5s",
               "--kill-margin", "0.5s", "--", "sh", "-c", "trap '' TERM; sleep 30", code=1)
    assert text.startswith("runai-entry: preempted, and SIGKILLed at the deadline: still "
                           "running 1s after the stop signal (the save did not finish) → exit 1")
    assert "grace used: 1.0s of the 1s budget (10" in text


def test_hung(entry, tmp_path: Path) -> None:
    source = """
    import time
    from runai_entry.training import heartbeat
    for step in range(1, 6):
        heartbeat(step)
        time.sleep(0.05)
    time.sleep(3600)
    """
    text = run(entry, tmp_path, "--hang-timeout", "1s", "--hang-exit-code", "3", "--",
               *job(source), code=3)
    assert text.startswith("runai-entry: hung: process ")
    assert "missed its heartbeat allowance (1.0s, last step 5), so the watchdog stopped the " \
           "job → exit 3 (--hang-exit-code; by default the requeue code)" in text


def test_not_found(entry, tmp_path: Path) -> None:
    text = run(entry, tmp_path, "--", "/no/such/command", code=127)
    assert text == ("runai-entry: the command '/no/such/command' could not start (not found) → "
                    "exit 127\n")


def test_a_10000_character_command_that_cannot_start(entry, tmp_path: Path) -> None:
    """Too long a name for the kernel (ENAMETOOLONG): 126, and the name escaped and cut."""
    command = "/no/such/" + "\x1b[2J" + "x" * 10_000
    text = run(entry, tmp_path, "--", command, code=126)
    assert text.startswith("runai-entry: the command '/no/such/\\x1b[2Jxxx")
    assert "…" in text and "could not start (not executable) → exit 126" in text


def test_storage_unavailable_before_the_start(entry, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    text = run(entry, tmp_path, "--checkpoint-dir", str(tmp_path / "a-file"), "--", "true",
               code=75)
    assert text.startswith(f"runai-entry: not started: checkpoint directory "
                           f"'{tmp_path / 'a-file'}' is not a directory → exit 75 (the "
                           "platform should retry later")


def test_the_crash_loop_guard(entry, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "step-1.pt").write_bytes(PICKLE)
    for _ in range(2):
        entry(["--termination-log", "off", "--checkpoint-dir", str(ck),
               "--max-attempts-without-progress", "2", "--", "false"]).wait(timeout=60)
    text = run(entry, tmp_path, "--checkpoint-dir", str(ck), "--max-attempts-without-progress",
               "2", "--", "false", code=86)
    assert text.startswith("runai-entry: not started: the last 2 attempts of member 0 made no "
                           "progress")
    assert "→ exit 86 (the crash-loop guard: not the requeue code" in text


def test_preempted_before_the_start(entry, network_mount, tmp_path: Path) -> None:
    """SIGTERM while runai-entry waits for a hung checkpoint directory: the job never starts."""
    from tests.harness.netfs import wait_for_hung_helper

    ck, log = network_mount.mount / "ck", tmp_path / "termination-log"
    ck.mkdir()
    network_mount.freeze()
    e = entry(["--termination-log", str(log), "--checkpoint-dir", str(ck), "--", "true"])
    wait_for_hung_helper(e.pid)
    e.signal(signal.SIGTERM)
    assert e.wait(timeout=20) == 1
    assert read(log) == ("runai-entry: preempted before the job started (SIGTERM) → exit 1, the "
                         "requeue code: the platform starts the job again\n")


def test_storage_hung_before_the_start(entry, network_mount, tmp_path: Path) -> None:
    """At --storage-timeout: exit 75, and the message says what did not answer."""
    ck = network_mount.mount / "ck"
    ck.mkdir()
    network_mount.freeze()
    text = run(entry, tmp_path, "--storage-timeout", "1s", "--checkpoint-dir", str(ck), "--",
               "true", code=75)
    assert text.startswith(f"runai-entry: not started: checkpoint directory {str(ck)!r}: ")
    assert "did not answer within 1." in text and "→ exit 75 (the platform should retry" in text


def test_a_termination_log_on_a_hung_mount_does_not_hold_the_exit(entry, network_mount,
                                                                  tmp_path: Path) -> None:
    """The write has its deadline: the job's exit code comes back, with one warning."""
    network_mount.freeze()
    e = entry(["--termination-log", str(network_mount.mount / "termination-log"), "--", "sh",
               "-c", "exit 6"])
    assert e.wait(timeout=20) == 6
    assert "did not answer within 0.5s" in e.event("termination_log_not_written")["problem"]


def test_the_drill_leaves_its_last_attempts_message(entry, tmp_path: Path) -> None:
    text = run(entry, tmp_path, "--checkpoint-dir", str(tmp_path / "ck"), "--simulate-preempt",
               "0.3s", "--simulate-requeue", "1", "--", "sleep", "0.6", code=0)
    assert text.startswith("runai-entry: completed") and "attempt 2, ran " in text


def test_the_longest_names_the_filesystem_allows_still_fit(entry, tmp_path: Path) -> None:
    """A checkpoint named with 255 bytes of control and multi-byte characters, in a directory
    whose path is thousands of characters long, failing: escaped, cut, under 4 KB."""
    ck = tmp_path
    while len(str(ck)) < 3400:
        ck /= "d" * 200
    ck.mkdir(parents=True)
    name = ("step-9-\x1b]0;owned\x07" + "é" * 200)[:200].encode()[:240].decode("utf-8", "ignore")
    (ck / f"{name}.pt").write_bytes(PICKLE)
    text = run(entry, tmp_path, "--checkpoint-dir", str(ck), "--", "sh", "-c", "exit 4", code=4)
    assert "\x1b" not in text and "\x07" not in text
    assert "resumed from: step-9-\\x1b]0;owned\\x07éé" in text
    assert "newest checkpoint: step-9-\\x1b]0;owned\\x07éé" in text


def test_a_write_that_fails_is_one_warning_and_changes_no_exit_code(entry,
                                                                     tmp_path: Path) -> None:
    e = entry(["--termination-log", str(tmp_path / "no" / "such" / "dir"), "--", "sh", "-c",
               "exit 5"])
    assert e.wait(timeout=60) == 5
    warning = e.event("termination_log_not_written")
    assert "ENOENT" in warning["problem"] or "No such file" in warning["problem"], warning


def test_a_link_is_not_followed(entry, tmp_path: Path) -> None:
    (tmp_path / "target").write_text("kept")
    os.symlink(tmp_path / "target", tmp_path / "link")
    e = entry(["--termination-log", str(tmp_path / "link"), "--", "true"])
    assert e.wait(timeout=60) == 0
    assert (tmp_path / "target").read_text() == "kept"
    assert "ELOOP" in e.event("termination_log_not_written")["problem"]


def test_off_writes_nothing(entry, tmp_path: Path) -> None:
    for off in ("off", ""):
        e = entry(["--", "true"], env={"RUNAI_ENTRY_TERMINATION_LOG": off})
        assert e.wait(timeout=60) == 0
    assert target(Config(command=("true",), termination_log=None)) is None


def test_auto_is_the_kubernetes_path_only_where_it_is_writable() -> None:
    expected = "/dev/termination-log" if os.access("/dev/termination-log", os.W_OK) else None
    assert target(Config(command=("true",))) == expected
    assert target(Config(command=("true",), termination_log="/x")) == "/x"


# -- the message, pure ------------------------------------------------------------------------


def test_a_10000_character_checkpoint_name_and_failure_still_fit() -> None:
    long = "ckpt-" + "\x1b" * 10 + "名" * 10_000 + "-step-5.pt"
    record = {"attempt": 3, "member": "m" * 5000, "outcome": "preempted", "exit_code": 1,
              "started_at": "2026-01-01T00:00:00.000+00:00", "ran_for_s": 100.0,
              "grace_used_s": 5.0, "stop_timeout_s": 28.0, "simulated": False,
              "resumed_from": "/c/" + long, "resumed_step": 4, "resumed_mtime": 1767225500.0,
              "newest_at_end": "/c/" + long * 2, "newest_step": 5, "newest_mtime": 1767225590.0,
              "first_failure": {"pid": 9, "how": "x" * 10_000, "command": True}}
    result = Result(1, Outcome.PREEMPTED, -15, False, 100.0, 5.0,
                    first_failure=Failure(9, -9, 3.0, True))
    text = message(Config(command=("true",)), Attempt(1, result, typed(record)),
                   now=1767225600.0)
    assert len(text.encode("utf-8")) < MAX_BYTES
    assert "\x1b" not in text
    assert "resumed from: ckpt-\\x1b" in text and "-step-5.pt (step 4, written 1m 40s ago)" \
        in text
    assert text.startswith("runai-entry: preempted (SIGTERM)")


def test_fit_cuts_under_the_limit_at_a_character() -> None:
    text = fit(["é" * 600] * 20)
    data = text.encode("utf-8")
    assert len(data) < MAX_BYTES and text.endswith("…\n")
    assert shorten("abcdefghij", 5) == "ab…ij" and shorten("abc", 5) == "abc"


@pytest.mark.parametrize("value", ["off", "", "OFF", False, "none"])
def test_off_values(value: object) -> None:
    from runai_entry.config.options import BY_KEY

    assert BY_KEY["termination_log"].parse(value) is None
    assert BY_KEY["termination_log"].parse("Auto") == "auto"


@pytest.mark.parametrize(("record", "code", "first_line"), [
    ({"outcome": "followed-peer", "ran_for_s": 9.0, "followed": {"member": "2"}}, 1,
     "member 2 of the job was preempted, so this member stopped too → exit 1, the requeue code"),
    ({"outcome": "preempted", "ran_for_s": 9.0, "simulated": True}, 1,
     "preempted (--simulate-preempt) and stopped within the grace period → exit 1"),
    ({"outcome": "preempted"}, 1, "preempted before the job started (SIGTERM) → exit 1"),
    ({"outcome": "not-executable"}, 126, "the command 'train.py' could not start (not "
     "executable) → exit 126"),
])
def test_why_the_exit_code(record: dict[str, object], code: int, first_line: str) -> None:
    text = message(Config(command=("train.py",)), Attempt(code, None, typed(record)),
                   now=0.0)
    assert text.splitlines()[0].startswith(f"runai-entry: {first_line}"), text


@pytest.mark.parametrize(("code", "meaning"), [
    (75, "the platform should retry later"), (86, "the crash-loop guard: not the requeue code"),
    (70, "a bug in runai-entry: not the requeue code"), (2, "a configuration error")])
def test_why_an_exit_before_the_job(code: int, meaning: str) -> None:
    text = message(Config(command=("x",)), None, error="what went wrong", exit_code=code, now=0.0)
    assert text.startswith(f"runai-entry: not started: what went wrong → exit {code} "
                           f"({meaning}"), text
