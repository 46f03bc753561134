"""Tests for runai_entry.checkpoints: real files and directories in tmp_path, no mocks."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runai_entry.checkpoints import (
    Discovery,
    discover,
    newest_checkpoint,
    parse_step,
    verify_file,
)
from runai_entry.core.errors import CheckpointDirUnavailable


def write(path: Path, data: bytes = b"weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def touch_all(directory: Path, *names: str) -> None:
    for name in names:
        write(directory / name)


def valid_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", os.urandom(4096))
    return path


def truncate(path: Path, keep: int) -> Path:
    with open(path, "r+b") as f:
        f.truncate(keep)
    return path


def reasons(found: Discovery) -> dict[str, str]:
    return {s.name: s.reason for s in found.skipped}


class TestParseStep:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("model_step=1200-epoch=3", (3, 1200)),
            ("epoch=3-step=1200", (3, 1200)),
            ("epoch-10", (10, None)),
            ("ckpt-7", (None, 7)),
            ("model.ckpt-1000", (None, 1000)),
            ("checkpoint-500", (None, 500)),
            ("000123", (None, 123)),
            ("step_00042", (None, 42)),
            ("iter100", (None, 100)),
            ("iteration_7_ckpt_3", (None, 7)),
            ("model_42", (None, 42)),
            ("resnet50_epoch3", (3, None)),
            ("timestep5", (None, 5)),
            ("last", (None, None)),
            ("last-v1", (None, None)),
            ("epoch=3-step=100-v1", (3, 100)),
            ("STEP-9", (None, 9)),
        ],
    )
    def test_table(self, name: str, expected: tuple[int | None, int | None]) -> None:
        """A keyword's number wins over other digits; else the last number; -vN is no step."""
        assert parse_step(name) == expected


class TestMissingAndUnreadable:
    def test_missing_directory_starts_fresh(self, tmp_path: Path) -> None:
        """An absent directory (or absent parent) is a first run, not an error."""
        for path in (tmp_path / "nope", tmp_path / "a" / "b"):
            found = discover(path)
            assert found == Discovery(str(path), False, None, (), ())

    def test_file_in_place_of_directory(self, tmp_path: Path) -> None:
        """A regular file where the directory should be raises; the job must not start fresh."""
        target = write(tmp_path / "ckpt")
        with pytest.raises(CheckpointDirUnavailable, match="is not a directory"):
            discover(target)
        with pytest.raises(CheckpointDirUnavailable, match="not a directory"):
            discover(target / "sub")

    def test_dangling_symlink_raises(self, tmp_path: Path) -> None:
        """A symlink to storage that is not there is an unavailable directory, not a fresh start."""
        link = tmp_path / "ckpt"
        link.symlink_to(tmp_path / "unmounted" / "volume")
        with pytest.raises(CheckpointDirUnavailable, match="symlink to a missing target"):
            discover(link)

    def test_permission_denied_as_unprivileged_user(self) -> None:
        """A directory the user cannot read raises with the path and EACCES in one line.

        root bypasses mode bits, so a child process drops to uid 65534 before looking. The
        child imports runai_entry from a copy in a 0700 directory, as from a fresh clone under a
        0700 home or a ``mktemp -d`` directory, which nobody cannot traverse.
        """
        if os.geteuid() != 0:
            pytest.skip("needs root to drop privileges in a child")
        import runai_entry

        with tempfile.TemporaryDirectory() as top, tempfile.TemporaryDirectory() as hidden:
            os.chmod(hidden, 0o700)
            shutil.copytree(Path(runai_entry.__file__).parent, Path(hidden) / "runai_entry")
            os.chmod(top, 0o755)
            locked = Path(top) / "ckpt dir"
            write(locked / "step_1.pt")
            os.chmod(locked, 0o000)
            (Path(top) / "empty").mkdir()
            code = (
                "import os, sys\n"
                "from runai_entry.checkpoints import discover\n"
                "from runai_entry.core.errors import CheckpointDirUnavailable\n"
                # Everything discover() imports lazily is imported now, by a discovery of an
                # empty directory, while still root: the checkout and the interpreter may sit
                # where nobody cannot traverse (a 0700 home or mktemp -d directory).
                "discover(os.path.join(os.path.dirname(sys.argv[1]), 'empty'))\n"
                "os.setgid(65534); os.setuid(65534)\n"
                "try:\n"
                "    discover(sys.argv[1])\n"
                "except CheckpointDirUnavailable as exc:\n"
                "    print(exc); sys.exit(3)\n"
            )
            done = subprocess.run(
                # -S: no site-packages, so no editable install can point back at the checkout.
                [sys.executable, "-S", "-c", code, str(locked)],
                capture_output=True,
                text=True,
                timeout=30,
                env=dict(os.environ, PYTHONPATH=hidden),
            )
            os.chmod(locked, 0o755)
        assert done.returncode == 3, done.stderr
        message = done.stdout.strip()
        assert "\n" not in message
        assert "ckpt dir" in message and "EACCES" in message


