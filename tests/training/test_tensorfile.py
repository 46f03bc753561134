"""Reading checkpoints back: bit-exact round trips, reads into the live tensors' own memory, a
model that does not fit, damaged files, filesystems without O_DIRECT or RWF_NOWAIT, and sizes
that line up with nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from runai_entry.training._io import diskio, tensorfile
from runai_entry.training.checkpointer import Checkpointer
from runai_entry.training.errors import CheckpointFormatError, CheckpointMismatch
from runai_entry.training.stop import StopFlag
from tests.harness.diskfs import drop_cache, run_on_ramfs


def _bits(t: torch.Tensor) -> bytes:
    return bytes(t.detach().contiguous().reshape(-1).view(torch.uint8).tolist())


def _same(a: Any, b: Any) -> bool:
    """Equal structure, types, dtypes, shapes and bytes (NaN payloads and -0.0 included)."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and _bits(a) == _bits(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _state() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([float("nan"), -0.0, float("inf"), 1e-45])
    return {
        "model": {"w": torch.randn(67, 33, generator=g), "odd": torch.randint(-9, 9, (4097,),
                  dtype=torch.int8, generator=g), "h": torch.randn(5, 3, generator=g).half(),
                  "bf": torch.randn(7, generator=g).bfloat16(), "t": torch.randn(4, 6).t(),
                  "empty": torch.empty(0, 3), "scalar": torch.tensor(3.5), "special": special,
                  "mask": torch.tensor([True, False, True]), "i64": torch.arange(3) - 2},
        "step": 7,
        "optimizer": {"state": {0: {"m": torch.ones(2)}}, "param_groups": [{"lr": 0.1}]},
    }


def _write(path: Path, state: dict[str, Any]) -> str:
    tensorfile.write(str(path), tensorfile.plan(state))
    return str(path)


