"""DCP shards written raw, straight from a 4096-aligned host copy with ``O_DIRECT``, and read back.

torch's ``FileSystemWriter`` puts every tensor through ``torch.save`` (a pickle in a zip, with
CRC32) into page-cache writes: CPU work for every byte. ``O_DIRECT`` writes from aligned memory
take far less, and from huge pages almost none (the kernel DMAs from them with no copy; it only
pins the pages). A background write takes that CPU from the training ranks beside it: with a
core per rank, all of it (bench/dcp_save.py; figures in docs/benchmarks.md).

* :class:`AlignedStaging` copies a state (``torch.Tensor`` and DTensor local shards alike) into
  one host buffer, every tensor at a 4096-byte boundary and padded to a whole block; reused from
  save to save, in transparent huge pages (:func:`.diskio.huge_page_empty`), pinned on CUDA.
  A ShardedTensor (FSDP1 without a device mesh) is copied on its own each save instead.
* :class:`RawWriter` (a ``FileSystemWriter``) writes one file per rank: every tensor at a
  4096-aligned offset, raw; runs of staged tensors that lie back to back in the buffer go in
  64 MiB ``O_DIRECT`` writes (``os.pwrite`` releases the GIL meanwhile). A tensor not in the
  buffer (a blocking save) is written buffered. Non-tensor values are ``torch.save`` bytes, as
  torch writes them. The ``.metadata`` is torch's own; each raw tensor's entry carries the
  transform descriptor :data:`RAW`.
* :class:`RawReader` (a ``FileSystemReader``) reads raw entries with :mod:`.diskio` (large
  reads, ``O_DIRECT`` where it can, straight into the destination tensors when a saved chunk is
  exactly one of them, through a temporary one otherwise: another world size), and hands
  everything else, every checkpoint written before, to torch's reader. torch's plain reader
  refuses raw entries with ``Unknown extension name='runai-entry-raw'``; pass
  ``storage_reader=RawReader(path)`` to ``dcp.load``.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import io
import itertools
import os
from typing import Any

import torch
from torch.distributed._shard.sharded_tensor.api import ShardedTensor
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.filesystem import (
    DEFAULT_SUFFIX,
    FileSystemReader,
    FileSystemWriter,
    _StorageInfo,
    _StoragePrefix,
)
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import WriteResult
from torch.distributed.tensor import DTensor
from torch.futures import Future

from runai_entry.training._io import diskio
from runai_entry.training.errors import CheckpointFormatError

__all__ = ["RAW", "AlignedStaging", "CachingPlanner", "RawReader", "RawWriter"]

#: The transform descriptor of a raw tensor entry (``name/version``, as torch's extensions).
RAW = "runai-entry-raw/1"
_A = diskio.ALIGN
_KEYS = itertools.count()


def _up(n: int) -> int:
    return -(-n // _A) * _A


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class AlignedStaging:
    """A host copy of a state for :class:`RawWriter`, in one aligned buffer kept across saves.

    The buffer is laid out anew (and touched, so its page faults are paid then) only when the
    state's tensors change in name, dtype or shape; otherwise a save only copies into it.
    """

    def __init__(self) -> None:
        #: Names this state's entry in torch's class-wide plan cache (:class:`CachingPlanner`).
        self.plan_key = f"runai-entry-{next(_KEYS)}"
        self.buffer: torch.Tensor | None = None
        self._slots: dict[str, torch.Tensor] = {}
        self._shape: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
        self._event: Any = None

    def stage(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` with every tensor replaced by its copy in the buffer, in fresh containers;
        values other than tensors and immutable scalars are deep copies (the writer pickles
        them while training goes on). On CUDA the copies are asynchronous: the writer calls
        :meth:`wait` first."""
        found: dict[str, torch.Tensor] = {}
        _walk(state, "", found)
        cuda = any(t.is_cuda for t in found.values())
        shape = {k: (t.dtype, tuple(t.shape)) for k, t in found.items()}
        if shape != self._shape:
            self._layout(found, pinned=cuda)
            self._shape = shape
        for key, source in found.items():
            self._slots[key].copy_(source, non_blocking=cuda)
        if cuda:
            self._event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            self._event.record()
        return _rebuild(state, "", self._slots)  # type: ignore[no-any-return]

    def wait(self) -> None:
        """Until the last :meth:`stage`'s device-to-host copies are done."""
        if self._event is not None:
            self._event.synchronize()
            self._event = None

    def holds(self, tensor: torch.Tensor, padded: int) -> bool:
        """Whether ``padded`` bytes from ``tensor``'s address are in the buffer, block-aligned:
        what an O_DIRECT write may take straight from memory."""
        if self.buffer is None or tensor.data_ptr() % _A:
            return False
        at = tensor.data_ptr() - self.buffer.data_ptr()
        return 0 <= at <= self.buffer.numel() - padded

    def _layout(self, found: dict[str, torch.Tensor], *, pinned: bool) -> None:
        self.buffer = None
        self._slots = {}  # the old buffer is freed before the new one is allocated
        total = sum(_up(_nbytes(t)) for t in found.values())
        if pinned:
            storage = torch.empty(total + _A, dtype=torch.uint8, pin_memory=True)
            start = -storage.data_ptr() % _A
            self.buffer = storage[start:start + total]
        else:
            self.buffer = diskio.huge_page_empty(total)
        self.buffer.zero_()  # every page faulted in now, not in a save's stall
        at = 0
        for key, t in found.items():
            n = _nbytes(t)
            self._slots[key] = self.buffer[at:at + n].view(t.dtype).view(t.shape)
            at += _up(n)


