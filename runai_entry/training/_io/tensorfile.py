"""The checkpoint file format of :class:`~runai_entry.training.checkpointer.Checkpointer`, written
at the speed of the disk.

``torch.save`` pickles tensor by tensor into a zip writer: on GPU each tensor is copied to the
host inside the pickler, one after the other, and on CPU the zip layer adds copies and small
writes; both fall well short of what the disk takes. This module writes the same state as
a safetensors file (an 8-byte header length, a JSON header, then raw tensor bytes), so:

* the tensor bytes go to the disk in a few large sequential writes, straight from the tensors'
  memory on CPU, or from one host staging buffer that the device→host copies fill while earlier
  parts are already being written (CUDA);
* anyone's ``safetensors`` reader can open the tensors, and runai-entry's discovery verifies the
  file (``--verify-checkpoints``) by its header and size;
* everything that is not a tensor (step, optimizer hyper-parameters, Python RNG states) lives in
  the header's ``__metadata__`` as a ``torch.save`` of the state with each tensor replaced by a
  reference, base64-encoded, and is read back with ``torch.load(weights_only=True)``.

Tensors are laid out by decreasing element size, so every offset is a multiple of its tensor's
element size. The data starts at a multiple of 4096 bytes (the header is padded with spaces,
which JSON ignores). :func:`load` reads the bytes straight into the live objects' tensors
(:mod:`.diskio`), and for a replicated state once per job (:mod:`.replicated`).
"""

from __future__ import annotations

import base64
import errno
import io
import itertools
import json
import math
import os
import struct
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from runai_entry.training._io import diskio
from runai_entry.training._io import replicated as shared_read
from runai_entry.training.errors import CheckpointFormatError, CheckpointMismatch

FORMAT = "runai-entry/training-state"
VERSION = 2
#: Marks a tensor's place in the skeleton; the value is the tensor's name in the header.
_REF = "__runai_entry_tensor__"

_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.complex64: "C64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
}
_BY_NAME = {name: dtype for dtype, name in _DTYPES.items()}


#: The file is not a checkpoint this module wrote, or is damaged (the family's name for it).
FormatError = CheckpointFormatError


@dataclass
class Entry:
    name: str
    tensor: torch.Tensor  # as found in the state: any device, any strides
    offset: int  # from the start of the data section
    nbytes: int


@dataclass
class Plan:
    """Where every tensor of one state goes in the file; built on the training thread."""

    header: bytes  # length prefix and JSON, padded so the data starts aligned
    entries: list[Entry]
    data_bytes: int

    @property
    def total_bytes(self) -> int:
        return len(self.header) + self.data_bytes

    @property
    def on_cuda(self) -> bool:
        return any(e.tensor.is_cuda for e in self.entries)


