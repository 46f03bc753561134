"""A replicated state (DDP) restored with one read: rank 0 reads the file, every other rank
receives the tensors by broadcast, straight into the same memory the read would have filled.

Every rank of a DDP job restores the same file. Read by every rank, the file crosses the disk (or
the network share) once per rank; read once and broadcast, once per job. On a 2-CPU machine with
one disk the two tie for 2 and 4 ranks (bench/restore_ddp.py, docs/benchmarks.md); what decides
is that one read does not grow with the ranks, and a GPU node's NVLink moves the state far
faster than its storage could read it eight times.

Every rank still reads the header itself (kilobytes) and checks its own live state against it,
so a mismatch is found before any collective. A failure on any rank, in that check or in rank
0's read, is raised on every rank, as the same exception type with the same one line, so no rank
is left waiting in a broadcast and an ``except`` clause behaves the same everywhere.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import torch
import torch.distributed as dist

# The module itself, not `from runai_entry.training import errors`: that names the package face,
# whose legacy shim refers to tensorfile, which imports this module (a circle to test_layout).
import runai_entry.training.errors as errors
from runai_entry.training._io.diskio import Piece, read_into


def active() -> bool:
    """True when there are other ranks to share a read with."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def read(path: str, prepare: Callable[[], list[Piece]]) -> None:
    """``prepare()`` on every rank (the pieces its tensors are), rank 0's read, broadcasts."""
    pieces: list[Piece] = []
    failure: BaseException | None = None
    try:
        pieces = prepare()
    except (errors.CheckpointError, OSError) as exc:  # the file unreadable on this rank's node
        failure = exc
    _agree(failure)
    _same_layout(path, pieces)
    failure = None
    if dist.get_rank() == 0:
        try:
            read_into(path, pieces)
        except (errors.CheckpointError, OSError) as exc:
            failure = exc
    _agree(failure)
    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else None)
    for piece in pieces:
        if not piece.nbytes:
            continue
        tensor = piece.tensor
        if device is not None and tensor.device != device:  # NCCL moves only its device's
            moved = tensor.to(device)
            dist.broadcast(moved, src=0)
            tensor.copy_(moved)
        else:
            dist.broadcast(tensor, src=0)


def _same_layout(path: str, pieces: list[Piece]) -> None:
    """Every rank's tensors have the same sizes in the same order, or the broadcasts would pair
    the wrong tensors (ranks that found different newest checkpoints, say)."""
    everyone: list[tuple[str, str] | None] = [None] * dist.get_world_size()
    sizes = repr([(p.nbytes, str(p.tensor.dtype)) for p in pieces]).encode()
    layout = hashlib.sha256(sizes).hexdigest()  # hash() of a str differs from process to process
    dist.all_gather_object(everyone, (os.path.basename(path), layout))
    if any(other[1] != layout for other in everyone if other is not None):
        names = ", ".join(f"rank {r}: {o[0]!r}" for r, o in enumerate(everyone) if o is not None)
        raise errors.CheckpointMismatch(f"the ranks restore checkpoints of different layouts "
                                        f"({names}): a replicated state needs the same one")


def _agree(failure: BaseException | None) -> None:
    """Raise the first rank's failure, if any rank had one, on every rank."""
    everyone: list[tuple[str, str, int] | None] = [None] * dist.get_world_size()
    mine = None if failure is None else (type(failure).__name__, str(failure), dist.get_rank())
    dist.all_gather_object(everyone, mine)
    first = next((f for f in everyone if f is not None), None)
    if first is None:
        return
    name, line, rank = first
    kind = getattr(errors, name, None)
    if not (isinstance(kind, type) and issubclass(kind, errors.CheckpointError)):
        kind, line = errors.CheckpointError, f"{name}: {line}"
    if failure is not None and rank == dist.get_rank():
        raise kind(line) from failure
    raise kind(f"{line} (on rank {rank})")
