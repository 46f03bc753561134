"""The checkpoint directory, fuzzed: random names, types, sizes and truncations of real formats,
from a fixed set of seeds, through discovery and retention (never a traceback, never a torn file
chosen, never a good checkpoint lost to retention), and the real runai-entry on a hostile
directory (never exit 1 with a traceback)."""

from __future__ import annotations

import json
import os
import random
import stat
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runai_entry.checkpoints import discover
from runai_entry.core.errors import EXIT_CHECKPOINT_DIR_UNAVAILABLE
from runai_entry.training.atomic import prune
from tests.harness.spawning import ENTRY

SEEDS = range(60)
PICKLE = b"\x80\x02" + b"K\x07" * 20 + b"."  # a complete stream: ends in STOP, no "." before


def _zip(rng: random.Random) -> bytes:
    path = f"/dev/shm/runai-fuzz-{os.getpid()}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(rng.randint(1, 4)):
            archive.writestr(f"archive/data/{i}", bytes(rng.randint(0, 300)))
    try:
        return Path(path).read_bytes()
    finally:
        os.unlink(path)


def _safetensors(rng: random.Random) -> bytes:
    sizes = [4 * rng.randint(1, 16) for _ in range(rng.randint(1, 3))]
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    at = 0
    for i, size in enumerate(sizes):
        header[f"t{i}"] = {"dtype": "F32", "shape": [size // 4], "data_offsets": [at, at + size]}
        at += size
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(at)


def _hdf5(rng: random.Random) -> bytes:
    # Superblock version 0, 8-byte offsets and lengths; base address 0, end-of-file address 96.
    block = b"\x89HDF\r\n\x1a\n" + bytes([0, 0, 0, 0, 0, 8, 8, 0]) + bytes(8)
    block += struct.pack("<4Q", 0, (1 << 64) - 1, 96, (1 << 64) - 1)
    return block + bytes(96 - len(block))


#: Each format: the suffixes that carry it, and a writer of a complete file. Any truncation of
#: these fails verification (no STOP before the end, the zip's end record cut, the superblock's
#: end address past the end, the safetensors data short).
FORMATS = {
    "zip": ((".pt", ".ckpt", ".npz", ".keras"), _zip),
    # Not .pt: a legacy torch pickle is checked at its start only, so a torn one passes.
    "pickle": ((".pkl", ".pickle"), lambda rng: PICKLE),
    "safetensors": ((".safetensors",), _safetensors),
    "hdf5": ((".h5", ".weights.h5", ".hdf5"), _hdf5),
}


@dataclass
class Planted:
    """What was put in the directory, by entry name."""

    good: set[str] = field(default_factory=set)  # complete checkpoints under candidate names
    torn: set[str] = field(default_factory=set)  # files that fail verification


def _name(rng: random.Random, suffix: str) -> str:
    number = rng.choice([rng.randint(0, 9), rng.randint(0, 10**6), rng.randint(0, 10**30)])
    shape = rng.choice(["step-{n}", "step_{n:08d}", "epoch={n}-step={m}", "ckpt-{n}",
                        "checkpoint-{n}", "model_{n}", "last", "{n}", "e\x1b[31m{n}\nstep-{n}"])
    return shape.format(n=number, m=rng.randint(0, 99)) + suffix


def _plant(directory: Path, rng: random.Random) -> Planted:
    planted = Planted()
    for _ in range(rng.randint(3, 25)):
        kind = rng.choice(["good", "torn", "empty", "fifo", "device", "loop", "loop-pair",
                           "dangling", "link-good", "dir-empty", "dir-dcp", "dir-distcp",
                           "dir-hf", "dir-orbax", "hidden", "partial", "long", "junk"])
        fmt = rng.choice(list(FORMATS))
        suffixes, writer = FORMATS[fmt]
        name = _name(rng, rng.choice(suffixes))
        path = directory / name
        if os.path.lexists(path):
            continue
        if kind in ("good", "torn", "empty", "junk", "hidden", "partial", "long"):
            data = writer(rng)
            if kind == "torn":
                data = data[:rng.randint(0, len(data) - 1)]
            elif kind == "empty":
                data = b""
            elif kind == "junk":
                # Nothing that could start a format or end a pickle: junk fails every check.
                data = bytes(b for b in rng.randbytes(rng.randint(2, 300))
                             if b not in b".P\x80\x89") or b"junk"
            elif kind == "hidden":
                path = directory / ("." + name)
            elif kind == "partial":
                path = directory / (name + rng.choice([".tmp", ".partial", "~"]))
            elif kind == "long":
                # NAME_MAX: 255 bytes, the most one entry's name may hold.
                path = directory / (name[:10] + "x" * (245 - len(suffixes[0])) + suffixes[0])
            if os.path.lexists(path):
                continue
            path.write_bytes(data)
            if kind in ("good", "long"):
                planted.good.add(path.name)
            elif kind in ("torn", "empty", "junk"):
                planted.torn.add(path.name)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "device":
            if os.geteuid() == 0:
                os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))
        elif kind == "loop":
            path.symlink_to(name)
        elif kind == "loop-pair":
            other = _name(rng, "")
            if not os.path.lexists(directory / other):
                path.symlink_to(other)
                (directory / other).symlink_to(name)
        elif kind == "dangling":
            path.symlink_to(directory / "nowhere" / name)
        elif kind == "link-good":
            target = directory / ".store" / name
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(writer(rng))
            path.symlink_to(target)
            planted.good.add(name)
        else:  # a directory named like a step
            path = directory / _name(rng, "")
            if os.path.lexists(path):
                continue
            path.mkdir()
            if kind == "dir-dcp":
                (path / ".metadata").write_bytes(b"m")
                planted.good.add(path.name)
            elif kind == "dir-distcp":
                (path / "__0_0.distcp").write_bytes(b"shard")
            elif kind == "dir-hf" and path.name.startswith("checkpoint-"):
                (path / "trainer_state.json").write_text("{}")
                planted.good.add(path.name)
            elif kind == "dir-orbax":
                metadata = path / "_CHECKPOINT_METADATA"
                choice = rng.randint(0, 3)
                if choice == 0:
                    os.mkfifo(metadata)
                elif choice == 1:
                    metadata.write_bytes(b"[" * 5000)
                else:
                    metadata.write_text(json.dumps({"commit_timestamp_nsecs": None}))
    return planted


