"""DCP shards in the raw layout (runai_entry.training._io.dcpio): what the file holds, the staging
buffer, torch's own reader refusing it by name, a filesystem without O_DIRECT, and checkpoints
of both layouts loaded in another world size (2 ranks -> 1 -> 2, torchrun, gloo)."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from runai_entry.training._io.dcpio import RAW, AlignedStaging, RawReader, RawWriter
from tests.e2e.jobs import TORCHRUN, job_env
from tests.harness.diskfs import run_on_ramfs
from tests.training_scripts.procs import script, spawn


def _state() -> dict[str, Any]:
    g = torch.Generator().manual_seed(3)
    return {"a": torch.randn(1000, 3, generator=g), "odd": torch.arange(7, dtype=torch.int16),
            "half": torch.randn(5, generator=g).to(torch.bfloat16),
            "scalar": torch.tensor(2.5), "empty": torch.empty(0), "n": 5, "l": [1, "x"]}


def _zeros(state: dict[str, Any]) -> dict[str, Any]:
    return {k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else type(v)()
            for k, v in state.items()}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def _save(path: Path, state: dict[str, Any], staging: AlignedStaging | None) -> None:
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():  # "assuming the intent is to save in a single process"
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(state, storage_writer=RawWriter(path, staging), no_dist=True)


def _load(path: Path, into: dict[str, Any], **kw: Any) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(into, no_dist=True, **kw)
    return into


class TestRawLayout:
    @pytest.mark.parametrize("staged", [True, False], ids=["staged", "live"])
    def test_each_tensor_is_raw_at_a_block_boundary(self, tmp_path: Path, staged: bool) -> None:
        """Every tensor entry is the tensor's bytes, raw, at a 4096-aligned offset, marked RAW
        in torch's own .metadata; staged (the O_DIRECT path) or from live tensors (buffered)."""
        state = _state()
        staging = AlignedStaging() if staged else None
        _save(tmp_path / "c", staging.stage(state) if staging else state, staging)
        with open(tmp_path / "c" / ".metadata", "rb") as f:
            metadata = pickle.load(f)
        data = (tmp_path / "c" / "__0_0.distcp").read_bytes()
        tensors = {index.fqn: info for index, info in metadata.storage_data.items()
                   if index.fqn in ("a", "odd", "half", "scalar", "empty")}
        assert len(tensors) == 5
        for fqn, info in tensors.items():
            t = state[fqn]
            assert info.offset % 4096 == 0 and info.transform_descriptors == [RAW], (fqn, info)
            raw = data[info.offset:info.offset + info.length]
            assert raw == t.reshape(-1).view(torch.uint8).numpy().tobytes(), fqn
        assert _same(_load(tmp_path / "c", _zeros(state),
                           storage_reader=RawReader(tmp_path / "c")), state)

    def test_torchs_own_layout_still_loads(self, tmp_path: Path) -> None:
        """A checkpoint in torch's layout (torch.save per tensor: every one written before the
        raw layout) loads through RawReader."""
        import torch.distributed.checkpoint as dcp

        state = _state()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dcp.save(state, checkpoint_id=tmp_path / "c", no_dist=True)
        assert _same(_load(tmp_path / "c", _zeros(state),
                           storage_reader=RawReader(tmp_path / "c")), state)

    def test_torchs_plain_reader_refuses_raw_entries_by_name(self, tmp_path: Path) -> None:
        """Not garbage tensors: torch's reader stops at the unknown transform descriptor."""
        from torch.distributed.checkpoint.api import CheckpointException

        state = _state()
        _save(tmp_path / "c", state, None)
        with pytest.raises(CheckpointException, match="Unknown extension name='runai-entry-raw'"):
            _load(tmp_path / "c", _zeros(state), checkpoint_id=tmp_path / "c")

    def test_a_truncated_shard_file_is_refused(self, tmp_path: Path) -> None:
        from torch.distributed.checkpoint.api import CheckpointException

        state = _state()
        _save(tmp_path / "c", state, None)
        os.truncate(tmp_path / "c" / "__0_0.distcp", 4096)
        with pytest.raises(CheckpointException, match="truncated"):
            _load(tmp_path / "c", _zeros(state), storage_reader=RawReader(tmp_path / "c"))


