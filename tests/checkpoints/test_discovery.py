"""Discovery at scale: names parsed once per shape, best first past the first batch, and the
search budget spent on damaged and unknown entries. Real files in tmp_path, no mocks."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import ClassVar

import pytest

from runai_entry.checkpoints import (
    Discovery,
    SearchBudget,
    discover,
    parse_step,
)
from runai_entry.checkpoints.names import FILE_SUFFIXES
from runai_entry.core.errors import CheckpointDirUnavailable, CheckpointSearchExhausted


def junk(path: Path) -> Path:
    """100 bytes that no format accepts: what a save cut by a kill, or a buggy save, leaves."""
    path.write_bytes(b"\x00junk" * 20)
    return path


def valid_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return path


def failed(found: Discovery) -> list[str]:
    return [s.name for s in found.skipped if s.reason.startswith("failed verification")]


class TestSearchBudget:
    def test_keeps_looking_past_many_damaged_files(self, tmp_path: Path) -> None:
        """Forty junk files newer than a good one: the good one is found, not a fresh start
        (anyone can write 32 junk files; the old count-based bound gave up and started over)."""
        for step in range(100, 140):
            junk(tmp_path / f"step-{step}.pt")
        valid_zip(tmp_path / "step-1.pt")
        junk(tmp_path / "step-0.pt")  # older still: never read once step-1 passes
        found = discover(tmp_path, verify=True)
        assert found.chosen is not None and found.chosen.name == "step-1.pt"
        assert len(failed(found)) == 40
        assert found.gave_up == 0 and found.resume_point() is found.chosen

    def test_gives_up_when_the_budget_is_spent_and_refuses_to_start_fresh(
            self, tmp_path: Path) -> None:
        """Best first: the newest junk is read, the rest is counted; resuming is refused."""
        for step in range(100, 115):
            junk(tmp_path / f"step-{step}.pt")
        valid_zip(tmp_path / "step-1.pt")  # valid, but beyond the budget
        found = discover(tmp_path, verify=True, budget=SearchBudget(entries=10))
        assert found.chosen is None
        assert failed(found) == [f"step-{s}.pt" for s in range(114, 104, -1)]
        assert found.gave_up == 6 and found.search_stopped == "10 entries examined"
        with pytest.raises(CheckpointSearchExhausted) as refused:
            found.resume_point()
        message = str(refused.value)
        assert refused.value.exit_code == 75 and "\n" not in message
        assert str(tmp_path) in message and "6 older ones not examined" in message

    def test_bytes_read_count_against_the_budget(self, tmp_path: Path) -> None:
        for step in range(100, 110):
            (tmp_path / f"step-{step}.npz").write_bytes(b"PK\x03\x04" + bytes(996))  # torn zip
        valid_zip(tmp_path / "step-1.npz")
        found = discover(tmp_path, verify=True, budget=SearchBudget(nbytes=3000))
        assert found.chosen is None and len(failed(found)) == 3
        assert found.search_stopped == "3000 bytes read"

    def test_unknown_directories_count_against_the_budget(self, tmp_path: Path) -> None:
        """Empty step directories (a planted thousand, or sshfs leftovers) are examined one
        listdir each: they spend the same budget."""
        for step in range(100, 130):
            (tmp_path / f"step-{step}").mkdir()
        valid_zip(tmp_path / "step-1.pt")
        found = discover(tmp_path, verify=True, budget=SearchBudget(entries=20))
        assert found.chosen is None and found.gave_up == 11
        assert discover(tmp_path, verify=True).chosen is not None  # the default budget: found

    def test_nothing_left_is_not_giving_up(self, tmp_path: Path) -> None:
        """Every entry was read and none verifies: a fresh start, not a refusal."""
        for step in range(40):
            junk(tmp_path / f"step-{step}.pt")
        found = discover(tmp_path, verify=True)
        assert found.chosen is None
        assert len(failed(found)) == 40
        assert found.gave_up == 0 and found.resume_point() is None

    def test_the_rejected_are_listed_up_to_a_bound_and_counted_beyond(
            self, tmp_path: Path) -> None:
        """Each rejected entry becomes a log line and a field of the history line: a planted
        thousand are counted, not listed."""
        for step in range(1, 151):
            junk(tmp_path / f"step-{step}.pt")
        found = discover(tmp_path, verify=True)
        assert len(found.skipped) == 100 and found.skipped_more == 50
        assert found.skipped[0].name == "step-150.pt"

    def test_without_verification_nothing_is_read(self, tmp_path: Path) -> None:
        for step in range(45):
            junk(tmp_path / f"step-{step}.pt")
        found = discover(tmp_path, verify=False)
        assert found.chosen is not None
        assert found.chosen.name == "step-44.pt"
        assert found.gave_up == 0 and failed(found) == []


class TestShapes:
    """Names of one shape are parsed once; every name must still get its own numbers."""

    NAMES: ClassVar[list[str]] = [
        *(f"step-{i}.pt" for i in (0, 7, 9, 10, 99, 100, 12345)),  # unpadded: several shapes
        *(f"epoch={e}-step={s}-v{v}.ckpt" for e, s, v in ((1, 10, 1), (2, 5, 3), (12, 40, 2))),
        "run1_iter30.pth", "run2_iter20.pth",  # a varying number that is not the step
        "model_42.bin", "model_43.safetensors",
        "weights_3.h5", "weights_4.hdf5",
        "step-\u0663\u0661.pt",  # Arabic-Indic digits: not made equal, parsed on their own
    ]

    def test_each_candidate_gets_the_numbers_of_its_own_name(self, tmp_path: Path) -> None:
        for name in self.NAMES:
            (tmp_path / name).write_bytes(b"x")
        found = discover(tmp_path, max_candidates=None)
        got = {c.name: (c.epoch, c.step) for c in found.candidates}
        assert set(got) == set(self.NAMES)
        for name in self.NAMES:
            epoch, step = parse_step(name[:name.rindex(".")])
            assert got[name] == (epoch, step if step is not None else epoch), name

    def test_digit_in_the_extension(self, tmp_path: Path) -> None:
        """model.h5 and model.h7 share a shape; only .h5 is a checkpoint extension."""
        assert ".h5" in FILE_SUFFIXES
        for name in ("model-1.h5", "model-2.h7", "model-3.hdf5", "model-4.hdf9"):
            (tmp_path / name).write_bytes(b"x")
        found = discover(tmp_path, max_candidates=None)
        assert [c.name for c in found.candidates] == ["model-3.hdf5", "model-1.h5"]

    def test_files_and_directories_of_one_shape(self, tmp_path: Path) -> None:
        """A directory named like a file is probed as a directory, a file as a file."""
        (tmp_path / "step-1.pt").write_bytes(b"x")
        sharded = tmp_path / "step-2.pt"
        sharded.mkdir()
        (sharded / ".metadata").write_bytes(b"x")
        (tmp_path / "step-3").write_bytes(b"x")  # a file without an extension: unknown
        dcp = tmp_path / "step-4"
        dcp.mkdir()
        (dcp / ".metadata").write_bytes(b"x")
        found = discover(tmp_path, max_candidates=None)
        assert [(c.name, c.layout) for c in found.candidates] == [
            ("step-4", "dcp"), ("step-2.pt", "dcp"), ("step-1.pt", "file")]

    def test_pattern_with_tensorflow_prefix_and_directories(self, tmp_path: Path) -> None:
        for name in ("ckpt-7.index", "ckpt-7.data-00000-of-00001", "other-9.pt"):
            (tmp_path / name).write_bytes(b"x")
        (tmp_path / "zzz-8.index").mkdir()  # kept by the .index rule, but does not match
        (tmp_path / "zzz-8.index" / ".metadata").write_bytes(b"x")
        found = discover(tmp_path, pattern="ckpt-7", max_candidates=None)
        assert [c.name for c in found.candidates] == ["ckpt-7.index"]
        found = discover(tmp_path, pattern="zzz-*", max_candidates=None)
        assert [c.name for c in found.candidates] == ["zzz-8.index"]


class TestBestFirst:
    def test_order_past_the_first_batches_with_ties(self, tmp_path: Path) -> None:
        """400 numbered files, the best 100 rejected (empty): the walk goes past the batches
        picked out first (16, then 64), and the order is still by number, ties by mtime then
        name."""
        expected = []
        for step in range(400):
            name = f"step-{step}.pt"
            (tmp_path / name).write_bytes(b"" if step >= 300 else b"x")
            os.utime(tmp_path / name, (1e9 + step % 3, 1e9 + step % 3))
            expected.append((step, 1e9 + step % 3, name))
        # Equal numbers in other shapes: "step-0150.pt" is 150 too.
        for step, when in ((150, 5e8), (100, 2e9), (299, 1e9)):
            name = f"step-{step:04d}.pt"
            (tmp_path / name).write_bytes(b"x")
            os.utime(tmp_path / name, (when, when))
            expected.append((step, when, name))
        found = discover(tmp_path, max_candidates=None)
        assert found.ordered_by == "numbers"
        want = [name for step, _, name in sorted(expected, reverse=True) if step < 300]
        assert [c.name for c in found.candidates] == want
        assert len(found.skipped) == 100

    @pytest.mark.parametrize("max_candidates", [1, 10])
    def test_large_directory_examines_only_the_top(self, tmp_path: Path,
                                                   max_candidates: int) -> None:
        for step in range(3000):
            (tmp_path / f"step-{step:08d}.pt").write_bytes(b"x")
        (tmp_path / "notes.txt").write_bytes(b"x")
        found = discover(tmp_path, max_candidates=max_candidates)
        assert [c.step for c in found.candidates] == list(range(2999, 2999 - max_candidates, -1))
        assert found.unexamined == 3000 - max_candidates


def test_a_directory_made_by_another_member_between_two_looks_is_listed(tmp_path: Path) -> None:
    """Two members of a job start at once on a new directory: the listing fails (not there
    yet), and by the next look the other member has made it. That is a real directory, listed
    again, never "a symlink to a missing target" (exit 75)."""
    directory = tmp_path / "ck"
    calls = []

    def racing(path: str):  # type: ignore[no-untyped-def]
        calls.append(path)
        if len(calls) == 1:
            directory.mkdir()  # the other member, between our listing and our look
            (directory / "step-1.pt").write_bytes(b"\x80\x04N.")
            raise FileNotFoundError(path)
        return os.scandir(path)

    found = discover(directory, lister=racing)
    assert len(calls) == 2
    assert found.chosen is not None and found.chosen.name == "step-1.pt"


def test_a_symlink_to_a_missing_target_is_still_refused(tmp_path: Path) -> None:
    (tmp_path / "ck").symlink_to(tmp_path / "not-mounted")
    with pytest.raises(CheckpointDirUnavailable, match="symlink to a missing target"):
        discover(tmp_path / "ck")