@pytest.mark.parametrize("seed", SEEDS)
def test_discovery_and_retention_survive_a_random_directory(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    planted = _plant(tmp_path, rng)
    found = discover(tmp_path, verify=True, timeout=20)
    assert found.chosen is None or found.chosen.name not in planted.torn
    if planted.good:
        assert found.chosen is not None and found.chosen.name in planted.good, found
    keep = rng.randint(1, 3)
    before = set(os.listdir(tmp_path))
    result = prune(tmp_path, keep=keep)
    after = set(os.listdir(tmp_path))
    assert set(result.deleted) == before - after
    assert not planted.torn & set(result.deleted)  # torn files are never ours to delete
    assert set(result.deleted) <= planted.good
    assert set(result.kept) <= after  # the newest that verify: still there
    if found.chosen is not None:
        assert result.kept[0] == found.chosen.name
    # The choice itself may change: deleting a file of another naming scheme can turn a
    # directory ordered by mtime into one ordered by numbers. It is still a good one.
    again = discover(tmp_path, verify=True, timeout=20)
    assert (again.chosen is None) == (found.chosen is None)
    assert again.chosen is None or again.chosen.name not in planted.torn


class TestHostileDirectoryEndToEnd:
    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ENTRY, "--log-format", "json", *args], capture_output=True,
                              text=True, timeout=120)

    def test_planted_entries_are_skipped_and_the_job_runs(self, tmp_path: Path) -> None:
        """One of each entry that once made runai-entry exit 1 with a traceback before the job
        started, beside a good checkpoint; and a torn HDF5 the job itself writes."""
        (tmp_path / "step-1.pt").write_bytes(PICKLE)
        (tmp_path / "step-9.pt").symlink_to("step-9.pt")
        (tmp_path / "step-8").symlink_to("step-7")
        (tmp_path / "step-7").symlink_to("step-8")
        (tmp_path / "step-6.h5").write_bytes(b"\x89HDF\r\n\x1a\n\x00\x00")
        header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, "x"]}})
        (tmp_path / "step-5.safetensors").write_bytes(struct.pack("<Q", len(header))
                                                      + header.encode() + bytes(4))
        os.mkfifo(tmp_path / "step-4.pt")
        torn_by_the_job = f"open('{tmp_path}/step-10.h5', 'wb').write(b'\\x89HDF\\r\\n\\x1a\\n\\0')"
        r = self._run("--checkpoint-dir", str(tmp_path), sys.executable, "-c", torn_by_the_job)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
        (resuming,) = [e for e in events if e["event"] == "resuming"]
        assert resuming["checkpoint"] == str(tmp_path / "step-1.pt")
        skipped = {e["name"] for e in events if e["event"] == "checkpoint_skipped"}
        assert {"step-9.pt", "step-8", "step-7", "step-6.h5", "step-5.safetensors",
                "step-4.pt"} <= skipped
        record = json.loads((tmp_path / ".runai-entry" / "history.jsonl").read_text())
        assert record["exit_code"] == 0 and record["newest_at_end"] == str(tmp_path / "step-1.pt")

    def test_a_search_that_runs_out_stops_with_exit_75_not_a_fresh_start(
            self, tmp_path: Path) -> None:
        """More damaged files than the search budget examines, above a good checkpoint: one
        line and exit 75, and the job is not started over the good one."""
        for n in range(1, 10_002):
            (tmp_path / f"step-{n}.pt").write_bytes(b"x")
        (tmp_path / "step-0.pt").write_bytes(PICKLE)
        r = self._run("--checkpoint-dir", str(tmp_path), "touch", str(tmp_path / "started"))
        assert r.returncode == EXIT_CHECKPOINT_DIR_UNAVAILABLE, r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "started").exists()
        assert "not starting fresh" in r.stderr and str(tmp_path) in r.stderr
