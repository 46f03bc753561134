"""What a resumed run needs to continue exactly where it stopped, not merely near it.

The Checkpointer saves, besides the model and the objects given to ``restore()``:

* every RNG state (:func:`rng_state`: Python, NumPy when in use, torch CPU and CUDA), per rank,
  so that dropout masks and shuffles after the resume are the ones the run would have drawn;
* the model's bare module (:func:`unwrap`), so a checkpoint loads into a wrapped or unwrapped
  model, on any number of ranks;
* the data position. A shuffled ``DataLoader`` cannot be fast-forwarded without loading the
  skipped batches; :class:`ResumableSampler` (a permutation seeded by ``seed + epoch`` that starts
  at an offset) knows where it is. Also give the ``DataLoader`` its own
  ``generator=torch.Generator()``: without one, every new iterator draws its worker seed from the
  global torch RNG, and the iterator a resumed run creates mid-epoch would shift every later
  dropout mask.

Everything is stored as tensors and plain Python values, so ``torch.load(weights_only=True)``
reads it without allow-listing anything: NumPy's RNG state is a tensor plus ints, not an ndarray.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = ["ResumableSampler", "rng_state", "set_rng_state", "unwrap"]


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


# -- the bare module ------------------------------------------------------------------------------


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