class TestHungListing:
    @pytest.fixture
    def fifo(self, tmp_path: Path) -> Iterator[Path]:
        path = tmp_path / "mount-answer"
        os.mkfifo(path)
        yield path
        # Opening the write end releases the reader blocked in the kernel, so no thread leaks.
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    def test_timeout_raises(self, tmp_path: Path, fifo: Path) -> None:
        """A listing stuck in the kernel (here, open() of a FIFO nobody writes) times out.

        A hung NFS server blocks scandir the same way; the FIFO gives a real blocking system
        call without a FUSE or NFS mount in the test machine.
        """

        def hung_scandir(path: str) -> list[os.DirEntry[str]]:
            with open(fifo, "rb"):
                pass
            with os.scandir(path) as it:
                return list(it)

        write(tmp_path / "ckpt" / "step_1.pt")
        with pytest.raises(CheckpointDirUnavailable, match=r"did not answer within 0\.2 s"):
            discover(tmp_path / "ckpt", timeout=0.2, lister=hung_scandir)

    def test_errors_from_the_thread_reach_the_caller(self, tmp_path: Path) -> None:
        """An exception inside the listing thread is raised in the caller, not swallowed."""

        def broken(path: str) -> list[os.DirEntry[str]]:
            raise OSError(5, "Input/output error")

        with pytest.raises(CheckpointDirUnavailable, match="EIO"):
            discover(tmp_path, lister=broken)

    def test_no_timeout_runs_in_caller_thread(self, tmp_path: Path) -> None:
        """timeout=None does the work in the calling thread."""
        seen: list[str] = []

        def recording(path: str) -> list[os.DirEntry[str]]:
            seen.append(threading.current_thread().name)
            with os.scandir(path) as it:
                return list(it)

        discover(tmp_path, timeout=None, lister=recording)
        discover(tmp_path, lister=recording)
        assert seen == [threading.current_thread().name, "runai-entry-discover"]


