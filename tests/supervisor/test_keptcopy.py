"""One checkpoint file rewritten in place (nanoGPT's ``ckpt.pt``): runai-entry keeps the last
verified copy and resumes from it when a kill tore the original; where it has none, a start
from scratch over the torn file is said loudly, or refused (--refuse-fresh-start, exit 75)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from runai_entry.config.loading import Config
from runai_entry.core.errors import EXIT_CHECKPOINT_DIR_UNAVAILABLE, FreshStartRefused
from runai_entry.history.report import verdict
from runai_entry.history.store import read_history
from runai_entry.supervisor import keptcopy
from runai_entry.supervisor.before_and_after import find_checkpoints
from tests.training_scripts.in_place import checkpoint

SCRIPT = str(Path(__file__).parents[1] / "training_scripts" / "in_place.py")
KEPT = Path(".runai-entry") / "kept" / "ckpt.pt"


def attempt(entry, ck: Path, mode: str, *options: str):
    e = entry(["--checkpoint-dir", str(ck), "--max-attempts-without-progress", "0", *options,
               "--", sys.executable, SCRIPT, mode])
    return e.wait(), e


def test_a_kill_during_the_save_in_place_resumes_from_the_kept_copy(entry, tmp_path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    code, first = attempt(entry, ck, "save")
    assert (code, first.lines) == (0, ["fresh flag None"]), first.stderr
    assert not (ck / KEPT).exists()  # nothing to keep before the first checkpoint

    # The next start keeps a copy of the checkpoint it resumes from; the job tears the file.
    code, second = attempt(entry, ck, "tear")
    assert code == 128 + 9, second.stderr
    kept = second.event("checkpoint_kept")
    assert (kept["checkpoint"], kept["copy"]) == (str(ck / "ckpt.pt"), str(ck / KEPT))
    assert kept["how"] in ("reflink", "copy_file_range")
    assert (ck / KEPT).read_bytes() == checkpoint(1, 0.0)
    assert (ck / "ckpt.pt").stat().st_size < len(checkpoint(1, 0.0))  # torn

    code, third = attempt(entry, ck, "save")
    assert code == 0, third.stderr
    # The job got the kept copy, by the flag and the variable, and loaded step 1 from it.
    assert third.lines == [f"resumed 1 from {ck / KEPT} flag {ck / KEPT}"]
    warning = third.event("resuming_from_kept_copy")
    assert warning["level"] == "warning"
    assert (warning["checkpoint"], warning["copy"]) == (str(ck / "ckpt.pt"), str(ck / KEPT))
    assert "zip central directory missing" in warning["problem"]
    assert not third.events("starting_fresh_over_torn_checkpoint")
    record = read_history(ck)[-1]
    assert (record.resumed_from, record.kept_copy_of) == (str(ck / KEPT), "ckpt.pt")
    assert any("kept copy of ckpt.pt" in line for line in verdict(read_history(ck)))

    # The job saved step 2 in place: the next start resumes from it, and keeps it instead.
    code, fourth = attempt(entry, ck, "save")
    assert fourth.lines == [f"resumed 2 from {ck / 'ckpt.pt'} flag {ck / 'ckpt.pt'}"]
    assert (ck / KEPT).read_bytes() == checkpoint(2, 0.0)


def test_the_copy_is_made_only_when_the_original_changed(entry, tmp_path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "ckpt.pt").write_bytes(checkpoint(5, 0.0))

    def keeps() -> bool:
        e = entry(["--checkpoint-dir", str(ck), "--", "true"])
        assert e.wait() == 0, e.stderr
        return bool(e.events("checkpoint_kept"))

    assert keeps()
    inode = (ck / KEPT).stat().st_ino
    assert not keeps()  # the same size and mtime: the copy is of it already
    assert (ck / KEPT).stat().st_ino == inode
    os.utime(ck / "ckpt.pt", ns=(0, (ck / "ckpt.pt").stat().st_mtime_ns + 1))  # rewritten
    assert keeps()
    assert (ck / KEPT).stat().st_ino != inode


def test_a_fresh_start_over_a_torn_file_without_a_copy_is_said(entry, tmp_path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "ckpt.pt").write_bytes(checkpoint(7, 0.0)[:1000])  # cut by a kill: no copy kept
    code, e = attempt(entry, ck, "save")
    assert (code, e.lines) == (0, ["fresh flag None"]), e.stderr
    warning = e.event("starting_fresh_over_torn_checkpoint")
    assert warning["level"] == "warning"
    assert [t["name"] for t in warning["torn"]] == ["ckpt.pt"]
    assert "--refuse-fresh-start" in warning["instead"]
    records = read_history(ck)
    assert [t.name for t in records[-1].fresh_over_torn or ()] == ["ckpt.pt"]
    found = [line for line in verdict(records) if "started from scratch over ckpt.pt" in line]
    assert len(found) == 1 and "zip central directory missing" in found[0], verdict(records)


def test_refuse_fresh_start_exits_75_with_one_line(entry, tmp_path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "ckpt.pt").write_bytes(b"")  # killed as the save began
    code, e = attempt(entry, ck, "save", "--refuse-fresh-start")
    assert code == EXIT_CHECKPOINT_DIR_UNAVAILABLE
    assert e.lines == []  # the job never ran
    errors = [line for line in e.stderr if line.startswith("runai-entry: error:")]
    assert len(errors) == 1 and "ckpt.pt" in errors[0] and "--refuse-fresh-start" in errors[0]
    assert not (ck / ".runai-entry" / "attempt.0").exists()  # no attempt counted
    # Without the option, the same start goes ahead, with the warning.
    code, e = attempt(entry, ck, "save")
    assert code == 0 and e.events("starting_fresh_over_torn_checkpoint")


# What the start does, in-process on real files: copies refused and copies that are bad.

def start(ck: Path, **kw) -> keptcopy.Start:
    found = find_checkpoints(str(ck), Config(command=("x",)))
    return keptcopy.at_start(str(ck), found, verified=True, refuse_fresh=False, **kw)


def test_no_slow_copy_above_the_bound(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the filesystem cannot reflink (ext4, tmpfs), a file over the bound is not copied."""
    ck = tmp_path
    (ck / "ckpt.pt").write_bytes(checkpoint(1, 0.0))
    monkeypatch.setattr(keptcopy, "COPY_LIMIT", 1000)
    events = start(ck).events
    if events[0][1] == "checkpoint_kept":
        assert events[0][2]["how"] == "reflink"  # a filesystem that clones: any size is cheap
        pytest.skip("this filesystem reflinks")
    assert events[0][1] == "checkpoint_not_kept" and "over the copy bound" in events[0][2]["reason"]
    assert not (ck / KEPT).exists()


