"""Verifying a checkpoint file's format: headers and trailers, enough to catch truncation.

The file is untrusted: anyone who can write the shared directory can plant one. So every read is
bounded whatever the file claims (a zip's end records only, never its central directory; a
safetensors header no longer than the format's own limit), every field read is checked before it
is used, and a malformed file is an answer ("fails verification: why"), never an exception.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from typing import NamedTuple

from runai_entry.checkpoints.found import EMPTY_FILE
from runai_entry.checkpoints.names import checkpoint_suffix

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PICKLE_PROTO = 0x80

#: The safetensors library refuses a longer header (``MAX_HEADER_SIZE``): a length above it is a
#: torn or planted file, and reading it would read (and hold) up to the whole file.
SAFETENSORS_MAX_HEADER = 100_000_000

# Zip end records (APPNOTE 4.3.14-4.3.16): the end of central directory record, at most 64 KiB
# of comment after it, and for zip64 a locator just before it naming the zip64 record.
_EOCD = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_ZIP_TAIL = _EOCD.size + 0xFFFF
#: The most any zip verification reads: the magic at the start, the tail, the zip64 locator
#: and record, one central header's magic.
ZIP_MAX_READ = 4 + _ZIP_TAIL + _EOCD64_LOCATOR.size + _EOCD64.size + 4
#: A reason quoted from a file (a tensor's name) is cut to this many characters.
_QUOTE = 60


class Verdict(NamedTuple):
    """What verifying one file found: the problem (None: it passes) and the bytes it read."""

    problem: str | None
    nbytes: int


class _File:
    """A regular file open for reading, counting the bytes read."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size, self.nbytes = fd, size, 0

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, max(0, min(length, self.size - offset)), offset) \
            if 0 <= offset < self.size else b""
        self.nbytes += len(data)
        return data


def verify_file(path: str) -> str | None:
    """Check a checkpoint file's format deeply enough to catch truncation; None when it passes.

    Returns the reason it fails ("zip central directory missing", ...). Reads only headers and
    trailers, never the whole file, and never more than a bound whatever the file claims.
    Formats without a cheap check (``.msgpack``, ``.joblib``, ``.tar`` that is not a torch file)
    pass. Raises OSError when the file cannot be opened or read.
    """
    return verify(path).problem


def verify(path: str) -> Verdict:
    """:func:`verify_file`, with the bytes it read (discovery's search budget counts them)."""
    suffix = (checkpoint_suffix(os.path.basename(path)) or "").lower()
    check = _CHECKS.get(suffix)
    if check is None:
        return Verdict(None, 0)
    # O_NONBLOCK: a FIFO swapped in under the name since it was listed must not block the open.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return verify_descriptor(fd, os.path.basename(path))
    finally:
        os.close(fd)


def verify_descriptor(fd: int, name: str) -> Verdict:
    """:func:`verify` of a file already open (``name``: its name, which says its format), for
    callers that opened it without following links (runai-entry's kept copy)."""
    suffix = (checkpoint_suffix(name) or "").lower()
    check = _CHECKS.get(suffix)
    if check is None:
        return Verdict(None, 0)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        return Verdict("not a regular file", 0)
    f = _File(fd, info.st_size)
    if f.size == 0:
        return Verdict(EMPTY_FILE, 0)
    return Verdict(check(f, suffix), f.nbytes)


#: Bytes :func:`fingerprint` hashes at each end of a file.
FINGERPRINT_PART = 64 << 10


