"""Who this process is among the ranks, and the few collectives the training library needs.

Every rank of a job must take the same decisions at the same step, or one of them waits in a
collective the others never enter. The library needs three kinds of agreement, all here once:

* :func:`agree`: one ``all_reduce`` of a few booleans (MAX: true on every rank if true on any),
  for the stop, a time-based save, a failed background write;
* :func:`outcome`: each rank says whether its part of a save failed; if any did, every rank
  raises the *same* exception type with the *same* message (the lowest failing rank's);
* :func:`on_rank0`: rank 0 does something (writes the file), every rank hears how it went.

These collectives run on a CPU group (:func:`cpu_group`): the default group when it takes CPU
tensors (gloo, or ``cpu:gloo,cuda:nccl``), else a gloo group over the same ranks, created once.
An NCCL all_reduce would be enqueued on the CUDA stream, and reading its result (``.tolist()``)
blocks the host until the GPU has finished every kernel queued before it: the CPU could no
longer queue step N+1 while the GPU runs step N. A gloo reduce of a few ints touches no stream.

Without an initialised process group everything is local: rank 0 of 1, agreement is the identity.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from runai_entry.training.errors import CheckpointSaveFailed

__all__ = [
    "OwnGroup",
    "agree",
    "cpu_group",
    "describe",
    "gather_objects",
    "is_distributed",
    "needs_own_cpu_group",
    "new_cpu_group",
    "on_rank0",
    "outcome",
    "rank",
    "world_size",
]

T = TypeVar("T")

def is_distributed() -> bool:
    """True when torch.distributed has an initialised default process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of ranks; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def needs_own_cpu_group(device_types: object) -> bool:
    """True when a group with these device types cannot reduce a CPU tensor (NCCL alone)."""
    return torch.device("cpu") not in device_types  # type: ignore[operator]


def new_cpu_group() -> Any:
    """A new gloo group over every rank. Collective: every rank calls it at the same point."""
    return dist.new_group(backend="gloo")


class OwnGroup:
    """A gloo group of the library's own, made once per default group, where ``needed(default)``.

    Made again when the default group changes (a destroy_process_group() and a new init): every
    rank sees that change at the same call, so every rank makes the group (a collective) at the
    same point. Whether this rank still holds an old group is no test: an exception's traceback
    can keep one alive on one rank only.

    Both groups are held weakly. Torch's registry owns them until destroy_process_group(), which
    must free them then and there: a group that outlives it is freed while the interpreter shuts
    down, and gloo's threads then abort the process ("terminate called without an active
    exception", exit -6) after a job that did everything right.
    """

    def __init__(self, needed: Callable[[Any], bool]) -> None:
        self._needed = needed
        self._made_for: weakref.ref[Any] | None = None
        self._group: weakref.ref[Any] | None = None

    def get(self) -> Any:
        """The group; None when the default group serves, or when not distributed."""
        if not is_distributed():
            return None
        default = dist.group.WORLD
        if self._made_for is None or self._made_for() is not default:
            self._made_for = weakref.ref(default)
            own = new_cpu_group() if self._needed(default) else None
            self._group = weakref.ref(own) if own is not None else None
            return own
        return self._group() if self._group is not None else None


_cpu = OwnGroup(lambda default: needs_own_cpu_group(default._device_types))


def cpu_group() -> Any:
    """The group the library's agreements run on; None means the default group.

    The first call creates a gloo group when the default group is NCCL only. Creating a group is
    itself collective, and so is every caller of this function (the agreements), so all ranks
    create it at the same call.
    """
    return _cpu.get()


def agree(*values: bool, group: Any = None) -> tuple[bool, ...]:
    """Each value true on every rank when true on any (one all_reduce of ``len(values)`` ints).

    ``group``: a CPU-capable group to use instead of :func:`cpu_group` (the background writer
    has its own, so that its agreements never interleave with the training thread's).
    """
    if not is_distributed():
        return tuple(bool(v) for v in values)
    t = torch.tensor([int(bool(v)) for v in values], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group if group is not None else cpu_group())
    return tuple(bool(v) for v in t.tolist())


def gather_objects(mine: Any) -> list[Any]:
    """Every rank's ``mine``, in rank order, on every rank (one all_gather on the CPU group)."""
    if not is_distributed():
        return [mine]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine, group=cpu_group())
    return everyone


def outcome(
    error: BaseException | None,
    what: str,
    *,
    kind: type[CheckpointSaveFailed] = CheckpointSaveFailed,
    group: Any = None,
) -> None:
    """Every rank passes its own error (None: its part went well). If any rank failed, every
    rank raises ``kind`` with one message: ``<what> failed on rank R: <R's error>`` for the
    lowest failing rank R (chained from its own error where it has one). Collective.

    One all_reduce when all went well; a failure adds one broadcast of the message.
    """
    if not is_distributed():
        if error is not None:
            raise kind(f"{what} failed: {describe(error)}") from error
        return
    group = group if group is not None else cpu_group()
    world = dist.get_world_size()
    first = torch.tensor([dist.get_rank() if error is not None else world], dtype=torch.int64)
    dist.all_reduce(first, op=dist.ReduceOp.MIN, group=group)
    failed = int(first.item())
    if failed == world:
        return
    message = [describe(error) if error is not None and dist.get_rank() == failed else None]
    dist.broadcast_object_list(message, src=failed, group=group)
    raise kind(f"{what} failed on rank {failed}: {message[0]}") from error


def on_rank0(
    action: Callable[[], T],
    what: str,
    *,
    kind: type[CheckpointSaveFailed] = CheckpointSaveFailed,
    group: Any = None,
) -> T | None:
    """Run ``action`` on rank 0 only; every rank learns whether it succeeded (:func:`outcome`).

    Returns ``action``'s value on rank 0, None elsewhere. Collective: call it on every rank.
    """
    result: T | None = None
    error: Exception | None = None
    if rank() == 0:
        try:
            result = action()
        except Exception as exc:  # every rank must hear of it, or the others wait forever
            error = exc
    outcome(error, what, kind=kind, group=group)
    return result


def describe(error: BaseException) -> str:
    """One line: the exception's own text, or its type when it has none. For DCP's
    CheckpointException (a multi-line traceback per rank), the first failing rank's error."""
    failures = getattr(error, "failures", None)
    if isinstance(failures, dict) and failures:
        first, cause = min(failures.items())
        cause = cause[0] if isinstance(cause, tuple) else cause  # (exception, traceback)
        if isinstance(cause, BaseException):
            return f"rank {first}: {describe(cause)}"
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