def _like(state: Any) -> Any:
    """The same structure with other values in fresh tensors: a live state to restore into."""
    if isinstance(state, torch.Tensor):
        return torch.full_like(state.contiguous(), 1) if state.numel() else state.clone()
    if isinstance(state, dict):
        return {k: _like(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_like(v) for v in state]
    return state


class TestRoundTrip:
    @pytest.mark.parametrize("cache", ["cold", "warm"])
    def test_bit_exact_without_into(self, tmp_path: Path, cache: str) -> None:
        """Cold: the O_DIRECT path; warm: RWF_NOWAIT reads from the page cache."""
        state = _state()
        path = _write(tmp_path / "a.safetensors", state)
        if cache == "cold":
            drop_cache(path)
        else:
            Path(path).read_bytes()
        assert _same(tensorfile.load(path), state)

    def test_bit_exact_into_the_given_tensors(self, tmp_path: Path) -> None:
        state = _state()
        path = _write(tmp_path / "a.safetensors", state)
        drop_cache(path)
        live = _like({"model": state["model"], "optimizer": state["optimizer"]})
        loaded = tensorfile.load(path, into=live)
        assert _same(loaded, state)
        for name, tensor in live["model"].items():
            if tensor.is_contiguous():
                assert loaded["model"][name] is tensor, name
        assert loaded["optimizer"]["state"][0]["m"] is live["optimizer"]["state"][0]["m"]

    def test_a_saved_tensor_with_no_target_is_a_fresh_tensor(self, tmp_path: Path) -> None:
        """Adam's moments before the first step: not in the live state yet."""
        state = _state()
        path = _write(tmp_path / "a.safetensors", state)
        loaded = tensorfile.load(path, into={"model": _like(state["model"])})
        assert _same(loaded["optimizer"], state["optimizer"])


class TestIntoTheModel:
    def _trained(self) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        model = torch.nn.Sequential(torch.nn.Linear(33, 65), torch.nn.Linear(65, 7))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        model(torch.randn(4, 33)).sum().backward()
        optimizer.step()
        return model, optimizer

    def test_restore_writes_into_the_models_own_memory(self, tmp_path: Path) -> None:
        """The Checkpointer's restore: every parameter and moment keeps its address, holds the
        saved values, and load_state_dict copied nothing over them."""
        torch.manual_seed(0)
        model, optimizer = self._trained()
        flag = StopFlag(signals=[], timeout=None)
        saver = Checkpointer(tmp_path, every_steps=1, flag=flag)
        saver.restore(model=model, optimizer=optimizer)
        saver.step(1)
        torch.manual_seed(1)
        other, other_opt = self._trained()  # the same shapes, other values
        params = {n: (p.data_ptr(), p) for n, p in other.named_parameters()}
        moments = [(t.data_ptr(), t) for s in other_opt.state.values() for t in s.values()]
        step = Checkpointer(tmp_path, flag=flag).restore(model=other, optimizer=other_opt)
        assert step == 1
        for name, saved in model.named_parameters():
            address, live = params[name]
            assert live.data_ptr() == address and torch.equal(live, saved), name
        assert [t.data_ptr() for s in other_opt.state.values() for t in s.values()] == [
            address for address, _ in moments]
        for (_, live), saved in zip(moments, [t for s in optimizer.state.values()
                                              for t in s.values()], strict=True):
            assert torch.equal(live, saved)

    def test_a_model_of_another_shape_names_the_first_mismatching_tensor(
            self, tmp_path: Path) -> None:
        model, optimizer = self._trained()
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        path = _write(tmp_path / "a.safetensors", state)
        wider = torch.nn.Sequential(torch.nn.Linear(33, 64), torch.nn.Linear(64, 7))
        before = [t.clone() for t in wider.state_dict().values()]
        with pytest.raises(CheckpointMismatch) as info:
            tensorfile.load(path, into={"model": wider.state_dict()})
        message = str(info.value)
        assert "\n" not in message
        assert "'model/0.weight'" in message and "(65, 33) float32" in message
        assert "(64, 33) float32" in message
        # Checked before anything is read: the live model is untouched.
        assert all(torch.equal(a, b) for a, b in zip(before, wider.state_dict().values(),
                                                       strict=True))

    def test_another_dtype_is_a_mismatch_too(self, tmp_path: Path) -> None:
        model, _ = self._trained()
        path = _write(tmp_path / "a.safetensors", {"model": model.state_dict()})
        with pytest.raises(CheckpointMismatch, match=r"'model/1\.bias'.*\(7,\) float32.*"
                                                     r"\(7,\) float16"):
            tensorfile.load(path, into={"model": {"1.bias": torch.zeros(7).half()}})

    def test_a_missing_or_extra_tensor_is_named_through_restore(self, tmp_path: Path) -> None:
        model, _ = self._trained()
        flag = StopFlag(signals=[], timeout=None)
        saver = Checkpointer(tmp_path, every_steps=1, flag=flag)
        saver.restore(model=model)
        saver.step(1)
        deeper = torch.nn.Sequential(torch.nn.Linear(33, 65), torch.nn.Linear(65, 7),
                                     torch.nn.Linear(7, 7))
        with pytest.raises(CheckpointMismatch,
                           match=r"the model has 'model/2\.weight', which the checkpoint lacks"):
            Checkpointer(tmp_path, flag=flag).restore(model=deeper)
        shallower = torch.nn.Sequential(torch.nn.Linear(33, 65))
        with pytest.raises(CheckpointMismatch,
                           match=r"the checkpoint has 'model/1\.\w+', which the model lacks"):
            Checkpointer(tmp_path, flag=flag).restore(model=shallower)


class TestDamagedFiles:
    def test_a_file_cut_in_its_data_is_truncated(self, tmp_path: Path) -> None:
        path = _write(tmp_path / "a.safetensors", _state())
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[:-100])
        with pytest.raises(CheckpointFormatError, match="truncated"):
            tensorfile.load(path)

    def test_a_file_cut_in_its_header(self, tmp_path: Path) -> None:
        path = _write(tmp_path / "a.safetensors", _state())
        Path(path).write_bytes(Path(path).read_bytes()[:200])
        with pytest.raises(CheckpointFormatError, match="no readable checkpoint header"):
            tensorfile.load(path)

    def test_a_header_whose_sizes_do_not_match_the_shapes(self, tmp_path: Path) -> None:
        path = _write(tmp_path / "a.safetensors", {"w": torch.zeros(4)})
        data = bytearray(Path(path).read_bytes())
        at = data.index(b'"shape": [4]')
        data[at:at + 12] = b'"shape": [5]'
        Path(path).write_bytes(bytes(data))
        with pytest.raises(CheckpointFormatError, match="'w' has a size that does not match"):
            tensorfile.load(path)