def fingerprint(path: str) -> str | None:
    """What a checkpoint file holds, in a few bytes: ``"<size>:<hash of its two ends>"``; None
    when it is not a regular file. Raises OSError when it cannot be read.

    The crash-loop guard tells by it the state resumed from saved again (the same content) from
    new work, where names carry no step. Only the first and last :data:`FINGERPRINT_PART` bytes
    are read: for the zip that ``torch.save``, ``np.savez`` and Keras write, the last part holds
    the central directory, which records the CRC-32 of every member, so the hash covers the
    whole content (``torch.save`` of the same objects writes the same bytes); for safetensors
    and pickles the ends hold the header and the first and last tensors, which training changes.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        size, part = info.st_size, FINGERPRINT_PART
        digest = hashlib.blake2b(os.pread(fd, part, 0), digest_size=16)
        if size > part:
            tail_at = max(part, size - part)
            digest.update(os.pread(fd, size - tail_at, tail_at))
        return f"{size}:{digest.hexdigest()}"
    finally:
        os.close(fd)


def _verify_torch(f: _File, suffix: str) -> str | None:
    head = f.read(0, 4)
    if head.startswith(_ZIP_MAGIC):
        return _verify_zip(f, suffix)
    # torch.save before 1.6 (or with _use_new_zipfile_serialization=False) writes a pickle
    # stream followed by raw storages, so only its start can be checked.
    if len(head) >= 2 and head[0] == _PICKLE_PROTO and 2 <= head[1] <= 5:
        return None
    if suffix == ".tar":
        return None
    return "neither a zip archive nor a pickle"


def _verify_zip(f: _File, suffix: str) -> str | None:
    """The end records say where the central directory is; the writer writes them last.

    torch.save, np.savez and Keras all go through a zip writer that writes the central directory
    and then the end records as its last bytes, so their presence, consistent with the file's
    size, means the writer finished. The central directory itself is not read: a planted one
    with millions of entries costs nothing here.
    """
    tail_at = max(0, f.size - _ZIP_TAIL)
    tail = f.read(tail_at, _ZIP_TAIL)
    at = tail.rfind(b"PK\x05\x06", 0, max(0, len(tail) - _EOCD.size + 4))
    while at >= 0:
        _, _, _, _, count, cd_size, cd_offset, comment = _EOCD.unpack_from(tail, at)
        if at + _EOCD.size + comment <= len(tail):
            break
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        return "zip central directory missing (no end record: cut short?)"
    cd_end = tail_at + at
    # A zip64 locator just before the end record (torch.save always writes one) moves the
    # directory's end to the zip64 record, whose fields replace the 16- and 32-bit ones.
    locator = f.read(cd_end - _EOCD64_LOCATOR.size, _EOCD64_LOCATOR.size) \
        if cd_end >= _EOCD64_LOCATOR.size else b""
    if locator.startswith(b"PK\x06\x07") and len(locator) == _EOCD64_LOCATOR.size:
        located = _zip64(f, _EOCD64_LOCATOR.unpack(locator)[2])
        if isinstance(located, str):
            return located
        count, cd_size, cd_offset, cd_end = located
    elif count == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset):
        return "zip central directory damaged (zip64 locator missing)"
    if count == 0:
        return "zip archive has no entries"
    # Bytes before the archive (a self-extracting stub) shift every offset alike, as zipfile
    # allows; a central directory that would start before the file's first byte is damage.
    shift = cd_end - cd_size - cd_offset
    if shift < 0:
        return "zip central directory damaged (its end record points past its own position)"
    if f.read(cd_offset + shift, 4) != b"PK\x01\x02":
        return "zip central directory damaged (no central header where the end record says)"
    return None


def _zip64(f: _File, record_at: int) -> tuple[int, int, int, int] | str:
    record = f.read(record_at, _EOCD64.size)
    if len(record) < _EOCD64.size or not record.startswith(b"PK\x06\x06"):
        return "zip central directory damaged (zip64 end record missing)"
    _, _, _, _, _, _, _, count, cd_size, cd_offset = _EOCD64.unpack(record)
    return count, cd_size, cd_offset, record_at


def _verify_pickle(f: _File, suffix: str) -> str | None:
    first, last = f.read(0, 2), f.read(f.size - 1, 1)
    if len(first) < 2 or first[0] != _PICKLE_PROTO or not 2 <= first[1] <= 5:
        return "does not start with a pickle protocol header"
    if last != b".":  # the STOP opcode ends every pickle stream
        return "pickle stream is truncated (no STOP opcode at the end)"
    return None


def _verify_safetensors(f: _File, suffix: str) -> str | None:
    import json

    raw_length = f.read(0, 8)
    if len(raw_length) < 8:
        return "shorter than the safetensors header length"
    (length,) = struct.unpack("<Q", raw_length)
    if length > SAFETENSORS_MAX_HEADER:
        return (f"safetensors header length {length} is over the format's limit of "
                f"{SAFETENSORS_MAX_HEADER} bytes")
    if length > f.size - 8:
        return "safetensors header runs past the end of the file"
    try:
        header = json.loads(f.read(8, length))
    except (ValueError, RecursionError):  # also UnicodeDecodeError; RecursionError: [[[[...
        return "safetensors header is not valid JSON"
    if not isinstance(header, dict):
        return "safetensors header is not a JSON object"
    end = 0
    for key, tensor in header.items():
        if key == "__metadata__":
            continue
        offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return f"safetensors tensor {_quote(key)} has no data_offsets"
        begin, stop = offsets
        # bool is an int in Python, not in the format.
        if not all(type(n) is int for n in offsets) or not 0 <= begin <= stop:
            return f"safetensors tensor {_quote(key)} has invalid data_offsets"
        end = max(end, stop)
    if f.size < 8 + length + end:
        return f"truncated: {f.size} bytes, tensors need {8 + length + end}"
    return None


def _verify_hdf5(f: _File, suffix: str) -> str | None:
    # The superblock sits at 0, or after a user block of 512, 1024, 2048, ... bytes.
    offset = 0
    while True:
        block = f.read(offset, 96)
        if block.startswith(_HDF5_MAGIC):
            break
        offset = 512 if offset == 0 else offset * 2
        if offset >= f.size:
            return "no HDF5 signature"
    # The superblock records the end-of-file address; a shorter file was cut off. Its position
    # depends on the superblock version and the size of offsets (HDF5 file format spec, II.A).
    if len(block) < 14:
        return "truncated inside the HDF5 superblock"
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
    if f.size < base + eof:
        return f"truncated: {f.size} bytes, the HDF5 superblock says {base + eof}"
    return None


def _quote(text: str) -> str:
    """A name from the file, for a one-line reason: escaped, and cut when long."""
    return repr(text if len(text) <= _QUOTE else text[:_QUOTE] + "...")


_CHECKS = {
    **dict.fromkeys((".pt", ".pth", ".ckpt", ".bin", ".tar"), _verify_torch),
    **dict.fromkeys((".keras", ".npz"), _verify_zip),
    **dict.fromkeys((".pkl", ".pickle"), _verify_pickle),
    ".safetensors": _verify_safetensors,
    **dict.fromkeys((".h5", ".hdf5"), _verify_hdf5),
}
