"""The crash-loop guard with real runs: a job that fails without writing a checkpoint, again
and again, is refused after --max-attempts-without-progress attempts (exit 86), and no sooner."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runai_entry.core.errors import EXIT_CRASH_LOOP
from runai_entry.history.store import read_history

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


def _junk_pt(ck: Path) -> str:
    return f"open({str(ck / 'step-00000010.pt')!r}, 'wb').write(b'x' * 100)"


def _truncated_safetensors(ck: Path) -> str:
    # A header that promises 4096 bytes of JSON, cut after 10: a write killed mid-file.
    return (f"import struct; open({str(ck / 'step-00000010.safetensors')!r}, 'wb')"
            ".write(struct.pack('<Q', 4096) + b'{\"w\": {\"dt')")


def _hf_cut_short(ck: Path) -> str:
    # transformers' JIT checkpoint on SIGTERM: the sentinel is removed only once it is whole.
    d = ck / "checkpoint-10"
    return (f"import os; os.makedirs({str(d)!r}, exist_ok=True); "
            f"open({str(d / 'trainer_state.json')!r}, 'w').write('{{}}'); "
            f"open({str(d / 'model.safetensors')!r}, 'wb').write(b'x'); "
            f"open({str(d / 'checkpoint-is-incomplete.txt')!r}, 'w').write('')")


@pytest.mark.parametrize("writes", [_junk_pt, _truncated_safetensors, _hf_cut_short],
                         ids=["junk-pt", "truncated-safetensors", "hf-jit-cut-short"])
def test_a_checkpoint_that_fails_verification_is_no_progress(entry, tmp_path: Path,
                                                              writes) -> None:
    """A job that leaves the same broken checkpoint on every attempt and crashes: the start
    skips it, so the end must too, or every attempt "progresses" and the guard never trips."""
    ck = tmp_path / "ck"
    ck.mkdir()
    crashes = [sys.executable, "-c", f"{writes(ck)}; exit(3)"]
    for _ in range(3):
        assert run(entry, ck, *crashes)[0] == 3
    code, stderr = run(entry, ck, *crashes)
    assert code == EXIT_CRASH_LOOP, stderr
    records = read_history(ck)
    assert [r.newest_at_end for r in records] == [None] * 3
    assert all(r.skipped_at_end for r in records), records
    # --inspect agrees with the guard: no resume "went backwards", and it says what was skipped.
    shown = entry(["--inspect", "--checkpoint-dir", str(ck)])
    assert shown.wait() == 0
    assert not any("backwards" in line for line in shown.lines), shown.lines
    assert any("3 of 3" in line for line in shown.lines), shown.lines


IN_PLACE = [sys.executable, str(Path(__file__).parents[1] / "training_scripts" / "in_place.py")]


@pytest.mark.parametrize("mode", ["resave", "resave-new"], ids=["same-bytes", "other-bytes"])
def test_a_resave_of_the_state_resumed_from_is_no_progress(entry, tmp_path: Path,
                                                          mode: str) -> None:
    """nanoGPT on resume saves ckpt.pt again at the iteration it resumed from (the same bytes,
    or with a re-estimated loss), and then an OOM kill ends it: a rewritten file, no new work.
    The guard trips however often the file is rewritten."""
    ck = tmp_path / "ck"
    ck.mkdir()
    assert run(entry, ck, *IN_PLACE, "save")[0] == 0  # step 1: new work
    codes = [run(entry, ck, *IN_PLACE, mode)[0] for _ in range(5)]
    assert codes[:3] == [128 + 9] * 3 and codes[3] == EXIT_CRASH_LOOP, codes
    records = read_history(ck)
    assert len({r.newest_mtime for r in records}) == 4  # rewritten at every attempt
    shown = entry(["--inspect", "--checkpoint-dir", str(ck)])
    assert shown.wait() == 0
    assert any("3 of 3" in line for line in shown.lines), shown.lines