class TestFilesystems:
    def test_tmpfs(self) -> None:
        """/dev/shm: no RWF_NOWAIT there (EOPNOTSUPP), and O_DIRECT only on recent kernels."""
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm")
        directory = Path(os.environ.get("TMPDIR_SHM", "/dev/shm")) / f"tensorfile-{os.getpid()}"
        directory.mkdir()
        try:
            state = _state()
            path = _write(directory / "a.safetensors", state)
            live = _like({"model": state["model"]})
            assert _same(tensorfile.load(path, into=live), state)
        finally:
            shutil.rmtree(directory)

    def test_a_filesystem_that_refuses_o_direct(self, tmp_path: Path) -> None:
        """ramfs refuses O_DIRECT at open (EINVAL): saves and loads fall back to buffered I/O."""
        run_on_ramfs(tmp_path, """
            import os
            from runai_entry.training._io import diskio, tensorfile
            from runai_entry.training._io.staging import Staging
            from tests.training.test_tensorfile import _like, _same, _state
            path = str(ramfs / "a.safetensors")
            state = _state()
            p = tensorfile.plan(state)
            staging = Staging()
            staging.fill(p)
            tensorfile.write(path, p, staging)
            fd, direct = diskio.open_direct(path, os.O_RDONLY)
            os.close(fd)
            assert not direct, "ramfs accepted O_DIRECT: the fallback is not exercised"
            assert _same(tensorfile.load(path), state)
            assert _same(tensorfile.load(path, into=_like({"model": state["model"]})), state)
            print("loaded")
        """)


class TestSizesThatLineUpWithNothing:
    @pytest.mark.parametrize("cache", ["cold", "warm"])
    def test_many_small_odd_tensors_across_small_spans(self, tmp_path: Path,
                                                       cache: str) -> None:
        """Spans of 8 KiB and 3 threads: tensors cross span edges, start mid-block, are empty,
        and some lie in the middle of one block. A third of the targets are fresh aligned
        tensors (read straight in with O_DIRECT), a third live ones (copied out of the bounce
        buffer), a third staged as CUDA tensors are (``copy_`` from the bounce buffer)."""
        g = torch.Generator().manual_seed(3)
        sizes = [int(n) for n in torch.randint(0, 9000, (300,), generator=g)] + [0, 1, 4095,
                                                                                 4097, 12289]
        data = torch.randint(0, 256, (sum(sizes) + 4096 * 3,), dtype=torch.uint8, generator=g)
        path = tmp_path / "raw.bin"
        path.write_bytes(bytes(data.tolist()))
        if cache == "cold":
            drop_cache(str(path))
        else:
            path.read_bytes()
        pieces, offset, expected = [], 4096 + 7, []
        for n, size in enumerate(sizes):
            tensor = (diskio.aligned_empty([size], torch.uint8, offset) if n % 3 == 1
                      else torch.full((size,), 0, dtype=torch.uint8))
            pieces.append(diskio.Piece(offset, size, tensor, staged=n % 3 == 2))
            expected.append(data[offset:offset + size])
            offset += size + (n % 3)  # gaps, too
        diskio.read_into(str(path), pieces, chunk=8192, threads=3)
        for piece, want in zip(pieces, expected, strict=True):
            assert torch.equal(piece.tensor, want), piece.start

    def test_a_checkpoint_of_many_small_tensors(self, tmp_path: Path) -> None:
        state = {"model": {f"p{i}": torch.randn(i % 17, 3) for i in range(2000)}}
        path = _write(tmp_path / "a.safetensors", state)
        drop_cache(path)
        assert _same(tensorfile.load(path, into=_like(state)), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_into_cuda_tensors_through_pinned_bounce_buffers(tmp_path: Path) -> None:
    state = _state()
    path = _write(tmp_path / "a.safetensors", state)
    live = {"model": {k: v.cuda() for k, v in _like(state["model"]).items()}}
    loaded = tensorfile.load(path, into=live)
    for name, tensor in state["model"].items():
        got = loaded["model"][name]
        assert _bits(got.cpu()) == _bits(tensor), name
        if live["model"][name].is_contiguous():
            assert got is live["model"][name]


def _replicated_rank(rank: int, port: int, path: str, out: str, odd_rank: int,
                     other_file: bool) -> None:
    """One rank of a 2-rank gloo job restoring a replicated state (run by a spawned process)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    width = 9 if rank == odd_rank and not other_file else 8
    if rank == odd_rank and other_file:
        path += ".other"
    model = torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.Linear(width, 3))
    addresses = [p.data_ptr() for p in model.parameters()]
    into = {"model": model.state_dict(), "blob": torch.zeros(8 << 20)}
    try:
        before = _read_bytes()
        state = tensorfile.load(path, into=into, exact=("model",), replicated=True)
        read = _read_bytes() - before
        saved = torch.load(path + ".pt", weights_only=True)
        same = _same(state, saved) and addresses == [p.data_ptr() for p in model.parameters()]
        mine = state["model"]["0.weight"].data_ptr() == model[0].weight.data_ptr()
        line = f"loaded {same} {mine} {'the data' if read >= 32 << 20 else 'little'}"
    except CheckpointMismatch as exc:
        line = f"CheckpointMismatch {exc}"
    Path(out, f"rank{rank}").write_text(line)
    dist.barrier()
    dist.destroy_process_group()


def _read_bytes() -> int:
    """Bytes this process made the kernel fetch from storage (not the page cache)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))


