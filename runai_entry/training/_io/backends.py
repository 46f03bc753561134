"""The Checkpointer's two kinds of checkpoint behind one protocol: a file, and a DCP directory.

:class:`Backend` is what the Checkpointer asks of each: a name for a step, the glob of its own
names, a :class:`Snapshot` taken on the training thread (the copy that makes the save
consistent) whose ``write`` runs either at once or on the background writer, a ``load``, and
retention. The Checkpointer owns everything else (schedule, agreement, the writer, the budget),
so both backends have the same semantics by construction.

* :class:`FileBackend`: one file (:mod:`.tensorfile`) written by rank 0, holding every rank's
  RNG states and data position; for replicated states (one process, DDP).
* :class:`DcpBackend`: torch.distributed.checkpoint, each rank writing its shards (FSDP, tensor
  parallel), plus one small file per rank with everything else, published together as one directory
  (:mod:`runai_entry.training.dcp`). An async save stages the shards in one aligned host buffer
  (reused, in huge pages; pinned on CUDA: :class:`.dcpio.AlignedStaging`) and writes them raw with
  ``O_DIRECT`` (:class:`.dcpio.RawWriter`; torch's writer, a ``torch.save`` per tensor into the
  page cache, takes far more CPU from the training beside it) on the background writer with a gloo
  group of its own, so its collectives never interleave with the training thread's. Not torch's
  ``dcp.async_save``: its future ends when the shards are written, and the per-rank file and the
  rename that publishes the directory must follow on the same writer, in order, on every rank; its
  writer process was measured no kinder to training than this thread, with a longer stall
  (docs/benchmarks.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from runai_entry.core.errors import ConfigError
from runai_entry.training._io import tensorfile
from runai_entry.training._io.fence import Fence, Torn
from runai_entry.training._io.staging import Staging
from runai_entry.training.atomic import PruneResult, atomic_write, clean_stale_temps, prune
from runai_entry.training.continuity import rng_state, set_rng_state, unwrap
from runai_entry.training.dist import OwnGroup, gather_objects, rank
from runai_entry.training.errors import CheckpointMismatch

__all__ = ["OBJECTS", "SUFFIX", "Backend", "DcpBackend", "FileBackend", "Parts", "Snapshot",
           "is_sharded"]

SUFFIX = ".safetensors"
#: restore()'s own keywords besides the model and the sampler, saved in this order, before the
#: named objects.
OBJECTS = ("optimizer", "scheduler", "scaler")


class Parts:
    """What a checkpoint holds: the objects ``restore()`` registered (its keywords and any named
    ones), and each rank's own state (RNG, the sampler's position)."""

    def __init__(self, objects: dict[str, Any], named: dict[str, Any] | None = None) -> None:
        for name, value in (named or {}).items():
            _check_named(name, value)
        self.objects = {**objects, **(named or {})}
        #: The objects saved once, like the model (rank 0's): the optimizer, scheduler and
        #: scaler, then the named objects, in the order given. Not the sampler: it is per rank.
        self.shared = tuple(k for k in self.objects if k not in ("model", "sampler"))

    def optimizers(self) -> list[Any]:
        """Every torch.optim optimizer among the objects (what background_copy must fence)."""
        return [self.objects[k] for k in self.shared
                if hasattr(self.objects[k], "register_step_pre_hook")]

    def fixed(self, path: str) -> dict[str, Any]:
        """The optimizer, scheduler and scaler, for a 0.1.0 file (it holds nothing else: a named
        object is a mismatch)."""
        named = [k for k in self.shared if k not in OBJECTS and self.objects[k] is not None]
        if named:
            raise CheckpointMismatch(f"{path!r} (0.1.0's format) holds no {named[0]} state to "
                                     "restore")
        return {k: self.objects[k] for k in OBJECTS}

    def mine(self) -> dict[str, Any]:
        """This rank's RNG states and data position."""
        mine: dict[str, Any] = {"rng": rng_state()}
        sampler = self.objects.get("sampler")
        if sampler is not None:
            mine["sampler"] = sampler.state_dict()
        return mine

    def state(self, step: int, ranks: list[Any], extra: dict[str, Any],
              names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The saved state; ``names`` given: only those objects, and no model."""
        state: dict[str, Any] = {"step": int(step), "ranks": ranks, "extra": dict(extra)}
        if names is None:
            state["model"] = unwrap(self.objects["model"]).state_dict()
        for name in self.shared if names is None else names:
            if self.objects[name] is not None:
                state[name] = self.objects[name].state_dict()
        return state

    def stepped(self) -> set[int]:
        """The storages (addresses) that only an ``optimizer.step()`` changes: the model's
        parameters, and every optimizer's parameters and state; see :mod:`.fence`."""
        tensors: list[torch.Tensor] = list(unwrap(self.objects["model"]).parameters())
        for optimizer in self.optimizers():
            tensors += [p for group in optimizer.param_groups for p in group["params"]]
            tensors += [value for state in optimizer.state.values() for value in state.values()
                        if isinstance(value, torch.Tensor)]
        return {t.untyped_storage().data_ptr() for t in tensors}

    def apply(self, state: dict[str, Any], path: str, names: tuple[str, ...] | None = None,
              ) -> dict[str, Any]:
        """Load ``state`` (not the model) into the objects (``names``: only those); returns
        the saved ``extra``."""
        for name in self.shared if names is None else names:
            target = self.objects[name]
            if target is None:
                continue
            if name not in state:
                raise CheckpointMismatch(f"{path!r} holds no {name} state to restore")
            target.load_state_dict(state[name])
        # A different world size: each rank takes the state of the rank with its number if the
        # old run had one, else rank 0's; exactness is then not to be expected anyway.
        ranks = state["ranks"]
        mine = ranks[rank()] if rank() < len(ranks) else ranks[0]
        set_rng_state(mine["rng"])
        sampler = self.objects["sampler"]
        if sampler is not None and "sampler" in mine:
            sampler.load_state_dict(own_storage(mine["sampler"]))
        return dict(state.get("extra", {}))


#: The keys a checkpoint itself uses beside the objects: no named object may take them.
_RESERVED = ("step", "ranks", "extra")


def _check_named(name: str, value: Any) -> None:
    """A named object of ``restore()``: one line on what is wrong with it."""
    if name in _RESERVED:
        raise ConfigError(f"restore({name}=...): the checkpoint itself uses the name {name!r}; "
                          "pass the object under another name")
    if value is None:
        return
    if isinstance(value, (torch.utils.data.DataLoader, torch.utils.data.Sampler)):
        raise ConfigError(f"restore({name}=...) is a data loader or sampler: pass it as sampler=, "
                          "the one object saved per rank (a data position differs by rank)")
    if not (callable(getattr(value, "state_dict", None))
            and callable(getattr(value, "load_state_dict", None))):
        raise ConfigError(f"restore({name}=...) needs an object with state_dict() and "
                          f"load_state_dict(), not a {type(value).__name__}")


def own_storage(value: Any) -> Any:
    """``value`` with each tensor that is a view into a larger storage copied into its own.

    tensorfile hands back small tensors as views into one read buffer, and a few readers ignore
    a view's storage offset: ``Generator.set_state`` reads the buffer from its start, and a
    StatefulDataLoader's restored sampler then segfaults at its first draw. A data position is
    small: the copies cost nothing.
    """
    if isinstance(value, torch.Tensor):
        return value.clone() if value.storage_offset() else value
    if isinstance(value, dict):
        return {k: own_storage(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(own_storage(v) for v in value)
    return value


@dataclass
class Snapshot:
    """A save, copied on the training thread; ``write`` is this rank's part of writing and
    publishing it (None: this rank has nothing to write)."""

    nbytes: int
    write: Callable[[], None] | None
    #: A one-time remark about the copy (staging fell back to pageable memory).
    warning: str | None = None


class Backend(Protocol):
    """One kind of checkpoint in ``directory``, named ``<prefix><step:08d>[suffix]``."""

    directory: str
    prefix: str
    keep: int
    resumed_from: str | None
    remark: str | None

    def name(self, step: int) -> str:
        """The entry name of ``step``'s checkpoint."""

    def pattern(self) -> str:
        """The glob of this backend's own names (discovery and retention see only those)."""

    def clean(self) -> None:
        """On rank 0 at restore(), before any save: remove what writers killed earlier left."""

    def reserve(self, parts: Parts, extra: dict[str, Any]) -> None:
        """Before the first async save: allocate what its copy needs, once. Every rank."""

    def snapshot(self, parts: Parts, step: int, extra: dict[str, Any], *, async_write: bool,
                 ) -> Snapshot:
        """Copy what ``step`` saves, on the training thread. Collective: every rank."""

    def load(self, path: str, parts: Parts) -> tuple[int, dict[str, Any]]:
        """Load ``path`` into ``parts``; the step and the saved ``extra``. Every rank."""


class _Named:
    def __init__(self, directory: str, prefix: str, keep: int, suffix: str) -> None:
        self.directory, self.prefix, self.keep, self.suffix = directory, prefix, keep, suffix
        #: The checkpoint restore() loaded (set by the Checkpointer): retention never deletes it.
        self.resumed_from: str | None = None
        #: What retention left and why (entries that fail verification), for the Checkpointer
        #: to say once; set at most once.
        self.remark: str | None = None

    def retain(self, result: PruneResult) -> None:
        """Note what a retention pass left, the first time it left something."""
        if self.remark is None:
            self.remark = result.remark(self.directory)

    def name(self, step: int) -> str:
        return f"{self.prefix}{step:08d}{self.suffix}"

    def pattern(self) -> str:
        # Not the suffix: a 0.1.0 file of the same prefix (step-N.pt) is one of ours too.
        return f"{self.prefix}[0-9]*"


class FileBackend(_Named):
    """One file per checkpoint, written by rank 0 from a host copy of the state."""

    def __init__(self, directory: str, prefix: str, keep: int,
                 pinned_limit: int | None = None, fence: Fence | None = None) -> None:
        super().__init__(directory, prefix, keep, SUFFIX)
        self.staging = Staging(pinned_limit)
        #: With ``background_copy=True``: an async save copies what only an optimizer.step()
        #: changes behind the training thread, and the fence holds the next step for it.
        self.fence = fence

    def clean(self) -> None:
        clean_stale_temps(self.directory)

    def reserve(self, parts: Parts, extra: dict[str, Any]) -> None:
        """Allocate (and touch) the host copy now, at start-up, not in the first save's stall."""
        if rank() == 0:
            p = tensorfile.plan(parts.state(0, [parts.mine()], extra))
            self.staging.reserve(p.total_bytes, pinned=p.on_cuda)

    def snapshot(self, parts: Parts, step: int, extra: dict[str, Any], *, async_write: bool,
                 ) -> Snapshot:
        ranks = gather_objects(parts.mine())  # every rank's RNG and position, to rank 0
        if rank() != 0:
            return Snapshot(0, None)
        p = tensorfile.plan(parts.state(step, ranks, extra))
        staging = self.staging
        fence = self.fence if async_write and self.fence is not None and self.fence.enabled \
            else None
        if fence is not None:
            stepped = parts.stepped()
            behind = [i for i, e in enumerate(p.entries)
                      if e.nbytes and e.tensor.untyped_storage().data_ptr() in stepped]
            staging.fill(p, behind=behind)
            fence.arm([p.entries[i].tensor for i in behind], [p.entries[i].name for i in behind],
                      staging.settle)
        else:
            # Async: the copy is the snapshot, done before step() returns (on CUDA: launched,
            # and ordered before the next step's kernels on the same stream). Blocking on CPU:
            # copied in a helper thread while this one writes what is already copied.
            staging.fill(p, behind=not async_write and not p.on_cuda)
        path = os.path.join(self.directory, self.name(step))

        def write_whole(tmp: str) -> None:
            tensorfile.write(tmp, p, staging)
            if fence is not None and (torn := fence.verdict()):
                raise Torn(torn)  # atomic_write removes the file: never published

        def write() -> None:
            atomic_write(path, write_whole)
            self.retain(prune(self.directory, keep=self.keep, pattern=self.pattern(),
                              protect=self.resumed_from))

        return Snapshot(p.total_bytes, write, staging.warning)

    def load(self, path: str, parts: Parts) -> tuple[int, dict[str, Any]]:
        # Read into the live tensors, so load_state_dict copies nothing; rank 0 reads the file
        # and broadcasts it to the other ranks' tensors (storage is read once per job).
        model = unwrap(parts.objects["model"])
        live = {k: parts.objects[k].state_dict() for k in parts.shared
                if parts.objects[k] is not None}
        state = tensorfile.load(path, into={"model": model.state_dict(), **live},
                                exact=("model",), replicated=True)
        model.load_state_dict(state["model"])
        return int(state["step"]), parts.apply(state, path)



class DcpBackend(_Named):
    """A directory per checkpoint: every rank's shards, and a small file per rank."""

    def __init__(self, directory: str, prefix: str, keep: int) -> None:
        super().__init__(directory, prefix, keep, "")
        self._staging: Any = None  # a dcpio.AlignedStaging from the first async save on
        self._extras = Staging()
        # The background writer's own group: its collectives run while the training thread
        # runs its own, and two threads' collectives on one group would pair up wrongly.
        self._group = OwnGroup(lambda default: True)

    def clean(self) -> None:
        from runai_entry.training.dcp import remove_leftovers

        clean_stale_temps(self.directory)
        remove_leftovers(self.directory, self.prefix)

    def reserve(self, parts: Parts, extra: dict[str, Any]) -> None:
        self._group.get()  # made up front, where every rank restores

    def snapshot(self, parts: Parts, step: int, extra: dict[str, Any], *, async_write: bool,
                 ) -> Snapshot:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        from runai_entry.training.dcp import prune_sharded, save_sharded

        model, optimizer = parts.objects["model"], parts.objects["optimizer"]
        model_state, optim_state = get_state_dict(model, optimizer or [])
        shards: dict[str, Any] = {"model": model_state, "optimizer": optim_state}
        # Everything but the shards is small and per rank: each rank writes its own file into
        # the temporary directory, published with the shards or not at all.
        p = tensorfile.plan(parts.state(step, [parts.mine()], extra, names=_beside(parts)))
        staging: Staging | None = None
        if async_write:
            if self._staging is None:
                from runai_entry.training._io.dcpio import AlignedStaging

                self._staging = AlignedStaging()
            shards = self._staging.stage(shards)
            staging = self._extras
            staging.fill(p)
        own = f"rank-{rank():05d}{SUFFIX}"
        path = os.path.join(self.directory, self.name(step))
        group = self._group.get() if async_write else None

        def write() -> None:
            save_sharded(path, shards, group=group, raw=True,
                         staging=self._staging if async_write else None,
                         before_publish=lambda tmp: atomic_write(
                os.path.join(tmp, own), lambda t: tensorfile.write(t, p, staging)))
            if rank() == 0:
                self.retain(prune_sharded(self.directory, keep=self.keep,
                                          pattern=self.pattern(), protect=self.resumed_from))

        return Snapshot(_local_bytes(shards) + p.total_bytes, write)

    def load(self, path: str, parts: Parts) -> tuple[int, dict[str, Any]]:
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        from runai_entry.training.dcp import load_sharded

        model, optimizer = parts.objects["model"], parts.objects["optimizer"]
        model_state, optim_state = get_state_dict(model, optimizer or [])
        load_sharded(path, {"model": model_state, "optimizer": optim_state})
        set_state_dict(model, optimizer or [], model_state_dict=model_state,
                       optim_state_dict=optim_state)
        own = os.path.join(path, f"rank-{rank():05d}{SUFFIX}")
        if not os.path.exists(own):  # fewer ranks wrote it: see Parts.apply
            own = os.path.join(path, f"rank-{0:05d}{SUFFIX}")
        state = tensorfile.load(own)
        return int(state["step"]), parts.apply(state, path, names=_beside(parts))


def _beside(parts: Parts) -> tuple[str, ...]:
    """What a DCP checkpoint keeps in each rank's own file: all but the model and optimizer
    (the shards), so a named object is that rank's own."""
    return tuple(name for name in parts.shared if name != "optimizer")


def _local_bytes(value: Any) -> int:
    """Bytes of the tensors this rank holds in a (nested) state dict; a DTensor's local shard."""
    if isinstance(value, dict):
        return sum(_local_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_local_bytes(v) for v in value)
    if isinstance(value, torch.Tensor):
        local = value.to_local() if hasattr(value, "to_local") else value
        return int(local.numel() * local.element_size())
    return 0


def is_sharded(model: torch.nn.Module) -> bool:
    """True for an FSDP (1 or 2) or DTensor (tensor-parallel) model: one rank's ``state_dict()``
    does not hold it whole, so the file backend cannot save it."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        return True
    return any(isinstance(p, DTensor) for p in model.parameters())
