"""Verifying a checkpoint file's format: headers and trailers, enough to catch truncation."""

from __future__ import annotations

import os

from runai_entry.checkpoints.names import checkpoint_suffix

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PICKLE_PROTO = 0x80


def verify_file(path: str) -> str | None:
    """Check a checkpoint file's format deeply enough to catch truncation; None when it passes.

    Returns the reason it fails ("zip central directory missing", ...). Reads only headers and
    trailers, never the whole file. Formats without a cheap check (``.msgpack``, ``.joblib``,
    ``.tar`` that is not a torch file) pass.
    """
    suffix = checkpoint_suffix(os.path.basename(path)) or ""
    if suffix in (".pt", ".pth", ".ckpt", ".bin", ".tar"):
        return _verify_torch(path, allow_other=suffix == ".tar")
    if suffix in (".keras", ".npz"):
        return _verify_zip(path)
    if suffix in (".pkl", ".pickle"):
        return _verify_pickle(path)
    if suffix == ".safetensors":
        return _verify_safetensors(path)
    if suffix in (".h5", ".hdf5"):
        return _verify_hdf5(path)
    return None


def _head(path: str, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _verify_torch(path: str, *, allow_other: bool) -> str | None:
    head = _head(path, 4)
    if head.startswith(_ZIP_MAGIC):
        return _verify_zip(path)
    # torch.save before 1.6 (or with _use_new_zipfile_serialization=False) writes a pickle
    # stream followed by raw storages, so only its start can be checked.
    if len(head) >= 2 and head[0] == _PICKLE_PROTO and 2 <= head[1] <= 5:
        return None
    if allow_other:
        return None
    return "neither a zip archive nor a pickle"


def _verify_zip(path: str) -> str | None:
    import zipfile

    # The central directory is written last (torch.save, np.savez, Keras all go through a zip
    # writer), so its presence at the end of the file means the writer finished.
    try:
        with zipfile.ZipFile(path) as archive:
            if not archive.infolist():
                return "zip archive has no entries"
    except zipfile.BadZipFile as exc:
        return f"zip central directory missing or damaged ({exc})"
    return None


def _verify_pickle(path: str) -> str | None:
    with open(path, "rb") as f:
        first = f.read(2)
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
    if len(first) < 2 or first[0] != _PICKLE_PROTO or not 2 <= first[1] <= 5:
        return "does not start with a pickle protocol header"
    if last != b".":  # the STOP opcode ends every pickle stream
        return "pickle stream is truncated (no STOP opcode at the end)"
    return None


def _verify_safetensors(path: str) -> str | None:
    import json
    import struct

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw_length = f.read(8)
        if len(raw_length) < 8:
            return "shorter than the safetensors header length"
        (length,) = struct.unpack("<Q", raw_length)
        if length > size - 8:
            return "safetensors header runs past the end of the file"
        try:
            header = json.loads(f.read(length))
        except ValueError:
            return "safetensors header is not valid JSON"
    if not isinstance(header, dict):
        return "safetensors header is not a JSON object"
    end = 0
    for key, tensor in header.items():
        if key == "__metadata__":
            continue
        offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return f"safetensors tensor {key!r} has no data_offsets"
        end = max(end, int(offsets[1]))
    if size < 8 + length + end:
        return f"truncated: {size} bytes, tensors need {8 + length + end}"
    return None


def _verify_hdf5(path: str) -> str | None:
    import struct

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        # The superblock sits at 0, or after a user block of 512, 1024, 2048, ... bytes.
        offset = 0
        while True:
            f.seek(offset)
            block = f.read(96)
            if block.startswith(_HDF5_MAGIC):
                break
            offset = 512 if offset == 0 else offset * 2
            if offset >= size:
                return "no HDF5 signature"
    # The superblock records the end-of-file address; a shorter file was cut off. Its position
    # depends on the superblock version and the size of offsets (HDF5 file format spec, II.A).
    version = block[8]
    if version in (0, 1):
        width = block[13]
        base_at = 24 if version == 0 else 28
    elif version in (2, 3):
        width = block[9]
        base_at = 12
    else:
        return None  # a newer superblock: the signature is all we know how to check
    if width not in (2, 4, 8):
        return f"HDF5 superblock has an invalid offset size {width}"
    code = {2: "<H", 4: "<I", 8: "<Q"}[width]
    eof_at = base_at + 2 * width
    if len(block) < eof_at + width:
        return "truncated inside the HDF5 superblock"
    (base,) = struct.unpack_from(code, block, base_at)
    (eof,) = struct.unpack_from(code, block, eof_at)
    if eof == (1 << (8 * width)) - 1:
        return None  # "undefined address": not recorded
    if size < base + eof:
        return f"truncated: {size} bytes, the HDF5 superblock says {base + eof}"
    return None