class TestFiles:
    def test_highest_number_wins_over_mtime(self, tmp_path: Path) -> None:
        """epoch-10 beats epoch-9 even when epoch-9 is newer: node clocks disagree on NFS."""
        touch_all(tmp_path, "epoch-9.pt", "epoch-10.pt", "epoch-2.pt")
        os.utime(tmp_path / "epoch-9.pt", (2e9, 2e9))
        os.utime(tmp_path / "epoch-10.pt", (1e9, 1e9))
        found = discover(tmp_path)
        assert found.chosen is not None
        assert found.chosen.name == "epoch-10.pt"
        assert found.chosen.step == 10 and found.chosen.epoch == 10
        assert found.chosen.mtime is None  # numbers decided: nothing stat'ed for time
        assert found.ordered_by == "numbers"
        assert [c.name for c in found.candidates] == ["epoch-10.pt", "epoch-9.pt", "epoch-2.pt"]

    def test_epoch_then_step(self, tmp_path: Path) -> None:
        """Names with both compare as (epoch, step), right even when the step restarts per epoch."""
        touch_all(tmp_path, "epoch=3-step=900.ckpt", "epoch=4-step=20.ckpt")
        assert newest_checkpoint(tmp_path) == str(tmp_path / "epoch=4-step=20.ckpt")

    def test_unnumbered_complete_file_switches_to_mtime(self, tmp_path: Path) -> None:
        """Lightning's last.ckpt has no number: every candidate is then ordered by mtime."""
        touch_all(tmp_path, "epoch=9-step=100.ckpt", "last.ckpt")
        os.utime(tmp_path / "epoch=9-step=100.ckpt", (1e9, 1e9))
        os.utime(tmp_path / "last.ckpt", (2e9, 2e9))
        found = discover(tmp_path)
        assert found.ordered_by == "mtime"
        assert [c.name for c in found.candidates] == ["last.ckpt", "epoch=9-step=100.ckpt"]
        assert found.candidates[0].mtime == 2e9

    def test_mtime_tie_broken_by_name(self, tmp_path: Path) -> None:
        """Equal mtimes: the greatest name first, so the result never depends on listing order."""
        touch_all(tmp_path, "a.pt", "b.pt")
        for name in ("a.pt", "b.pt"):
            os.utime(tmp_path / name, (1e9, 1e9))
        assert newest_checkpoint(tmp_path) == str(tmp_path / "b.pt")

    def test_equal_numbers_fall_back_to_mtime(self, tmp_path: Path) -> None:
        """Two files with the same step: the newer one first."""
        touch_all(tmp_path, "step_5.pt", "step_5.safetensors", "step_4.pt")
        os.utime(tmp_path / "step_5.pt", (1e9, 1e9))
        os.utime(tmp_path / "step_5.safetensors", (2e9, 2e9))
        found = discover(tmp_path)
        assert [c.name for c in found.candidates] == [
            "step_5.safetensors",
            "step_5.pt",
            "step_4.pt",
        ]

    def test_mixed_schemes_fall_back_to_mtime(self, tmp_path: Path) -> None:
        """Epoch-only and step-only names cannot be compared: mtime decides."""
        touch_all(tmp_path, "epoch-3.pt", "step-100.pt")
        os.utime(tmp_path / "epoch-3.pt", (2e9, 2e9))
        os.utime(tmp_path / "step-100.pt", (1e9, 1e9))
        found = discover(tmp_path)
        assert found.ordered_by == "mtime"
        assert found.chosen is not None and found.chosen.name == "epoch-3.pt"

    def test_empty_file_skipped(self, tmp_path: Path) -> None:
        """An empty file (created, never written) is skipped; the previous one is chosen."""
        write(tmp_path / "step_2.pt", b"")
        write(tmp_path / "step_1.pt")
        found = discover(tmp_path)
        assert found.chosen is not None and found.chosen.name == "step_1.pt"
        assert reasons(found) == {"step_2.pt": "empty file"}

    def test_partial_and_hidden_names_never_chosen(self, tmp_path: Path) -> None:
        """.tmp/.partial/.incomplete/~ are reported in progress; hidden names are silent."""
        touch_all(
            tmp_path,
            "step_9.pt.tmp",
            "step_8.ckpt.partial",
            "step_7.safetensors.incomplete",
            "step_6.pt~",
            ".step_5.pt.a1b2c3.tmp",
            ".step_99.pt",
            "step_1.pt",
            "notes.txt~",
        )
        (tmp_path / ".runai-entry").mkdir()
        found = discover(tmp_path)
        assert found.chosen is not None and found.chosen.name == "step_1.pt"
        assert reasons(found) == {
            "step_9.pt.tmp": "in progress: name ends with .tmp",
            "step_8.ckpt.partial": "in progress: name ends with .partial",
            "step_7.safetensors.incomplete": "in progress: name ends with .incomplete",
            "step_6.pt~": "in progress: name ends with ~",
        }

    def test_unknown_files_are_ignored_silently(self, tmp_path: Path) -> None:
        """Logs, configs and TensorFlow's own 'checkpoint' file are neither candidates nor noise."""
        touch_all(tmp_path, "train.log", "config.yaml", "checkpoint", "events.out.tfevents.1")
        (tmp_path / "wandb").mkdir()
        found = discover(tmp_path)
        assert found.exists and found.chosen is None
        assert found.candidates == () and found.skipped == ()

    def test_pattern_restricts_names(self, tmp_path: Path) -> None:
        """pattern is an fnmatch glob on the entry name."""
        touch_all(tmp_path, "model_step_9.pt", "optim_step_10.pt")
        assert newest_checkpoint(tmp_path, pattern="model_*") == str(tmp_path / "model_step_9.pt")
        assert newest_checkpoint(tmp_path, pattern="nothing*") is None

    def test_every_checkpoint_suffix(self, tmp_path: Path) -> None:
        """Each known extension counts, including compound ones like .weights.h5 and .pth.tar."""
        names = [
            "a_1.pt",
            "a_2.pth",
            "a_3.ckpt",
            "a_4.bin",
            "a_5.safetensors",
            "a_6.h5",
            "a_7.hdf5",
            "a_8.keras",
            "a_9.pkl",
            "a_10.pickle",
            "a_11.npz",
            "a_12.msgpack",
            "a_13.weights.h5",
            "a_14.pth.tar",
            "A_15.PT",
        ]
        touch_all(tmp_path, *names)
        found = discover(tmp_path, max_candidates=None)
        assert [c.name for c in found.candidates] == list(reversed(names))

    def test_odd_characters_in_paths(self, tmp_path: Path) -> None:
        """Spaces, quotes, newlines and unicode survive as one path string."""
        directory = tmp_path / "my ckpts 'quoted' \"double\"\nline-two ✓"
        name = "step 7 — ünïcödé 'q'\n.pt"
        write(directory / name)
        write(directory / "step 6.pt")
        found = discover(directory)
        assert found.chosen is not None
        assert found.chosen.path == os.path.join(str(directory), name)
        assert Path(found.chosen.path).read_bytes() == b"weights"

    def test_symlink_to_checkpoint_and_dangling_symlink(self, tmp_path: Path) -> None:
        """A symlink is followed; a dangling one is reported, not fatal."""
        write(tmp_path / "store" / "real.pt")
        directory = tmp_path / "ckpt"
        directory.mkdir()
        (directory / "step_2.pt").symlink_to(tmp_path / "store" / "gone.pt")
        (directory / "step_1.pt").symlink_to(tmp_path / "store" / "real.pt")
        found = discover(directory)
        assert found.chosen is not None and found.chosen.name == "step_1.pt"
        assert reasons(found) == {"step_2.pt": "vanished while being examined"}

    def test_fifo_is_not_a_checkpoint(self, tmp_path: Path) -> None:
        """A FIFO with a checkpoint name is rejected without being opened (it would block)."""
        os.mkfifo(tmp_path / "step_2.pt")
        valid_zip(tmp_path / "step_1.pt")
        found = discover(tmp_path, verify=True, timeout=5)
        assert found.chosen is not None and found.chosen.name == "step_1.pt"
        assert reasons(found) == {"step_2.pt": "not a regular file"}

    def test_max_candidates_bounds_probing(self, tmp_path: Path) -> None:
        """Probing stops after max_candidates complete ones; the rest are counted, not touched."""
        touch_all(tmp_path, *(f"step_{i}.pt" for i in range(50)))
        found = discover(tmp_path, max_candidates=3)
        assert [c.step for c in found.candidates] == [49, 48, 47]
        assert found.unexamined == 47
        assert len(discover(tmp_path, max_candidates=None).candidates) == 50