def plan(state: dict[str, Any]) -> Plan:
    """Split ``state`` into tensors and a skeleton, and lay the tensors out."""
    found: list[tuple[str, torch.Tensor]] = []
    skeleton = _strip(state, "", found, set())
    # Largest elements first: every offset stays a multiple of the element size (see above).
    found.sort(key=lambda item: -item[1].element_size())
    entries, header_tensors, offset = [], {}, 0
    for name, tensor in found:
        if tensor.dtype not in _DTYPES:
            raise FormatError(f"tensor {name!r} has dtype {tensor.dtype}, which the checkpoint "
                              f"format cannot store")
        nbytes = tensor.numel() * tensor.element_size()
        entries.append(Entry(name, tensor, offset, nbytes))
        header_tensors[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape),
                                "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    buffer = io.BytesIO()
    torch.save(skeleton, buffer)
    metadata = {"format": FORMAT, "version": str(VERSION),
                "skeleton": base64.b64encode(buffer.getvalue()).decode("ascii")}
    text = json.dumps({"__metadata__": metadata, **header_tensors}).encode()
    padded = -(-(8 + len(text)) // diskio.ALIGN) * diskio.ALIGN - 8
    text += b" " * (padded - len(text))
    return Plan(struct.pack("<Q", len(text)) + text, entries, offset)


def _strip(value: Any, path: str, found: list[tuple[str, torch.Tensor]], names: set[str],
           detach: bool = True) -> Any:
    if isinstance(value, torch.Tensor):
        name = path or "tensor"
        while name in names:  # keys 1 and "1" in one dict would share a path
            name += "'"
        names.add(name)
        found.append((name, value.detach() if detach else value))
        return {_REF: name}
    if isinstance(value, dict):
        return {k: _strip(v, f"{path}/{k}" if path else str(k), found, names, detach)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_strip(v, f"{path}/{i}", found, names, detach) for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    return value


# -- writing --------------------------------------------------------------------------------------


class Staged(Protocol):
    """Host memory holding a plan's bytes, or being filled with them (:class:`.staging.Staging`):
    aligned for ``O_DIRECT``, and ``wait(upto)`` returns once its first ``upto`` bytes are there."""

    buffer: torch.Tensor | None

    def wait(self, upto: int) -> None: ...


def write(path: str, p: Plan, staging: Staged | None = None) -> None:
    """Write ``p`` to ``path``: from ``staging`` (filled, or being filled, with ``p``) bypassing
    the page cache where the filesystem allows, else straight from the tensors (which must then
    be on the CPU). The caller fsyncs and publishes (``atomic_write``)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if staging is None:
        fd = os.open(path, flags, 0o644)
        try:
            diskio.write_all(fd, [memoryview(p.header)])
            # Held here until written: the views below do not keep a tensor alive.
            tensors = [e.tensor.contiguous() for e in p.entries if e.nbytes]
            for views in diskio.groups(tensors):
                diskio.writev_all(fd, views)
        finally:
            os.close(fd)
        return
    assert staging.buffer is not None
    fd, direct = diskio.open_direct(path, flags)
    try:
        total = p.total_bytes
        # O_DIRECT wants whole blocks: the bulk goes direct, the last partial block buffered.
        bulk = total // diskio.ALIGN * diskio.ALIGN if direct else total
        for start in range(0, bulk, diskio.WRITE_CHUNK):
            length = min(diskio.WRITE_CHUNK, bulk - start)
            staging.wait(start + length)
            try:
                diskio.write_all(fd, [diskio.memory(staging.buffer, start, length)])
            except OSError as exc:
                # Some filesystems accept O_DIRECT at open and refuse it at write.
                if not direct or exc.errno != errno.EINVAL or start:
                    raise
                direct = diskio.buffered(fd)
                diskio.write_all(fd, [diskio.memory(staging.buffer, start, length)])
        if bulk < total:
            staging.wait(total)
            if direct:
                direct = diskio.buffered(fd)
            diskio.write_all(fd, [diskio.memory(staging.buffer, bulk, total - bulk)])
    finally:
        os.close(fd)


# -- reading --------------------------------------------------------------------------------------


_SIGNATURE = b'{"__metadata__": {"format": "' + FORMAT.encode() + b'"'


def is_tensorfile(path: str) -> bool:
    """True when ``path`` starts like a file :func:`write` made (a safetensors header of ours)."""
    with open(path, "rb") as f:
        head = f.read(8 + len(_SIGNATURE))
    return head[8:] == _SIGNATURE


def load(path: str, into: dict[str, Any] | None = None, *, exact: tuple[str, ...] = (),
         replicated: bool = False) -> dict[str, Any]:
    """Read a file :func:`write` made back into the state it was made from.

    ``into``: a state shaped like the saved one (each live object's ``state_dict()``). Every
    saved tensor whose name, shape and dtype match a contiguous CPU or CUDA tensor there is read
    into that tensor's memory, and the returned state holds that very tensor, so a
    ``load_state_dict`` afterwards copies nothing (torch skips a copy onto the same memory). Any
    other tensor (one the live objects do not have yet, such as Adam's moments before the first
    step) is a fresh CPU tensor. A tensor of ``into`` with the name of a saved one but another
    shape or dtype raises :class:`CheckpointMismatch` before anything is read; an I/O error
    midway leaves ``into``'s tensors partly overwritten. ``exact``: the parts of ``into`` (the
    model) whose tensors must be the saved ones, no more and no fewer. ``replicated``: every
    rank loads this file (DDP); rank 0 reads it and broadcasts (:mod:`.replicated`).
    """
    skeleton: Any = None
    tensors: dict[str, torch.Tensor] = {}

    def prepare() -> list[diskio.Piece]:
        nonlocal skeleton
        skeleton, pieces = _prepare(path, into, exact, tensors)
        return pieces

    if replicated and shared_read.active():
        shared_read.read(path, prepare)
    else:
        diskio.read_into(path, prepare())
    try:
        state: dict[str, Any] = _fill(skeleton, tensors)
    except KeyError as exc:
        raise FormatError(f"{path!r} refers to tensor {exc} that its header lacks") from None
    return state


def _prepare(path: str, into: dict[str, Any] | None, exact: tuple[str, ...],
             tensors: dict[str, torch.Tensor]) -> tuple[Any, list[diskio.Piece]]:
    """The header read and checked against ``into``; ``tensors`` filled with where each saved
    tensor goes; the skeleton and the pieces to read."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise FormatError(f"{path!r} is too short to be a checkpoint")
        (length,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(length))
            metadata = header.pop("__metadata__")
        except (ValueError, KeyError, AttributeError):
            raise FormatError(f"{path!r} has no readable checkpoint header") from None
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            raise FormatError(f"{path!r} was not written by runai-entry's Checkpointer")
        size = os.fstat(f.fileno()).st_size
    base = 8 + length
    saved = _layout(path, header)
    data = max((end for _, _, _, end in saved.values()), default=0)
    if size < base + data:
        raise FormatError(f"{path!r} is truncated: {max(0, size - base)} of {data} data bytes")
    try:
        skeleton = torch.load(io.BytesIO(base64.b64decode(metadata["skeleton"])),
                              weights_only=True)
    except Exception as exc:  # whatever unpickling a damaged skeleton raises
        raise FormatError(f"{path!r} has a damaged skeleton: {exc}") from None
    targets = _targets(path, saved, into)
    for part in exact:
        _same_names(path, part, saved, (into or {}).get(part, {}))
    pieces = []
    for name, (dtype, shape, start, end) in saved.items():
        tensor = targets.get(name)
        if tensor is None:
            tensor = diskio.aligned_empty(shape, dtype, base + start)  # not zero-filled
        tensors[name] = tensor
        pieces.append(diskio.Piece(base + start, end - start, tensor))
    pieces.sort(key=lambda piece: piece.start)
    for before, after in itertools.pairwise(pieces):
        if after.nbytes and before.end > after.start:
            raise FormatError(f"{path!r} has overlapping tensors in its header")
    return skeleton, pieces


_Layout = dict[str, tuple[torch.dtype, list[int], int, int]]


def _layout(path: str, header: dict[str, Any]) -> _Layout:
    """Name -> (dtype, shape, start, end) from the header, each checked."""
    saved = {}
    for name, t in header.items():
        try:
            dtype, shape = _BY_NAME[t["dtype"]], [int(n) for n in t["shape"]]
            start, end = (int(n) for n in t["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{path!r} has a damaged header entry for {name!r}") from None
        count = math.prod(shape)
        if start < 0 or min(shape, default=0) < 0 or end - start != count * dtype.itemsize:
            raise FormatError(f"{path!r}: tensor {name!r} has a size that does not match its "
                              f"shape {shape} and dtype")
        saved[name] = (dtype, shape, start, end)
    return saved


def _targets(path: str, saved: _Layout, into: dict[str, Any] | None) -> dict[str, torch.Tensor]:
    """The tensors of ``into`` the saved bytes can go straight into, by saved name."""
    if into is None:
        return {}
    found: list[tuple[str, torch.Tensor]] = []
    _strip(into, "", found, set(), detach=False)
    targets = {}
    for name, tensor in found:  # in the live state's order: the first mismatch is named
        if name not in saved:
            continue
        dtype, shape, _, _ = saved[name]
        if tensor.dtype != dtype or list(tensor.shape) != shape:
            raise CheckpointMismatch(
                f"{path!r} does not fit: {name!r} is saved as {tuple(shape)} {str(dtype)[6:]}, "
                f"restored into {tuple(tensor.shape)} {str(tensor.dtype)[6:]}")
        if tensor.is_contiguous() and tensor.device.type in ("cpu", "cuda"):
            targets[name] = tensor
    return targets


def _same_names(path: str, part: str, saved: _Layout, live: dict[str, Any]) -> None:
    """:class:`CheckpointMismatch` naming the first tensor that only the checkpoint or only
    ``live`` has: one line where ``load_state_dict`` would print a list."""
    found: list[tuple[str, torch.Tensor]] = []
    _strip(live, part, found, set(), detach=False)
    names = {name for name, _ in found}
    for name in (n for n, _ in found if n not in saved):
        raise CheckpointMismatch(f"{path!r} does not fit: the {part} has {name!r}, "
                                 f"which the checkpoint lacks")
    for name in saved:
        if name.startswith(f"{part}/") and name not in names:
            raise CheckpointMismatch(f"{path!r} does not fit: the checkpoint has {name!r}, "
                                     f"which the {part} lacks")


def _fill(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _REF in value:
            return tensors[value[_REF]]
        return {k: _fill(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, tensors) for v in value]
    if isinstance(value, tuple):
        return tuple(_fill(v, tensors) for v in value)
    return value
