"""PyTorch: save and restore everything a run needs to continue exactly; stop all ranks together.

:func:`save_training_state` writes one file holding the model, optimizer, LR scheduler, grad
scaler, step, epoch, user extras and the RNG states (Python, NumPy when installed, torch CPU and
CUDA), atomically. :func:`load_training_state` puts all of it back, so that a run preempted and
resumed on CPU ends with bit-identical weights to one never interrupted (tested).

Everything is stored as tensors and plain Python values, so ``torch.load(weights_only=True)``
(the default since torch 2.6) reads it without allow-listing anything: NumPy's RNG state is
stored as a tensor plus ints, not as an ndarray.

Under ``torch.distributed`` only rank 0 writes; every rank then learns from one small
``all_reduce`` whether the write succeeded, so no rank returns before the file is durable and a
failed save raises on every rank instead of leaving the others waiting in a barrier.

Data-loader position: resume at ``state.step`` and skip what the run already consumed. A
shuffled ``DataLoader`` cannot be fast-forwarded without loading the skipped batches; use
:class:`ResumableSampler` (a permutation seeded by ``seed + epoch`` that starts at an offset).
Also give the ``DataLoader`` its own ``generator=torch.Generator()``: without one, every new
iterator draws its worker seed from the global torch RNG, and the iterator a resumed run creates
mid-epoch would shift every later dropout mask.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from runai_entry.training import dist as distributed
from runai_entry.training.atomic import atomic_write
from runai_entry.training.dist import agree, is_distributed, on_rank0
from runai_entry.training.errors import CheckpointFormatError, CheckpointMismatch
from runai_entry.training.stop import StopFlag

FORMAT = "runai-entry/training-state"
VERSION = 1


@dataclass
class TrainingState:
    """What :func:`load_training_state` restored besides the objects passed to it."""

    path: str
    step: int
    epoch: int
    extra: dict[str, Any] = field(default_factory=dict)


# -- distributed helpers --------------------------------------------------------------------------


#: This process's global rank (0.1.0's name here; :func:`runai_entry.training.dist.rank`).
rank = distributed.rank


def all_agree(value: bool, *, any_rank: bool) -> bool:
    """True if any (``any_rank=True``) or every rank passed True; one all_reduce of one int."""
    if any_rank:
        return agree(value)[0]
    return not agree(not value)[0]


class DistributedStop:
    """Makes every rank stop at the same step when any one of them received the stop signal.

    The kubelet signals every container, but inside a pod the signal may reach only some ranks
    (torchrun, a shell, or a launcher in between); a rank that exits alone leaves the others
    blocked in the next collective until the NCCL/gloo timeout (Lightning #20806). Call
    :meth:`should_stop` at the same point of every step on every rank; every ``every`` steps it
    runs one ``all_reduce`` of one int (MAX), and once the ranks agree the answer stays True
    without further collectives. Between checks it returns False even if this rank's flag is set,
    so that no rank leaves while the others still expect it.

    Without an initialised process group it is simply the local flag.
    """

    def __init__(self, flag: StopFlag, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, not {every}")
        self.flag = flag
        self.every = every
        self._calls = 0
        self._agreed = False

    def should_stop(self) -> bool:
        if self._agreed:
            return True
        self._calls += 1
        if not is_distributed():
            self._agreed = self.flag.should_stop()
        elif self._calls % self.every == 0:
            self._agreed = all_agree(self.flag.should_stop(), any_rank=True)
        return self._agreed

    __bool__ = should_stop


def any_rank(value: bool) -> bool:
    """True on every rank when ``value`` is True on any rank (one all_reduce of one int).

    For decisions each rank makes from its own clock, such as ``Periodic(every_seconds=...)``:
    if one rank finds a save due and another does not, the first enters the save's collective
    while the second is already in the next step's, and both hang. Agree first::

        if stop.should_stop() or any_rank(periodic.due(step)):

    Without an initialised process group it returns ``value``.
    """
    return all_agree(value, any_rank=True)


def agree_to_stop(flag: StopFlag) -> bool:
    """One-shot :class:`DistributedStop`: True on every rank if any rank's flag is set."""
    return all_agree(flag.should_stop(), any_rank=True)


# -- RNG states -----------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python, NumPy (if imported anywhere), torch CPU and CUDA RNG states, as tensors and ints."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    # Only if NumPy is already in use: importing it just to save its RNG would cost the import.
    np = sys.modules.get("numpy")
    if np is not None:
        s = np.random.get_state(legacy=False)
        state["numpy"] = {
            "bit_generator": s["bit_generator"],
            "key": torch.from_numpy(s["state"]["key"].astype("int64")),
            "pos": int(s["state"]["pos"]),
            "has_gauss": int(s["has_gauss"]),
            "gauss": float(s["gauss"]),
        }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state`; parts absent from ``state`` are left alone."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    # clone(): set_rng_state reads the storage from its start, ignoring a view's offset (a
    # segfault with the views into one buffer that tensorfile.load returns).
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu().clone())
    if "numpy" in state:
        import numpy as np

        s = state["numpy"]
        np.random.set_state(
            (
                s["bit_generator"],
                s["key"].numpy().astype(np.uint32),  # astype copies
                s["pos"],
                s["has_gauss"],
                s["gauss"],
            )
        )
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        # A different GPU count on resume: restore what matches rather than fail the resume.
        for index in range(min(len(saved), torch.cuda.device_count())):
            torch.cuda.set_rng_state(saved[index].cpu().clone(), index)


# -- save / load ----------------------------------------------------------------------------------


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under DistributedDataParallel / DataParallel / ``torch.compile`` wrappers.

    Saving the bare module keeps state-dict keys free of ``module.`` and ``_orig_mod.`` prefixes,
    so a checkpoint loads into a wrapped or unwrapped model, on any number of ranks.
    """
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def training_state_dict(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    step: int,
    epoch: int = 0,
    extra: Mapping[str, Any] | None = None,
    rng: bool = True,
) -> dict[str, Any]:
    """The dictionary :func:`save_training_state` writes (for custom writers, e.g. DCP)."""
    state: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(step),
        "epoch": int(epoch),
        "model": unwrap(model).state_dict(),
        "extra": dict(extra or {}),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if rng:
        state["rng"] = rng_state()
    return state


def save_training_state(
    path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    step: int,
    epoch: int = 0,
    extra: Mapping[str, Any] | None = None,
    rng: bool = True,
) -> str | None:
    """Write the full training state to ``path`` atomically; rank 0 only under DDP.

    Call it on every rank at the same point (it ends in one collective when distributed).
    Returns the path on the rank that wrote, None on the others. ``rng`` saves rank 0's RNG
    states: for bit-exact multi-rank resume, save each rank's RNG in ``extra`` yourself.
    Raises :class:`CheckpointSaveFailed` on every rank, with rank 0's error, when rank 0 failed.
    """
    def write() -> str:
        state = training_state_dict(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            step=step,
            epoch=epoch,
            extra=extra,
            rng=rng,
        )
        return atomic_write(path, lambda tmp: torch.save(state, tmp))

    return on_rank0(write, f"saving {os.fspath(path)!r}")


def load_training_state(
    path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    rng: bool = True,
    strict: bool = True,
    weights_only: bool = True,
) -> TrainingState:
    """Restore what :func:`save_training_state` wrote into the given objects; every rank reads.

    The file is read onto the CPU (``map_location="cpu"``): a checkpoint written on ``cuda:0``
    then loads on any rank and any host, and ``load_state_dict`` copies into the model's own
    device. Build the optimizer over the model's parameters *after* moving the model.

    ``weights_only=True`` (torch's safe unpickler) reads everything this module writes; pass
    False only for ``extra`` values that are arbitrary Python objects, and only for files you
    trust: unpickling runs code.
    """
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=weights_only)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointFormatError(f"{os.fspath(path)!r} was not written by save_training_state")
    unwrap(model).load_state_dict(state["model"], strict=strict)
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if target is None:
            continue
        if name not in state:
            raise CheckpointMismatch(f"{os.fspath(path)!r} holds no {name} state")
        target.load_state_dict(state[name])
    if rng and "rng" in state:
        set_rng_state(state["rng"])
    return TrainingState(
        path=os.fspath(path), step=state["step"], epoch=state["epoch"], extra=state["extra"]
    )


# -- data-loader position -------------------------------------------------------------------------


class ResumableSampler(torch.utils.data.Sampler[int]):
    """A shuffling sampler that can start mid-epoch, for exact resume without replaying data.

    Epoch ``e`` is the permutation drawn from a generator seeded with ``seed + e`` (the same
    scheme as ``DistributedSampler``), so it depends on nothing but the epoch. With ``num_replicas``
    and ``rank`` it yields this rank's share (``perm[rank::num_replicas]``, padded so every rank
    gets the same count). :meth:`set_position` sets the epoch and how many of this rank's samples
    were already consumed; the next iteration yields only the rest, after which the start resets
    to 0 for the following epoch.

    It also knows its own position, for :class:`~runai_entry.training.checkpointer.Checkpointer`:
    :meth:`state_dict` is the epoch and the count of this rank's samples handed out so far, and a
    pass iterated to its end moves on to the next epoch by itself (``set_epoch`` still sets it).
    The count is exact with ``num_workers=0``; worker processes fetch batches ahead, so with
    workers use a loader that tracks its own position (torchdata's ``StatefulDataLoader``).
    """

    def __init__(
        self,
        length: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0
        self._position: int | None = None  # samples handed out in the pass under way

    def set_epoch(self, epoch: int) -> None:
        self.set_position(epoch, 0)

    def set_position(self, epoch: int, start: int) -> None:
        """Next iteration: epoch ``epoch``, skipping the first ``start`` samples of this rank."""
        if start < 0:
            raise ValueError(f"start must be >= 0, not {start}")
        self.epoch, self.start = epoch, start
        self._position = None

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order: list[int] = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        per_rank = -(-self.length // self.num_replicas)  # ceil
        padded = order + order[: per_rank * self.num_replicas - self.length]
        return padded[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        indices = self._indices()[self.start :]
        first, self.start = self.start, 0
        self._position = first
        return self._yield(indices)

    def _yield(self, indices: list[int]) -> Iterator[int]:
        epoch = self.epoch
        for index in indices:
            # Counted before it is handed out: a batch sampler that took k samples has them.
            if self.epoch == epoch and self._position is not None:
                self._position += 1
            yield index
        if self.epoch == epoch and self._position is not None:  # not reset meanwhile
            self.epoch, self._position = epoch + 1, None

    def state_dict(self) -> dict[str, int]:
        """Where the next sample comes from: ``{"epoch": e, "start": n}``."""
        if self._position is None:
            return {"epoch": self.epoch, "start": self.start}
        return {"epoch": self.epoch, "start": self._position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.set_position(int(state["epoch"]), int(state["start"]))

    def __len__(self) -> int:
        return -(-self.length // self.num_replicas) - self.start
