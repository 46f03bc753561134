"""Atomic writes, retention and stale-temp clean-up, on real files."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import time
from pathlib import Path

import pytest

from runai_entry.checkpoints import newest_checkpoint
from runai_entry.training.atomic import (
    PruneResult,
    atomic_open,
    atomic_write,
    atomic_write_bytes,
    clean_stale_temps,
    is_temp_name,
    prune,
    temp_path_for,
)

#: A complete legacy torch.save stream: what verification accepts as a ``.pt``.
GOOD = b"\x80\x02K\x01."
#: What a torch.save cut by a kill leaves: a zip's first bytes, no central directory.
TORN = b"PK\x03\x04" + bytes(200)


def _touch(path: Path, data: bytes = GOOD, age: float = 0.0) -> Path:
    path.write_bytes(data)
    if age:
        t = time.time() - age
        os.utime(path, (t, t))
    return path


class TestAtomicWrite:
    def test_writer_gets_hidden_temp_path_with_final_suffix(self, tmp_path: Path) -> None:
        """Keras insists on the extension; discovery must never see the temp file."""
        seen: list[str] = []

        def writer(p: str) -> None:
            seen.append(p)
            Path(p).write_bytes(b"data")

        atomic_write(tmp_path / "epoch-00001.weights.h5", writer)
        name = os.path.basename(seen[0])
        assert name.startswith(".") and name.endswith(".epoch-00001.weights.h5")
        assert is_temp_name(name)
        assert os.path.dirname(seen[0]) == str(tmp_path)
        assert sorted(os.listdir(tmp_path)) == ["epoch-00001.weights.h5"]

    def test_failing_writer_keeps_previous_content_and_leaves_no_temp(self, tmp_path: Path) -> None:
        final = tmp_path / "ckpt-1.pt"
        final.write_bytes(b"old")

        def writer(p: str) -> None:
            Path(p).write_bytes(b"half")
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            atomic_write(final, writer)
        assert final.read_bytes() == b"old"
        assert os.listdir(tmp_path) == ["ckpt-1.pt"]

    def test_writer_that_writes_nothing_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(RuntimeError, match="did not write"):
            atomic_write(tmp_path / "a.pt", lambda p: None)
        assert os.listdir(tmp_path) == []

    def test_atomic_open_and_bytes(self, tmp_path: Path) -> None:
        with atomic_open(tmp_path / "a.txt", "w") as f:
            f.write("hello")
            assert not (tmp_path / "a.txt").exists()
        assert (tmp_path / "a.txt").read_text() == "hello"
        atomic_write_bytes(tmp_path / "a.txt", b"bye")
        assert (tmp_path / "a.txt").read_bytes() == b"bye"
        with pytest.raises(ValueError), atomic_open(tmp_path / "b", "r"):
            pass

    def test_exception_inside_atomic_open_leaves_nothing(self, tmp_path: Path) -> None:
        with pytest.raises(KeyboardInterrupt), atomic_open(tmp_path / "a.bin") as f:
            f.write(b"partial")
            raise KeyboardInterrupt
        assert os.listdir(tmp_path) == []

    def test_temp_names_are_unique(self, tmp_path: Path) -> None:
        names = {temp_path_for(tmp_path / "x.pt") for _ in range(1000)}
        assert len(names) == 1000


class TestPrune:
    def test_keeps_the_newest_by_step_regardless_of_mtime(self, tmp_path: Path) -> None:
        for step, age in ((1, 0), (2, 50), (10, 100), (9, 10)):
            _touch(tmp_path / f"ckpt-{step}.pt", age=age)
        result = prune(tmp_path, keep=2)
        assert result.kept == ["ckpt-10.pt", "ckpt-9.pt"]
        assert sorted(result.deleted) == ["ckpt-1.pt", "ckpt-2.pt"]
        assert sorted(os.listdir(tmp_path)) == ["ckpt-10.pt", "ckpt-9.pt"]

    def test_never_deletes_what_discovery_would_resume_from(self, tmp_path: Path) -> None:
        """Torn (empty) and temporary newer entries do not count: the newest complete stays."""
        _touch(tmp_path / "ckpt-1.pt")
        _touch(tmp_path / "ckpt-2.pt")
        _touch(tmp_path / "ckpt-3.pt", data=b"")  # torn: a writer without atomic_write
        _touch(tmp_path / ".runai-tmp.1.deadbeef.ckpt-4.pt")
        _touch(tmp_path / "ckpt-5.pt.tmp")
        chosen = newest_checkpoint(tmp_path, verify=True)
        result = prune(tmp_path, keep=1)
        assert chosen == str(tmp_path / "ckpt-2.pt")
        assert result.kept == ["ckpt-2.pt"] and result.deleted == ["ckpt-1.pt"]
        assert (tmp_path / "ckpt-2.pt").exists()
        assert (tmp_path / "ckpt-3.pt").exists()  # not a checkpoint: not ours to judge
        with pytest.raises(ValueError):
            prune(tmp_path, keep=0)

    def test_torn_newer_files_never_count_towards_keep(self, tmp_path: Path) -> None:
        """Three torn files numbered above the good ones (an in-place torch.save cut by a kill,
        a copy cut short): the good ones are what is kept, the torn ones are left and named."""
        for step in (1, 2, 3):
            _touch(tmp_path / f"step-{step}.pt")
        for step in (7, 8, 9):
            _touch(tmp_path / f"step-{step}.pt", TORN)
        result = prune(tmp_path, keep=2)
        assert result.kept == ["step-3.pt", "step-2.pt"]
        assert result.deleted == ["step-1.pt"]
        assert sorted(os.listdir(tmp_path)) == [f"step-{s}.pt" for s in (2, 3, 7, 8, 9)]
        assert [name for name, _ in result.failed] == ["step-9.pt", "step-8.pt", "step-7.pt"]
        remark = result.remark(tmp_path)
        assert remark is not None and "\n" not in remark
        assert "3 entries fail verification" in remark and "'step-9.pt'" in remark
        assert prune(tmp_path, keep=2).remark(tmp_path) == remark  # nothing else changed
        assert PruneResult().remark(tmp_path) is None

    def test_never_deletes_the_checkpoint_it_resumed_from(self, tmp_path: Path) -> None:
        """protect: whatever its spelling (a relative path, a symlink), never deleted."""
        for step in range(1, 6):
            _touch(tmp_path / f"step-{step}.pt")
        (tmp_path / "resumed").symlink_to(tmp_path / "step-2.pt")
        result = prune(tmp_path, keep=2, pattern="step-*", protect=tmp_path / "resumed")
        assert result.kept == ["step-5.pt", "step-4.pt"] and result.protected == ["step-2.pt"]
        assert sorted(os.listdir(tmp_path)) == ["resumed", "step-2.pt", "step-4.pt",
                                                "step-5.pt"]
        prune(tmp_path, keep=1, protect=tmp_path / "absent.pt")  # gone: protects nothing
        assert sorted(os.listdir(tmp_path)) == ["resumed", "step-5.pt"]

    def test_symlinks_are_not_followed_nor_deleted(self, tmp_path: Path) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        target = _touch(outside / "ckpt-1.pt")
        ckpts = tmp_path / "ckpts"
        ckpts.mkdir()
        (ckpts / "ckpt-1.pt").symlink_to(target)
        (ckpts / "ckpt-0.pt").symlink_to(target)
        for step in (2, 3):
            _touch(ckpts / f"ckpt-{step}.pt")
        result = prune(ckpts, keep=1)
        assert target.exists() and target.read_bytes() == GOOD
        assert (ckpts / "ckpt-1.pt").is_symlink() and (ckpts / "ckpt-0.pt").is_symlink()
        assert "ckpt-2.pt" in result.deleted
        assert not any(n.startswith("ckpt-0") or n.startswith("ckpt-1") for n in result.deleted)

    def test_stays_inside_the_directory(self, tmp_path: Path) -> None:
        """Subdirectories are not entered and the pattern cannot name a path."""
        ckpts = tmp_path / "ckpts"
        (ckpts / "sub").mkdir(parents=True)
        inner = _touch(ckpts / "sub" / "ckpt-1.pt")
        _touch(tmp_path / "ckpt-0.pt")
        for step in (5, 6):
            _touch(ckpts / f"ckpt-{step}.pt")
        prune(ckpts, keep=1)
        assert inner.exists() and (tmp_path / "ckpt-0.pt").exists()
        for bad in ("../*", "sub/*", ".*"):
            with pytest.raises(ValueError):
                prune(ckpts, keep=1, pattern=bad)

    def test_pattern_limits_what_is_considered(self, tmp_path: Path) -> None:
        for step in (1, 2, 3):
            _touch(tmp_path / f"ckpt-{step}.pt")
            _touch(tmp_path / f"other-{step}.pt")
        prune(tmp_path, keep=1, pattern="ckpt-*.pt")
        assert sorted(os.listdir(tmp_path)) == [
            "ckpt-3.pt",
            "other-1.pt",
            "other-2.pt",
            "other-3.pt",
        ]

    def test_missing_directory_is_nothing_to_prune(self, tmp_path: Path) -> None:
        assert prune(tmp_path / "absent", keep=1).kept == []

    def test_concurrent_pruners_never_fail_and_keep_the_newest(self, tmp_path: Path) -> None:
        """Several real processes prune the same directory at once (a shared filesystem)."""
        ctx = multiprocessing.get_context("fork")
        collisions = 0
        for _ in range(5):
            for step in range(300):
                _touch(tmp_path / f"ckpt-{step:04d}.pt")
            start = ctx.Event()
            results: multiprocessing.queues.Queue[tuple[list[str], list[str]]] = ctx.Queue()
            procs = [
                ctx.Process(target=_prune_after, args=(str(tmp_path), start, results))
                for _ in range(3)
            ]
            for proc in procs:
                proc.start()
            try:
                start.set()
                outcomes = [results.get(timeout=60) for _ in procs]
            finally:
                for proc in procs:
                    proc.join(timeout=10)
                    proc.kill()
            assert [proc.exitcode for proc in procs] == [0, 0, 0]
            assert os.listdir(tmp_path) == ["ckpt-0299.pt"]
            deleted = [n for d, _ in outcomes for n in d]
            vanished = [n for _, v in outcomes for n in v]
            # Each old file was deleted exactly once; the others saw it vanish or never saw it.
            assert sorted(deleted) == [f"ckpt-{s:04d}.pt" for s in range(299)]
            assert not set(vanished) - set(deleted)
            collisions += len(vanished)
        print(f"files seen vanishing under a concurrent pruner: {collisions}")


def _prune_after(
    directory: str,
    start: multiprocessing.synchronize.Event,
    results: multiprocessing.queues.Queue[tuple[list[str], list[str]]],
) -> None:
    start.wait()
    result = prune(directory, keep=1)
    results.put((result.deleted, result.vanished))


class TestCleanStaleTemps:
    def test_removes_only_own_old_temp_files(self, tmp_path: Path) -> None:
        old_own = _touch(tmp_path / ".runai-tmp.123.0123abcd.ckpt-1.pt", age=7200)
        new_own = _touch(tmp_path / ".runai-tmp.123.0123abcd.ckpt-2.pt")
        old_other = _touch(tmp_path / ".ckpt-3.pt.tmp", age=7200)
        old_ckpt = _touch(tmp_path / "ckpt-0.pt", age=7200)
        (tmp_path / ".runai-tmp.1.00000000.dir").mkdir()
        os.utime(tmp_path / ".runai-tmp.1.00000000.dir", (0, 0))
        removed = clean_stale_temps(tmp_path)
        assert removed == [old_own.name]
        assert new_own.exists() and old_other.exists() and old_ckpt.exists()
        assert clean_stale_temps(tmp_path, older_than=0) == [new_own.name]
