"""A shared checkpoint directory is hostile ground: one planted or broken entry is skipped with a
reason, and no file makes verification read without bound. Real files, links, FIFOs and devices
in tmp_path; no mocks."""

from __future__ import annotations

import json
import os
import stat
import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from runai_entry.checkpoints import Discovery, discover, verify, verify_file
from runai_entry.checkpoints.verify import SAFETENSORS_MAX_HEADER, ZIP_MAX_READ


def good_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return path


def reasons(found: Discovery) -> dict[str, str]:
    return {s.name: s.reason for s in found.skipped}


def safetensors(header: object, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


class TestBoundedVerification:
    def test_safetensors_offsets_that_are_not_numbers_fail_verification(
            self, tmp_path: Path) -> None:
        for offsets in ([0, "x"], [0, True], [8, 4], [-1, 4], [0, 1.5]):
            path = tmp_path / "step-1.safetensors"
            path.write_bytes(safetensors({"w": {"dtype": "F32", "shape": [1],
                                                "data_offsets": offsets}}, bytes(8)))
            assert verify_file(str(path)) == "safetensors tensor 'w' has invalid data_offsets"

    def test_safetensors_header_over_the_format_limit_is_refused_unread(
            self, tmp_path: Path) -> None:
        """A header length that covers the whole (sparse, 300 MB) file is not read."""
        path = tmp_path / "step-1.safetensors"
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", 300_000_000 - 8) + b"{")
            f.truncate(300_000_000)
        problem, nbytes = verify(str(path))
        assert problem == (f"safetensors header length {300_000_000 - 8} is over the format's "
                           f"limit of {SAFETENSORS_MAX_HEADER} bytes")
        assert nbytes == 8

    def test_safetensors_header_nested_deeper_than_the_parser_goes(self, tmp_path: Path) -> None:
        path = tmp_path / "step-1.safetensors"
        raw = b"[" * 100_000
        path.write_bytes(struct.pack("<Q", len(raw)) + raw)
        assert verify_file(str(path)) == "safetensors header is not valid JSON"

    @pytest.mark.parametrize("size", range(8, 14))
    def test_hdf5_torn_inside_its_superblock(self, tmp_path: Path, size: int) -> None:
        whole = b"\x89HDF\r\n\x1a\n" + bytes([0, 0, 0, 0, 0, 8, 8, 0]) + bytes(80)
        path = tmp_path / "model.weights.h5"
        path.write_bytes(whole[:size])
        assert verify_file(str(path)) == "truncated inside the HDF5 superblock"

    def test_zip_with_a_huge_central_directory_is_not_read(self, tmp_path: Path) -> None:
        """End records that claim millions of entries in a 300 MB (sparse) central directory:
        the verdict comes from the end records alone, in bounded memory."""
        path = tmp_path / "step-1.pt"
        cd_size, count = 300_000_000, 5_000_000
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04" + bytes(26))  # a local header, then the directory
            cd_offset = f.tell()
            f.write(b"PK\x01\x02")
            f.seek(cd_offset + cd_size)
            record = cd_offset + cd_size
            f.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count,
                                cd_size, cd_offset))
            f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, record, 1))
            f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                                0xFFFFFFFF, 0))
        tracemalloc.start()
        try:
            problem = verify_file(str(path))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert problem is None  # its end records are whole: what loading it finds is not ours
        assert peak < 4 * ZIP_MAX_READ
        assert verify(str(path)).nbytes <= ZIP_MAX_READ

    def test_real_zip64_archive_passes_and_cut_short_fails(self, tmp_path: Path) -> None:
        path = tmp_path / "many.npz"
        with zipfile.ZipFile(path, "w") as archive:
            for i in range(70_000):  # past 65,535 entries: zip64 end records
                archive.writestr(f"{i}", b"")
        assert verify(str(path)) == (None, verify(str(path)).nbytes)
        assert verify(str(path)).nbytes <= ZIP_MAX_READ
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 30)
        assert (verify_file(str(path)) or "").startswith("zip central directory missing")

    def test_fifo_swapped_in_after_listing_is_not_opened(self, tmp_path: Path) -> None:
        """verify() of a FIFO answers at once (O_NONBLOCK), it does not wait for a writer."""
        os.mkfifo(tmp_path / "step-1.pt")
        assert verify_file(str(tmp_path / "step-1.pt")) == "not a regular file"


class TestOneBadEntry:
    """Each planted entry is skipped with a reason; the good checkpoint beside it is chosen."""

    def chosen(self, tmp_path: Path) -> Discovery:
        good_zip(tmp_path / "step-1.pt")
        found = discover(tmp_path, verify=True, timeout=20)
        assert found.chosen is not None and found.chosen.name == "step-1.pt", found
        return found

    def test_symlink_loop_named_like_a_checkpoint(self, tmp_path: Path) -> None:
        (tmp_path / "step-9.pt").symlink_to("step-9.pt")
        assert "ELOOP" in reasons(self.chosen(tmp_path))["step-9.pt"]

    def test_two_directory_symlinks_pointing_at_each_other(self, tmp_path: Path) -> None:
        (tmp_path / "step-8").symlink_to("step-7")
        (tmp_path / "step-7").symlink_to("step-8")
        found = self.chosen(tmp_path)
        assert "ELOOP" in reasons(found)["step-8"] and "ELOOP" in reasons(found)["step-7"]

    def test_device_named_like_a_checkpoint(self, tmp_path: Path) -> None:
        if os.geteuid() != 0:
            pytest.skip("mknod of a character device needs root")
        os.mknod(tmp_path / "step-9.pt", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
        assert reasons(self.chosen(tmp_path))["step-9.pt"] == "not a regular file"

    def test_entry_whose_path_is_longer_than_path_max(self, tmp_path: Path) -> None:
        """The directory's path fits in PATH_MAX; one entry's path does not (ENAMETOOLONG)."""
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        path = str(tmp_path)
        try:
            while len(path) < 4000:  # mkdir through descriptors: no path too long
                name = "d" * min(250, 4000 - len(path))
                os.mkdir(name, dir_fd=fd)
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd, path = inner, os.path.join(path, name)
            long_name = "step-9-" + "x" * 240 + ".pt"
            with open(os.open(long_name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
                f.write(b"\x80\x02K\x01.")
        finally:
            os.close(fd)
        assert len(os.path.join(path, long_name)) > 4096
        found = self.chosen(Path(path))
        assert "ENAMETOOLONG" in reasons(found)[long_name]

    def test_orbax_metadata_that_is_a_fifo(self, tmp_path: Path) -> None:
        """Orbax's metadata file is read to see whether a step was committed: a FIFO under its
        name must not block discovery."""
        (tmp_path / "9").mkdir()
        os.mkfifo(tmp_path / "9" / "_CHECKPOINT_METADATA")
        good_zip(tmp_path / "1.pt")
        found = discover(tmp_path, verify=True, timeout=20)
        assert found.chosen is not None and found.chosen.name == "1.pt"
        assert reasons(found)["9"] == "_CHECKPOINT_METADATA is not a regular file"

    def test_tensorflow_index_claiming_billions_of_shards(self, tmp_path: Path) -> None:
        """The shard count is read from a name: it is counted, never walked."""
        (tmp_path / "ckpt-9.index").write_bytes(b"x")
        (tmp_path / "ckpt-9.data-00000-of-9999999999").write_bytes(b"x")
        found = self.chosen(tmp_path)
        assert reasons(found)["ckpt-9.index"] == "incomplete: 9999999998 of 9999999999 data " \
            "shards missing"