def test_a_kept_copy_that_fails_verification_is_not_used(tmp_path) -> None:
    ck = tmp_path
    (ck / "ckpt.pt").write_bytes(checkpoint(1, 0.0))
    start(ck)
    (ck / KEPT).write_bytes(checkpoint(1, 0.0)[:100])  # damaged where it is kept
    (ck / "ckpt.pt").write_bytes(checkpoint(2, 0.0)[:100])
    began = start(ck)
    assert began.discovery.chosen is None
    assert [e[1] for e in began.events] == ["kept_copy_unusable",
                                            "starting_fresh_over_torn_checkpoint"]
    assert [s.name for s in began.fresh_over] == ["ckpt.pt"]


def test_a_link_planted_as_the_kept_copy_is_not_followed(tmp_path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    good = tmp_path / "elsewhere.pt"
    good.write_bytes(checkpoint(9, 0.0))
    (ck / KEPT).parent.mkdir(parents=True)
    (ck / KEPT).symlink_to(good)
    (ck / "ckpt.pt").write_bytes(b"")
    began = start(ck)
    assert began.discovery.chosen is None
    assert "symbolic link" in began.events[0][2]["problem"]


def test_refused_in_process(tmp_path) -> None:
    (tmp_path / "ckpt.pt").write_bytes(checkpoint(3, 0.0)[:-10])
    found = find_checkpoints(str(tmp_path), Config(command=("x",)))
    with pytest.raises(FreshStartRefused, match=r"ckpt\.pt cannot be resumed from \(failed"):
        keptcopy.at_start(str(tmp_path), found, verified=True, refuse_fresh=True)


def test_a_link_planted_as_the_kept_directory_is_not_followed(tmp_path) -> None:
    """``.runai-entry/kept -> /somewhere``: runai-entry runs as root, and must not write there."""
    ck = tmp_path / "ck"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (ck / ".runai-entry").mkdir(parents=True)
    (ck / ".runai-entry" / "kept").symlink_to(elsewhere)
    (ck / "ckpt.pt").write_bytes(checkpoint(1, 0.0))
    [(level, event, fields)] = start(ck).events
    assert (level, event) == ("warning", "checkpoint_not_kept")
    assert "symbolic link" in fields["problem"]
    assert list(elsewhere.iterdir()) == []


def test_a_temporary_copy_is_left_beside_the_kept_one_until_it_is_stale(tmp_path) -> None:
    """A copy in progress (another member's start) has the one temporary-name shape and is left
    alone; once older than a copy can take (a helper killed mid-copy) it goes. A copy of another
    name goes at once."""
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "last.ckpt").write_bytes(b"kept")
    copying = kept / keptcopy.temp_name_for("last.ckpt")
    copying.write_bytes(b"copying")
    (kept / "other.ckpt").write_bytes(b"a copy of another name")
    fd = os.open(kept, os.O_RDONLY | os.O_DIRECTORY)
    try:
        soon = time.time() + keptcopy._STALE_TEMP_SECONDS / 2
        keptcopy._remove_others(fd, "last.ckpt", now=soon)
        assert sorted(p.name for p in kept.iterdir()) == sorted(["last.ckpt", copying.name])
        later = time.time() + 2 * keptcopy._STALE_TEMP_SECONDS
        keptcopy._remove_others(fd, "last.ckpt", now=later)
        assert sorted(p.name for p in kept.iterdir()) == ["last.ckpt"]
    finally:
        os.close(fd)
