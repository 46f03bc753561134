"""A checkpoint directory on a network mount whose server stopped answering.

Real sshfs over loopback, its server frozen with SIGSTOP (tests/harness/netfs.py): every request on
the mount hangs uninterruptibly in the kernel, as on a dead NFS server. runai-entry must neither
hang nor swallow the preemption: exit 75 at the deadline, the preempt code on SIGTERM, the
job's own code after the job, and never a thread of its own stuck on the mount.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.harness.netfs import in_kernel_wait, network_mount, wait_for_hung_helper

__all__ = ["network_mount"]


def checkpoint_dir(mount: Path) -> Path:
    ck = mount / "ck"
    ck.mkdir()
    (ck / "step-00000001.pt").write_bytes(b"\x80\x04N.")  # a pickle: verification passes it
    return ck


def test_hang_before_the_start_exits_75_naming_what_did_not_answer(entry, network_mount,
                                                                   tmp_path: Path) -> None:
    """At --storage-timeout: exit 75, one line naming the directory, what hung and for how long;
    the job never starts."""
    ck = checkpoint_dir(network_mount.mount)
    started = tmp_path / "started"
    network_mount.freeze()
    e = entry(["--storage-timeout", "2s", "--checkpoint-dir", str(ck), "--",
               "touch", str(started)])
    assert e.wait(timeout=60) == 75
    errors = [line for line in e.stderr if line.startswith("runai-entry: error:")]
    assert len(errors) == 1, e.stderr
    assert f"checkpoint directory {str(ck)!r}:" in errors[0]
    assert "did not answer within 2." in errors[0]
    assert not started.exists()


def test_sigterm_while_the_mount_hangs_is_a_preemption(entry, network_mount,
                                                       tmp_path: Path) -> None:
    """SIGTERM while runai-entry waits for the storage: the preempt code, the job not started,
    and runai-entry itself never stuck in the kernel (only its helper is)."""
    ck = checkpoint_dir(network_mount.mount)
    started = tmp_path / "started"
    network_mount.freeze()
    e = entry(["--checkpoint-dir", str(ck), "--", "touch", str(started)])
    wait_for_hung_helper(e.pid)
    assert in_kernel_wait(e.pid) == []
    e.signal(signal.SIGTERM)
    assert e.wait(timeout=20) == 1
    assert e.event("preempted_before_start")["started"] is False
    assert not started.exists()


def test_inspect_on_a_hung_mount_exits_75(entry, network_mount) -> None:
    """--inspect reads through a helper too: exit 75 at the deadline, not a hang."""
    ck = checkpoint_dir(network_mount.mount)
    network_mount.freeze()
    e = entry(["--inspect", "--storage-timeout", "1s", "--checkpoint-dir", str(ck)])
    assert e.wait(timeout=60) == 75
    assert any("did not answer within" in line for line in e.stderr)


def test_job_exit_code_delivered_and_history_written_once_the_server_answers(
        entry, network_mount, tmp_path: Path) -> None:
    """The server hangs while the job runs: runai-entry exits with the job's code after its
    short history budget; the line is appended once the server answers again."""
    ck = checkpoint_dir(network_mount.mount)
    go = tmp_path / "go"
    os.mkfifo(go)
    e = entry(["--checkpoint-dir", str(ck), "--", "sh", "-c",
               f"echo ready; read line < {go}; exit 3"])
    e.expect("ready")
    network_mount.freeze()
    with open(go, "w") as fifo:
        fifo.write("go\n")
    assert e.wait(timeout=60) == 3
    event = e.event("attempt_not_recorded")
    assert "did not answer within" in event["problem"]
    assert event["record"]["exit_code"] == 3

    network_mount.thaw()
    history = network_mount.served / "ck" / ".runai-entry" / "history.jsonl"
    deadline = time.monotonic() + 60
    while not history.exists() or '"exit_code":3' not in history.read_text():
        assert time.monotonic() < deadline, "the late history line never arrived"
        time.sleep(0.1)
    records = [json.loads(line) for line in history.read_text().splitlines()]
    assert [r["exit_code"] for r in records] == [3]


def test_a_server_that_answers_again_resumes_normal_work(entry, network_mount) -> None:
    """Frozen for a moment, then thawed within the deadline: the job starts and resumes."""
    ck = checkpoint_dir(network_mount.mount)
    network_mount.freeze()
    e = entry(["--checkpoint-dir", str(ck), "--resume-flag", "", "--", "sh", "-c",
               'echo "resume=$RUNAI_ENTRY_RESUME_FROM"'])
    wait_for_hung_helper(e.pid)
    network_mount.thaw()
    assert e.expect(r"resume=(.*)").group(1) == str(ck / "step-00000001.pt")
    assert e.wait(timeout=60) == 0
    assert e.event("exit")["reason"] == "completed"