class TestLayouts:
    def test_dcp_complete_and_in_progress(self, tmp_path: Path) -> None:
        """A DCP directory is complete with .metadata; *.distcp alone is a save in progress."""
        touch_all(tmp_path / "step_200", "__0_0.distcp", "__1_0.distcp")
        touch_all(tmp_path / "step_100", "__0_0.distcp", ".metadata")
        found = discover(tmp_path)
        assert found.chosen is not None
        assert (found.chosen.name, found.chosen.layout) == ("step_100", "dcp")
        assert reasons(found) == {"step_200": "in progress: *.distcp without .metadata"}

    def test_huggingface_complete_and_in_progress(self, tmp_path: Path) -> None:
        """checkpoint-N is complete once trainer_state.json (saved last) exists."""
        touch_all(tmp_path / "checkpoint-1000", "model.safetensors", "optimizer.pt")
        touch_all(tmp_path / "checkpoint-500", "model.safetensors", "trainer_state.json")
        touch_all(tmp_path, "runs/events.out")
        found = discover(tmp_path)
        assert found.chosen is not None
        assert (found.chosen.name, found.chosen.layout, found.chosen.step) == (
            "checkpoint-500",
            "huggingface",
            500,
        )
        assert reasons(found) == {
            "checkpoint-1000": "in progress: checkpoint-1000 without trainer_state.json"
        }

    def test_huggingface_jit_checkpoint_cut_short(self, tmp_path: Path) -> None:
        """The Trainer's JIT checkpoint (on SIGTERM) marks its directory with
        checkpoint-is-incomplete.txt until the save is whole: in progress, even with
        trainer_state.json already there."""
        touch_all(tmp_path / "checkpoint-500", "model.safetensors", "trainer_state.json")
        touch_all(tmp_path / "checkpoint-600", "model.safetensors", "trainer_state.json",
                  "checkpoint-is-incomplete.txt")
        found = discover(tmp_path)
        assert found.chosen is not None and found.chosen.name == "checkpoint-500"
        assert reasons(found) == {
            "checkpoint-600": "in progress: checkpoint-is-incomplete.txt (a JIT checkpoint cut "
                              "short)"
        }

    def test_orbax_rename_and_commit_file(self, tmp_path: Path) -> None:
        """Orbax: temporary names are in progress; a null commit timestamp is in progress;
        commit_success.txt or a committed timestamp is complete."""
        write(tmp_path / "000400.orbax-checkpoint-tmp-1712" / "_CHECKPOINT_METADATA", b"{}")
        uncommitted = json.dumps({"init_timestamp_nsecs": 1, "commit_timestamp_nsecs": None})
        write(tmp_path / "000300" / "_CHECKPOINT_METADATA", uncommitted.encode())
        write(tmp_path / "000200" / "_CHECKPOINT_METADATA", uncommitted.encode())
        write(tmp_path / "000200" / "commit_success.txt")
        committed = json.dumps({"init_timestamp_nsecs": 1, "commit_timestamp_nsecs": 2})
        write(tmp_path / "000100" / "_CHECKPOINT_METADATA", committed.encode())
        write(tmp_path / "000050" / "_CHECKPOINT_METADATA", b"{}")  # older Orbax: trust name
        found = discover(tmp_path, max_candidates=None)
        assert [(c.name, c.layout, c.step) for c in found.candidates] == [
            ("000200", "orbax", 200),
            ("000100", "orbax", 100),
            ("000050", "orbax", 50),
        ]
        assert reasons(found) == {
            "000400.orbax-checkpoint-tmp-1712": "in progress: Orbax temporary directory",
            "000300": "in progress: not committed (_CHECKPOINT_METADATA has no commit timestamp)",
        }

    def test_orbax_metadata_being_written(self, tmp_path: Path) -> None:
        """A torn _CHECKPOINT_METADATA is in progress, not a crash."""
        write(tmp_path / "7" / "_CHECKPOINT_METADATA", b'{"init_timest')
        found = discover(tmp_path)
        assert found.chosen is None
        assert reasons(found) == {"7": "in progress: _CHECKPOINT_METADATA is not valid JSON"}

    def test_tensorflow_prefix(self, tmp_path: Path) -> None:
        """ckpt-N.index with all its shards is a candidate whose path is the prefix ckpt-N."""
        touch_all(
            tmp_path,
            "checkpoint",
            "ckpt-7.index",
            "ckpt-7.data-00000-of-00002",
            "ckpt-7.data-00001-of-00002",
            "ckpt-8.index",
            "ckpt-8.data-00000-of-00002",
            "ckpt-9.data-00000-of-00001",
        )
        found = discover(tmp_path)
        assert found.chosen is not None
        assert found.chosen.path == str(tmp_path / "ckpt-7")
        assert (found.chosen.name, found.chosen.layout, found.chosen.step) == (
            "ckpt-7.index",
            "tensorflow",
            7,
        )
        assert reasons(found) == {"ckpt-8.index": "incomplete: 1 of 2 data shards missing"}
        assert newest_checkpoint(tmp_path, pattern="ckpt-7") == str(tmp_path / "ckpt-7")

    def test_keras_backup_directory(self, tmp_path: Path) -> None:
        """A BackupAndRestore dir is complete with training_metadata.json beside the weights."""
        touch_all(tmp_path / "backup", "latest.weights.h5", "training_metadata.json")
        found = discover(tmp_path)
        assert found.chosen is not None
        assert (found.chosen.name, found.chosen.layout) == ("backup", "keras-backup")
        assert found.ordered_by == "mtime"

        (tmp_path / "backup" / "training_metadata.json").unlink()
        found = discover(tmp_path)
        assert found.chosen is None
        assert reasons(found) == {
            "backup": "in progress: latest.weights.h5 without training_metadata.json"
        }

    def test_lightning_sharded_checkpoint_directory(self, tmp_path: Path) -> None:
        """A directory named like a file (epoch=3-step=40.ckpt/) is probed as a directory."""
        touch_all(tmp_path / "epoch=3-step=40.ckpt", "__0_0.distcp", ".metadata", "meta.pt")
        touch_all(tmp_path / "epoch=4-step=50.ckpt", "__0_0.distcp")
        found = discover(tmp_path)
        assert found.chosen is not None
        assert (found.chosen.name, found.chosen.layout, found.chosen.step) == (
            "epoch=3-step=40.ckpt",
            "dcp",
            40,
        )

    def test_many_step_directories_probe_only_the_top(self, tmp_path: Path) -> None:
        """With 300 step directories, only max_candidates of them are opened."""
        for i in range(300):
            touch_all(tmp_path / f"checkpoint-{i}", "trainer_state.json")
        found = discover(tmp_path, max_candidates=2)
        assert [c.name for c in found.candidates] == ["checkpoint-299", "checkpoint-298"]
        assert found.unexamined == 298