def _replicated(tmp_path: Path, odd_rank: int, other_file: bool = False) -> list[str]:
    from tests.harness.spawning import PYTHON, REPO, free_port

    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 8)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 3,
             "blob": torch.randn(8 << 20)}  # 32 MiB: more than the header's readahead
    path = _write(tmp_path / "a.safetensors", state)
    torch.save(state, path + ".pt")
    _write(Path(path + ".other"), {**state, "extra": torch.randn(99)})  # another layout
    drop_cache(path)
    code = ("import torch.multiprocessing as mp; from tests.training.test_tensorfile import "
            f"_replicated_rank as r; mp.spawn(r, args=({free_port()}, {path!r}, "
            f"{str(tmp_path)!r}, {odd_rank}, {other_file}), nprocs=2)")
    done = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return [(tmp_path / f"rank{r}").read_text() for r in (0, 1)]


class TestReplicated:
    def test_rank_0_reads_and_the_others_receive_into_their_own_tensors(
            self, tmp_path: Path) -> None:
        """Only rank 0 fetches the data from storage; the optimizer's tensors have no target
        (fresh ones), and reach rank 1 too."""
        if not os.path.exists("/proc/self/io"):
            pytest.skip("no I/O accounting in /proc/self/io")
        assert _replicated(tmp_path, odd_rank=-1) == ["loaded True True the data",
                                                      "loaded True True little"]

    def test_a_mismatch_on_one_rank_raises_the_same_type_on_every_rank(
            self, tmp_path: Path) -> None:
        zero, one = _replicated(tmp_path, odd_rank=1)
        assert one.startswith("CheckpointMismatch ") and "'model/0.weight'" in one
        assert "(9, 8) float32" in one
        assert zero == f"{one} (on rank 1)"

    def test_ranks_that_found_different_layouts_both_raise(self, tmp_path: Path) -> None:
        """The broadcasts would pair the wrong tensors: one clear line on every rank instead."""
        lines = _replicated(tmp_path, odd_rank=1, other_file=True)
        for line in lines:
            assert line.startswith("CheckpointMismatch the ranks restore checkpoints of "
                                   "different layouts (rank 0: 'a.safetensors', rank 1: "
                                   "'a.safetensors.other')"), line