class TestAlignedStaging:
    def test_the_buffer_is_kept_while_the_shapes_hold(self) -> None:
        """A second save of the same shapes copies into the same buffer (no allocation in the
        stall); a new shape lays it out anew. Non-tensor values are the current ones."""
        staging = AlignedStaging()
        state = _state()
        first = staging.stage(state)
        buffer = staging.buffer
        assert buffer is not None and buffer.data_ptr() % 4096 == 0
        state["a"].add_(1)
        state["n"] = 6
        second = staging.stage(state)
        assert staging.buffer is buffer and second["a"].data_ptr() == first["a"].data_ptr()
        assert torch.equal(second["a"], state["a"]) and second["n"] == 6
        for t in second.values():
            if isinstance(t, torch.Tensor) and t.numel():
                assert t.data_ptr() % 4096 == 0 and staging.holds(t, -(-t.nbytes // 4096) * 4096)
        state["a"] = torch.zeros(2000, 3)
        third = staging.stage(state)
        assert staging.buffer is not buffer and third["a"].shape == (2000, 3)
        assert not staging.holds(state["a"], 4096 * 6)  # a live tensor: written buffered


def test_a_filesystem_that_refuses_o_direct(tmp_path: Path) -> None:
    """ramfs refuses O_DIRECT at open (EINVAL): the staged runs are written buffered."""
    run_on_ramfs(tmp_path, """
        import os
        from runai_entry.training._io import diskio
        from runai_entry.training._io.dcpio import AlignedStaging, RawReader
        from tests.training.test_dcpio import _load, _same, _save, _state, _zeros
        path = ramfs / "c"
        state = _state()
        staging = AlignedStaging()
        _save(path, staging.stage(state), staging)
        fd, direct = diskio.open_direct(str(path / "__0_0.distcp"), os.O_RDONLY)
        os.close(fd)
        assert not direct, "ramfs accepted O_DIRECT: the fallback is not exercised"
        assert _same(_load(path, _zeros(state), storage_reader=RawReader(path)), state)
        print("loaded")
    """)


def _torchrun(ranks: int, *args: str) -> list[str]:
    return [*TORCHRUN, "--standalone", "--nproc-per-node", str(ranks), "--max-restarts", "0",
            script("dcp_layouts.py"), *args]


def _run(argv: list[str]) -> str:
    with spawn(argv, env=job_env()) as run:
        rc = run.wait(120)
        out = run.output()
    assert rc == 0, out[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_both_layouts_load_in_another_world_size(tmp_path: Path) -> None:
    """DTensor states (7 rows: uneven over 2 ranks) saved by 2 ranks, raw from an aligned
    staging copy and in torch's layout, load into 1 rank; saved by 1, into 2; each into shards
    cut on the other dimension (through a temporary chunk) and, in the same world size, into
    the same shards (read straight into the destination): every value equal. A ShardedTensor
    (FSDP1 without a device mesh: copied, not laid out in the staging buffer) round-trips too."""
    d = str(tmp_path)
    _run(_torchrun(2, "save", d))
    out = _run(_torchrun(1, "load", d, "raw-2", "torch-2"))
    assert sorted(re.findall(r"^rank 0 (\S+) S\(1\) equal=(\w+)$", out, re.M)) == \
        [("raw-2", "True"), ("torch-2", "True")], out[-3000:]
    _run(_torchrun(1, "save", d))
    out = _run(_torchrun(2, "load", d, "raw-1", "torch-1", "raw-2"))
    found = re.findall(r"^rank (\d) (\S+) (S\(\d\)) equal=(\w+)$", out, re.M)
    expected = [(r, name, p, "True") for r in "01" for name, p in
                [("raw-1", "S(1)"), ("torch-1", "S(1)"), ("raw-2", "S(1)"), ("raw-2", "S(0)")]]
    assert sorted(found) == sorted(expected), out[-3000:]
    out = _run(_torchrun(2, "sharded", d))
    assert sorted(re.findall(r"^rank (\d) ShardedTensor equal=(\w+)$", out, re.M)) == \
        [("0", "True"), ("1", "True")], out[-3000:]


def test_save_sharded_keeps_torchs_layout_unless_raw(tmp_path: Path) -> None:
    """What users load with plain ``dcp.load`` (save_sharded_training_state's output) stays in
    torch's layout; the Checkpointer's raw layout needs RawReader, and load_sharded reads both."""
    from runai_entry.training.dcp import load_sharded, save_sharded

    state = _state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        save_sharded(tmp_path / "torch", state)
        save_sharded(tmp_path / "raw", state, raw=True)
        assert _same(_load(tmp_path / "torch", _zeros(state),
                           checkpoint_id=str(tmp_path / "torch")), state)
        with pytest.raises(BaseException) as refused:  # DCP's CheckpointException
            _load(tmp_path / "raw", _zeros(state), checkpoint_id=str(tmp_path / "raw"))
        assert "runai-entry-raw" in repr(getattr(refused.value, "failures", refused.value))
        for layout in ("torch", "raw"):
            into = _zeros(state)
            load_sharded(tmp_path / layout, into)
            assert _same(into, state), layout