class TestVerify:
    def test_truncated_zip_falls_back(self, tmp_path: Path) -> None:
        """A torch-style zip cut short loses its central directory; the previous one is used."""
        valid_zip(tmp_path / "step_1.pt")
        truncate(valid_zip(tmp_path / "step_2.pt"), 1000)
        assert newest_checkpoint(tmp_path) == str(tmp_path / "step_2.pt")
        found = discover(tmp_path, verify=True)
        assert found.chosen is not None and found.chosen.name == "step_1.pt"
        assert reasons(found)["step_2.pt"].startswith(
            "failed verification: zip central directory missing"
        )

    def test_verification_stops_at_first_pass(self, tmp_path: Path) -> None:
        """Older candidates are listed but not read once one passes."""
        valid_zip(tmp_path / "step_2.pt")
        write(tmp_path / "step_1.pt", b"garbage, never read")
        found = discover(tmp_path, verify=True)
        assert [c.name for c in found.candidates] == ["step_2.pt", "step_1.pt"]
        assert found.skipped == ()

    @pytest.mark.parametrize(
        ("name", "data", "problem"),
        [
            ("a.pt", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.", None),  # legacy torch pickle
            ("a.pt", b"not a checkpoint", "neither a zip archive nor a pickle"),
            ("a.pkl", b"\x80\x04\x95\x05\x00K\x01.", None),
            ("a.pkl", b"\x80\x04\x95\x05\x00K\x01", "pickle stream is truncated"),
            ("a.pkl", b"hello.", "does not start with a pickle protocol header"),
            ("a.h5", b"\x00" * 64, "no HDF5 signature"),
            ("a.msgpack", b"\x81\xa1a\x01", None),
            ("a.npz", b"PK\x03\x04 cut", "zip central directory missing"),
        ],
    )
    def test_format_table(
        self, tmp_path: Path, name: str, data: bytes, problem: str | None
    ) -> None:
        """Each format's cheap check accepts a good header and names what is wrong."""
        result = verify_file(str(write(tmp_path / name, data)))
        if problem is None:
            assert result is None
        else:
            assert result is not None and result.startswith(problem)

    def test_safetensors(self, tmp_path: Path) -> None:
        """safetensors: header length + JSON header, and the file must hold every tensor's bytes."""
        header = json.dumps(
            {
                "__metadata__": {"format": "pt"},
                "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]},
            }
        ).encode()
        body = struct.pack("<Q", len(header)) + header + bytes(24)
        good = write(tmp_path / "good.safetensors", body)
        assert verify_file(str(good)) is None
        cut = write(tmp_path / "cut.safetensors", body[:-1])
        assert (verify_file(str(cut)) or "").startswith("truncated:")
        torn = write(tmp_path / "torn.safetensors", body[:20])
        assert verify_file(str(torn)) == "safetensors header runs past the end of the file"
        bad = write(tmp_path / "bad.safetensors", struct.pack("<Q", 3) + b"{x}")
        assert verify_file(str(bad)) == "safetensors header is not valid JSON"

    def test_real_hdf5_written_by_h5py(self, tmp_path: Path) -> None:
        """A real HDF5 file passes; cut short, its superblock's end-of-file address exposes it."""
        h5py = pytest.importorskip("h5py")
        path = tmp_path / "model.weights.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("w", data=list(range(10_000)))
        assert verify_file(str(path)) is None
        size = path.stat().st_size
        truncate(path, size - 100)
        assert (verify_file(str(path)) or "").startswith("truncated:")

    def test_real_torch_save(self, tmp_path: Path) -> None:
        """A real torch.save file passes; truncated, discovery falls back to the older one."""
        torch = pytest.importorskip("torch")
        torch.save({"w": torch.zeros(1000)}, tmp_path / "step_1.pt")
        torch.save({"w": torch.ones(1000)}, tmp_path / "step_2.pt")
        truncate(tmp_path / "step_2.pt", (tmp_path / "step_2.pt").stat().st_size // 2)
        assert verify_file(str(tmp_path / "step_1.pt")) is None
        assert newest_checkpoint(tmp_path, verify=True) == str(tmp_path / "step_1.pt")

    def test_directory_layouts_are_verified_by_markers(self, tmp_path: Path) -> None:
        """verify=True reads no files inside directories: the marker rule is the check."""
        touch_all(tmp_path / "checkpoint-2", "trainer_state.json", "model.safetensors")
        found = discover(tmp_path, verify=True)
        assert found.chosen is not None and found.chosen.layout == "huggingface"


def test_readme_lists_every_checkpoint_extension() -> None:
    """The README's list is the whole of names.FILE_SUFFIXES, with no "…" left to guess."""
    import re

    from runai_entry.checkpoints.names import FILE_SUFFIXES

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    item = readme[readme.index("- files with a checkpoint extension"):]
    item = item[:item.index("not empty;")]
    listed = re.search(r"`([^`]+)`", item.replace("\n  ", " "))
    assert listed is not None and "…" not in item
    assert listed.group(1).split() == list(FILE_SUFFIXES)