def _local(value: torch.Tensor) -> torch.Tensor:
    return value._local_tensor if isinstance(value, DTensor) else value


def _walk(value: Any, path: str, found: dict[str, torch.Tensor]) -> None:
    if isinstance(value, ShardedTensor):  # copied whole by _rebuild, not laid out
        return
    if isinstance(value, torch.Tensor):
        found[path] = _local(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _walk(v, f"{path}/{k}", found)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _walk(v, f"{path}/{i}", found)


def _rebuild(value: Any, path: str, slots: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, ShardedTensor):
        # FSDP1 without a device mesh: a fresh host copy each save, written buffered.
        on_host = all(s.tensor.device.type == "cpu" for s in value.local_shards())
        return copy.deepcopy(value) if on_host else value.to(device="cpu")
    if isinstance(value, DTensor):
        return DTensor.from_local(slots[path], value.device_mesh, value.placements,
                                  run_check=False, shape=value.size(), stride=value.stride())
    if isinstance(value, torch.Tensor):
        return slots[path]
    if isinstance(value, dict):
        return {k: _rebuild(v, f"{path}/{k}", slots) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebuild(v, f"{path}/{i}", slots) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(_rebuild(v, f"{path}/{i}", slots) for i, v in enumerate(value))
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    return copy.deepcopy(value)


class CachingPlanner(DefaultSavePlanner):
    """torch's save planner with its plan cache on, under a key of its own (torch's default key is
    the class name, shared by every planner of the process). A save whose plan is the last one's
    (same names, shapes and shards) sends empty plans and skips the global planning, about a
    third of the writer thread's CPU; a changed plan is planned again (torch compares them)."""

    def __init__(self, key: str) -> None:
        super().__init__(enable_plan_caching=True)
        self._cached_plans_key = key


class RawWriter(FileSystemWriter):
    """A ``FileSystemWriter`` that writes each rank's tensors raw into one file (see the module);
    with ``staging``, the tensors it staged go to the disk with ``O_DIRECT``."""

    def __init__(self, path: str | os.PathLike[str], staging: AlignedStaging | None = None,
                 ) -> None:
        super().__init__(path, single_file_per_rank=True, sync_files=True, thread_count=1)
        self.staging = staging

    def write_data(self, plan: SavePlan, planner: SavePlanner,
                   ) -> Future[list[WriteResult]]:
        prefix: _StoragePrefix = plan.storage_data
        name = f"{prefix.prefix}0{DEFAULT_SUFFIX}"
        tensors, blobs = [], []
        for item in plan.items:
            data = planner.resolve_data(item)
            if item.type == WriteItemType.BYTE_IO:
                assert isinstance(data, io.BytesIO)
                blobs.append((item, data.getbuffer()))
            else:
                assert isinstance(data, torch.Tensor)
                tensors.append((item, data.detach()))
        # In the buffer's order: staged tensors that lie back to back there go in one write.
        tensors.sort(key=lambda pair: pair[1].data_ptr())
        if self.staging is not None and tensors:
            self.staging.wait()
        results = []
        writes: list[tuple[int, torch.Tensor, int, bool]] = []  # offset, tensor, bytes, direct
        at = 0
        for item, t in tensors:
            n = _nbytes(t)
            direct = self.staging is not None and self.staging.holds(t, _up(n))
            writes.append((at, t, n, direct))
            results.append(WriteResult(index=item.index, size_in_bytes=n,
                                       storage_data=_StorageInfo(name, at, n, [RAW])))
            at += _up(n)
        path = os.path.join(os.fspath(self.path), name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_tensors(path, fd, writes, self.staging)
            for item, view in blobs:  # small: torch.save bytes of the non-tensor values
                _pwrite(fd, view, at)
                results.append(WriteResult(index=item.index, size_in_bytes=len(view),
                                           storage_data=_StorageInfo(name, at, len(view))))
                at += len(view)
            os.fsync(fd)
        finally:
            os.close(fd)
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future


def _write_tensors(path: str, fd: int, writes: list[tuple[int, torch.Tensor, int, bool]],
                   staging: AlignedStaging | None) -> None:
    """Each tensor's bytes at its offset: staged runs with O_DIRECT (whole blocks, from the
    buffer's padding too), the rest buffered through ``fd``."""
    runs: list[tuple[int, int, int]] = []  # file offset, buffer offset, padded bytes
    for offset, t, n, direct in writes:
        if not n:
            continue
        if not direct:  # a blocking save's live tensor, copied to the host one at a time
            host = t.to("cpu").contiguous()
            _pwrite(fd, diskio.memory(host), offset)
            continue
        assert staging is not None and staging.buffer is not None
        at = t.data_ptr() - staging.buffer.data_ptr()
        last = runs[-1] if runs else None
        if last and last[0] + last[2] == offset and last[1] + last[2] == at:
            runs[-1] = (last[0], last[1], last[2] + _up(n))
        else:
            runs.append((offset, at, _up(n)))
    if not runs:
        return
    assert staging is not None and staging.buffer is not None
    dfd, direct = diskio.open_direct(path, os.O_WRONLY)
    try:
        for offset, at, n in runs:
            for a in range(0, n, diskio.WRITE_CHUNK):
                view = diskio.memory(staging.buffer, at + a, min(diskio.WRITE_CHUNK, n - a))
                try:
                    _pwrite(dfd, view, offset + a)
                except OSError as exc:
                    # Some filesystems accept O_DIRECT at open and refuse it at write.
                    if not direct or exc.errno != errno.EINVAL:
                        raise
                    direct = diskio.buffered(dfd)
                    _pwrite(dfd, view, offset + a)
    finally:
        os.close(dfd)


def _pwrite(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class RawReader(FileSystemReader):
    """A ``FileSystemReader`` that also reads :class:`RawWriter`'s raw entries (see the module)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._metadata: Metadata | None = None

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any,
                              **kwargs: Any) -> None:
        super().set_up_storage_reader(metadata, is_coordinator, *args, **kwargs)
        self._metadata = metadata

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        raw: list[ReadItem] = []
        rest: list[ReadItem] = []
        for item in plan.items:
            info: _StorageInfo = self.storage_data[item.storage_index]
            is_raw = item.type != LoadItemType.BYTE_IO and RAW in (info.transform_descriptors or ())
            (raw if is_raw else rest).append(item)
        per_file: dict[str, list[Any]] = {}
        for item in raw:
            name = self.storage_data[item.storage_index].relative_path
            per_file.setdefault(name, []).append(item)
        for name, items in per_file.items():
            self._read_file(os.path.join(os.fspath(self.path), name), items, planner)
        if rest:  # torch.save entries: non-tensor values, and every checkpoint written before
            super().read_data(dataclasses.replace(plan, items=rest), planner).wait()
        future: Future[None] = Future()
        future.set_result(None)
        return future

    def _read_file(self, path: str, items: list[Any], planner: LoadPlanner) -> None:
        by_chunk: dict[Any, list[Any]] = {}
        for item in items:
            by_chunk.setdefault(item.storage_index, []).append(item)
        pieces: list[diskio.Piece] = []
        done: list[tuple[Any, torch.Tensor, torch.Tensor | None]] = []  # item, target, source
        for index, reqs in by_chunk.items():
            info: _StorageInfo = self.storage_data[index]
            dtype, sizes = self._chunk(index)
            targets = [planner.resolve_tensor(r).detach() for r in reqs]
            t = targets[0]
            if (len(reqs) == 1 and list(reqs[0].lengths) == sizes and t.dtype == dtype
                    and t.is_contiguous() and t.device.type in ("cpu", "cuda")):
                pieces.append(diskio.Piece(info.offset, info.length, t))
                done.append((reqs[0], t, None))
                continue
            # Another world size: the saved chunk whole, then each destination's part of it.
            chunk = diskio.aligned_empty(sizes, dtype, info.offset)
            pieces.append(diskio.Piece(info.offset, info.length, chunk))
            for req, target in zip(reqs, targets, strict=True):
                part = chunk
                for dim, (start, length) in enumerate(zip(req.storage_offsets, req.lengths,
                                                          strict=True)):
                    part = part.narrow(dim, start, length)
                done.append((req, target, part))
        pieces.sort(key=lambda p: p.start)
        if pieces and os.stat(path).st_size < pieces[-1].end:
            raise CheckpointFormatError(f"{path!r} is truncated")
        diskio.read_into(path, pieces)
        for req, target, source in done:
            if source is not None:
                if target.size() != source.size():
                    raise AssertionError(f"{req.storage_index}: saved {tuple(source.size())}, "
                                         f"expected {tuple(target.size())}")
                target.copy_(source)
            planner.commit_tensor(req, target)

    def _chunk(self, index: Any) -> tuple[torch.dtype, list[int]]:
        """The dtype and shape of the saved chunk at ``index``."""
        assert self._metadata is not None
        md = self._metadata.state_dict_metadata[index.fqn]
        assert isinstance(md, TensorStorageMetadata)
        for chunk in md.chunks:
            if list(chunk.offsets) == list(index.offset):
                return md.properties.dtype, list(chunk.sizes)
        raise KeyError(f"no saved chunk of {index.fqn!r} at {tuple(index.offset)}")
