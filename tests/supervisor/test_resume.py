"""runai-entry's side of resuming: the resume flag, the job's variables, attempts, history."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

from tests.harness.spawning import ENTRY, TESTS

# A .pt/.ckpt that runai-entry's default verification accepts (a complete pickle stream).
PICKLE = pickle.dumps("weights")
TRAINER = str(TESTS / "probes" / "trainer.py")
SHOW_ARGS = "import json,os,sys; print(json.dumps([sys.argv[1:], {k: v for k, v in os.environ.items() if k.startswith('RUNAI_ENTRY_')}]))"  # noqa: E501


def _run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENTRY, "--log-format", "json", *args], capture_output=True,
                          text=True, timeout=60, **kw)  # type: ignore[call-overload]


def _show(ckpt: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    r = _run([*extra, "--checkpoint-dir", str(ckpt), sys.executable, "-c", SHOW_ARGS, "--x"])
    assert r.returncode == 0, r.stderr
    argv, env = json.loads(r.stdout)
    return argv, env


def _events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


class TestResumeFlag:
    def test_fresh_start_when_the_directory_does_not_exist(self, tmp_path: Path) -> None:
        """No directory yet: no flag, no RESUME_FROM, attempt 1, and the directory is named."""
        argv, env = _show(tmp_path / "ckpt")
        assert argv == ["--x"]
        assert "RUNAI_ENTRY_RESUME_FROM" not in env
        assert env["RUNAI_ENTRY_CHECKPOINT_DIR"] == str(tmp_path / "ckpt")

    def test_newest_complete_checkpoint_is_passed_as_flag_and_variable(self,
                                                                       tmp_path: Path) -> None:
        """The highest step wins; a torn temp and an empty file are passed over."""
        ckpt = tmp_path / "my checkpoints"  # a space: the path must stay one argument
        ckpt.mkdir()
        (ckpt / "step-9.pt").write_bytes(PICKLE)
        (ckpt / "step-10.pt").write_bytes(PICKLE)
        (ckpt / "step-11.pt").write_bytes(b"")  # empty: a writer died before its first byte
        (ckpt / "step-12.pt.tmp").write_bytes(PICKLE)
        argv, env = _show(ckpt)
        newest = str(ckpt / "step-10.pt")
        assert argv == ["--x", "--resume-from", newest]
        assert env["RUNAI_ENTRY_RESUME_FROM"] == newest

    def test_empty_resume_flag_keeps_only_the_variable(self, tmp_path: Path) -> None:
        """--resume-flag '' adds no arguments, but the variable is still set."""
        (tmp_path / "a.ckpt").write_bytes(PICKLE)
        argv, env = _show(tmp_path, "--resume-flag", "")
        assert argv == ["--x"]
        assert env["RUNAI_ENTRY_RESUME_FROM"] == str(tmp_path / "a.ckpt")

    def test_custom_flag_and_glob(self, tmp_path: Path) -> None:
        """--resume-flag renames the flag; --checkpoint-glob restricts the candidates."""
        (tmp_path / "model-5.pt").write_bytes(PICKLE)
        (tmp_path / "other-9.pt").write_bytes(PICKLE)
        argv, _ = _show(tmp_path, "--resume-flag", "--ckpt", "--checkpoint-glob", "model-*")
        assert argv == ["--x", "--ckpt", str(tmp_path / "model-5.pt")]


    def test_torn_checkpoint_is_skipped_by_default(self, tmp_path: Path) -> None:
        """A .ckpt cut short by a SIGKILL mid-write is not handed to the job, unless
        verification is turned off (then the job would crash at load, again and again)."""
        import zipfile

        ckpt = tmp_path / "ckpt"
        ckpt.mkdir()
        for step in (300, 320):
            with zipfile.ZipFile(ckpt / f"epoch=0-step={step}.ckpt", "w") as z:
                z.writestr("data.pkl", b"x" * 4096)
        torn = ckpt / "epoch=0-step=320.ckpt"
        torn.write_bytes(torn.read_bytes()[:2048])
        argv, _ = _show(ckpt)
        assert argv == ["--x", "--resume-from", str(ckpt / "epoch=0-step=300.ckpt")]
        argv, _ = _show(ckpt, "--no-verify-checkpoints")
        assert argv == ["--x", "--resume-from", str(torn)]


class TestUnreadableDirectory:
    def test_unreadable_directory_stops_before_the_job(self, tmp_path: Path) -> None:
        """A checkpoint 'directory' that cannot be listed fails with 75; the job never runs."""
        not_a_dir = tmp_path / "ckpt"
        not_a_dir.write_text("")
        marker = tmp_path / "ran"
        r = _run(["--checkpoint-dir", str(not_a_dir), "touch", str(marker)])
        assert r.returncode == 75
        assert not marker.exists()
        assert r.stderr.count("\n") == 1 and "not a directory" in r.stderr

    def test_require_network_storage_refuses_local_disk(self, tmp_path: Path) -> None:
        """--require-network-storage turns the local-storage warning into exit 2."""
        r = _run(["--require-network-storage", "--checkpoint-dir", str(tmp_path), "true"])
        assert r.returncode == 2 and "--require-network-storage" in r.stderr

    def test_local_storage_warns_once(self, tmp_path: Path) -> None:
        """Without the flag, local storage is one warning event and the job runs."""
        r = _run(["--checkpoint-dir", str(tmp_path), "true"])
        assert r.returncode == 0
        warnings = [e for e in _events(r.stderr)
                    if e["event"] == "checkpoints_not_on_network_storage"]
        assert len(warnings) == 1


class TestAttempts:
    def test_attempt_counts_up_and_history_records_each(self, tmp_path: Path) -> None:
        """Each run against the directory is the next attempt, recorded in the history."""
        seen = [_show(tmp_path)[1]["RUNAI_ENTRY_ATTEMPT"] for _ in range(3)]
        assert seen == ["1", "2", "3"]
        lines = (tmp_path / ".runai-entry" / "history.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert [r["attempt"] for r in records] == [1, 2, 3]
        assert all(r["outcome"] == "completed" and r["exit_code"] == 0 for r in records)

    def test_history_knows_what_the_job_left(self, tmp_path: Path) -> None:
        """The record names the checkpoint resumed from and the newest one at the end."""
        (tmp_path / "step-1.pt").write_bytes(PICKLE)
        r = _run(["--checkpoint-dir", str(tmp_path), "sh", "-c",
                  f"cp '{tmp_path}/step-1.pt' '{tmp_path}/step-2.pt'; exit 4"])
        assert r.returncode == 4
        record = json.loads((tmp_path / ".runai-entry" / "history.jsonl").read_text())
        assert record["resumed_from"] == str(tmp_path / "step-1.pt")
        assert record["newest_at_end"] == str(tmp_path / "step-2.pt")
        assert record["outcome"] == "failed" and record["exit_code"] == 4


    def test_many_damaged_checkpoints_do_not_hide_an_older_good_one(self,
                                                                     tmp_path: Path) -> None:
        """Forty damaged checkpoints newer than a good one (anyone can write 32 junk files):
        discovery keeps looking within its budget and resumes from the good one."""
        for n in range(1, 41):
            (tmp_path / f"step-{n}.pt").write_bytes(b"x" * 100)
        (tmp_path / "step-0.pt").write_bytes(PICKLE)
        r = _run(["--checkpoint-dir", str(tmp_path), "true"])
        assert r.returncode == 0, r.stderr
        (resuming,) = [e for e in _events(r.stderr) if e["event"] == "resuming"]
        assert resuming["checkpoint"] == str(tmp_path / "step-0.pt")
        skipped = [e for e in _events(r.stderr) if e["event"] == "checkpoint_skipped"]
        assert len(skipped) == 40


class TestInspect:
    def test_inspect_shows_history_and_next_checkpoint_without_running(self,
                                                                       tmp_path: Path) -> None:
        """--inspect prints the attempts, the next resume point and the skipped; counts nothing."""
        _show(tmp_path)
        (tmp_path / "step-3.pt").write_bytes(PICKLE)
        (tmp_path / "step-4.pt").write_bytes(b"")
        r = _run(["--inspect", "--checkpoint-dir", str(tmp_path)])
        assert r.returncode == 0, r.stderr
        assert "attempts (1):" in r.stdout
        assert f"next attempt resumes from: {tmp_path / 'step-3.pt'}" in r.stdout
        assert "skipped step-4.pt: empty file" in r.stdout
        assert _show(tmp_path)[1]["RUNAI_ENTRY_ATTEMPT"] == "2"  # inspect did not count

    def test_inspect_with_a_command_is_an_error(self, tmp_path: Path) -> None:
        """--inspect runs nothing, so a command after it is a usage error."""
        r = _run(["--inspect", "--checkpoint-dir", str(tmp_path), "python"])
        assert r.returncode == 2 and "--inspect runs no command" in r.stderr


class TestDrill:
    def _drill(self, tmp_path: Path, *trainer_args: str, requeues: int = 2,
               grace: str = "4s") -> subprocess.CompletedProcess[str]:
        # Preempted 1 s after each start: long enough for the trainer's interpreter to start and
        # install its handler on a loaded machine; 150 steps of 20 ms outlast two attempts.
        return _run(["--simulate-preempt", "1s", "--simulate-requeue", str(requeues),
                     "--grace-period", grace, "--kill-margin", "1s",
                     "--checkpoint-dir", str(tmp_path / "ckpt"),
                     sys.executable, TRAINER, "--finish-at", "150", *trainer_args])

    def test_drill_preempts_requeues_resumes_and_finishes(self, tmp_path: Path) -> None:
        """Two simulated preemptions, each resumed from the save it made, then completion."""
        r = self._drill(tmp_path)
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        assert out[0] == "fresh attempt 1"
        resumed = [line for line in out if line.startswith("resumed")]
        assert len(resumed) == 2 and resumed[0].endswith("attempt 2")
        assert out[-1] == "finished 150"
        assert "runai-entry preemption drill" in r.stderr
        assert "verdict: OK" in r.stderr
        table = r.stderr.split("runai-entry preemption drill", 1)[1]
        assert "SIGTERM →" in table and "0 completed" in table and "1 preempted" in table
        records = [json.loads(x) for x in
                   (tmp_path / "ckpt" / ".runai-entry" / "history.jsonl").read_text().splitlines()]
        assert [r["outcome"] for r in records] == ["preempted", "preempted", "completed"]
        # The storage check is made once for the run, not once per attempt.
        warnings = [e for e in _events(r.stderr)
                    if e["event"] == "checkpoints_not_on_network_storage"]
        assert len(warnings) == 1
        assert all(r["simulated"] for r in records[:2])

    def test_drill_verdict_names_lost_work(self, tmp_path: Path) -> None:
        """A job that does not save on the stop signal is called out: its work was lost."""
        r = self._drill(tmp_path, "--no-save-on-stop", requeues=1)
        assert r.returncode == 0
        assert "preempted without writing a new checkpoint" in r.stderr

    def test_drill_verdict_names_a_kill_at_the_deadline(self, tmp_path: Path) -> None:
        """A save slower than the budget is killed at the deadline, and the verdict says so."""
        r = self._drill(tmp_path, "--save-seconds", "5", requeues=1, grace="2s")
        assert "SIGKILLed" in r.stderr and "killed-at-deadline" in r.stderr
