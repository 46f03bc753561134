"""The crash-loop guard with real runs: a job that fails without writing a checkpoint, again
and again, is refused after --max-attempts-without-progress attempts (exit 86), and no sooner."""

from __future__ import annotations

import sys
from pathlib import Path

from runai_entry.errors import EXIT_CRASH_LOOP

FAILS = ["sh", "-c", "exit 1"]


def run(entry, ck: Path, *job: str, options: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    e = entry(["--checkpoint-dir", str(ck), *options, "--", *job])
    return e.wait(), e.stderr


def test_refused_after_three_attempts_without_progress(entry, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    for _ in range(3):
        assert run(entry, ck, *FAILS)[0] == 1
    code, stderr = run(entry, ck, *FAILS)
    assert code == EXIT_CRASH_LOOP
    errors = [line for line in stderr if line.startswith("runai-entry: error:")]
    assert len(errors) == 1
    assert "attempt 1 (failed, exit 1), attempt 2 (failed, exit 1), attempt 3 (failed" in errors[0]
    assert "--max-attempts-without-progress 0" in errors[0]
    # The refusal counts no attempt; --inspect says where the guard stands.
    shown = entry(["--inspect", "--checkpoint-dir", str(ck)])
    assert shown.wait() == 0
    assert any("3 of 3" in line and "refused" in line for line in shown.lines), shown.lines
    # The override runs the job (which fails again: exit 1).
    assert run(entry, ck, *FAILS, options=("--max-attempts-without-progress", "0"))[0] == 1


def test_an_attempt_that_saves_a_checkpoint_resets_the_count(entry, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    for _ in range(2):
        assert run(entry, ck, *FAILS)[0] == 1
    # A pickle stream, as torch.save writes: a checkpoint even verification accepts.
    saves_then_fails = [sys.executable, "-c", "import pickle; pickle.dump({'step': 10}, "
                        f"open({str(ck / 'step-00000010.pt')!r}, 'wb'), protocol=4); exit(1)"]
    assert run(entry, ck, *saves_then_fails)[0] == 1
    for _ in range(2):
        assert run(entry, ck, *FAILS)[0] == 1  # two without progress since the save: allowed
    assert run(entry, ck, *FAILS)[0] == 1
    assert run(entry, ck, *FAILS)[0] == EXIT_CRASH_LOOP
