"""Sharded checkpoints with torch.distributed.checkpoint (DCP), given their final name atomically.

DCP writes one file per rank and, last, a ``.metadata`` file; runai-entry's discovery counts a
DCP directory complete when ``.metadata`` is there. A save killed midway still leaves ``*.distcp``
files under the final name, and a second save to that name mixes new shards with old ones. Here
every rank writes into a hidden temporary directory (discovery never looks at hidden names), and
once DCP has finished — its last collective returns after the coordinator wrote ``.metadata`` and
every rank's files were fsync'ed — rank 0 renames the directory into place and fsyncs the parent.
The final name only ever holds a complete checkpoint.

The Checkpointer's shards are written raw by :class:`~runai_entry.training._io.dcpio.RawWriter`
(with ``O_DIRECT`` from an :class:`~runai_entry.training._io.dcpio.AlignedStaging` copy when given
one); :func:`save_sharded_training_state` and :func:`save_sharded` without ``raw`` keep torch's own
layout, which any ``dcp.load`` reads. :func:`load_sharded` reads both
(:class:`RawReader`, public here); torch's plain ``dcp.load(state, checkpoint_id=path)``
refuses raw entries by name: pass ``storage_reader=RawReader(path)``.

For an FSDP or tensor-parallel model, pass the state from
``torch.distributed.checkpoint.state_dict.get_state_dict`` (what :func:`save_sharded_training_state`
does); each rank then writes only its shards, and a different world size can load them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from typing import Any

import torch
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from runai_entry.training._io.dcpio import AlignedStaging, CachingPlanner, RawReader, RawWriter
from runai_entry.training.atomic import PruneResult, fsync_directory, plan_retention
from runai_entry.training.dist import on_rank0, outcome

#: Every rank must name the temporary directory alike, so the name is derived from the final
#: one, not random; a leftover from a save that was killed is removed before the next.
TEMP_PREFIX = ".runai-dcp-tmp."
_OLD_PREFIX = ".runai-dcp-old."


def save_sharded(
    path: str | os.PathLike[str],
    state: dict[str, Any],
    *,
    before_publish: Callable[[str], object] | None = None,
    group: Any = None,
    staging: AlignedStaging | None = None,
    raw: bool = False,
) -> str:
    """Save ``state`` with DCP under the directory ``path``, atomically. Call on every rank.

    ``before_publish(temporary_directory)`` runs on every rank once the shards are written, to
    add files of its own (the Checkpointer's per-rank state); they are published with the shards.
    ``group``: the process group for every collective of the save (a background writer passes
    its own gloo group); None: the default group for DCP, the library's CPU group for the rest.
    ``raw``: tensors written raw (:class:`~runai_entry.training._io.dcpio.RawWriter`, what the
    Checkpointer writes: a fraction of the CPU beside training), which torch's plain reader
    refuses; False: torch's own layout, which any ``dcp.load`` reads. ``staging`` (raw only):
    the one that staged ``state``, whose tensors then go to the disk with O_DIRECT.
    Any failure raises :class:`CheckpointSaveFailed` on every rank, with the first failing
    rank's error, and leaves the final name as it was.
    """
    final = os.fspath(path).rstrip("/")
    parent, name = os.path.split(final)
    parent = parent or "."
    tmp = os.path.join(parent, TEMP_PREFIX + name)

    def prepare() -> None:
        _remove_tree(tmp)
        os.makedirs(tmp)

    # Also the barrier: nobody writes before the directory exists.
    on_rank0(prepare, f"preparing {tmp!r}", group=group)
    error: BaseException | None = None
    try:
        # A staging buffer is reused from save to save of one state: so is its plan.
        planner = CachingPlanner(staging.plan_key) if staging is not None else None
        writer = RawWriter(tmp, staging) if raw or staging is not None else None
        dcp_save(state, checkpoint_id=tmp, storage_writer=writer, process_group=group,
                 planner=planner)
        if before_publish is not None:
            before_publish(tmp)
    # DCP raises its CheckpointException (a BaseException) on every rank alike; our own file
    # fails on one rank only.
    except (Exception, CheckpointException) as exc:
        error = exc
    # Every rank's shards and files are in (or the save failed everywhere) before the rename.
    outcome(error, f"saving {final!r}", group=group)
    # Nobody returns before the final name exists.
    on_rank0(lambda: _publish(tmp, final, parent), f"publishing {final!r}", group=group)
    return final


def _publish(tmp: str, final: str, parent: str) -> None:
    fsync_directory(tmp)
    if os.path.lexists(final):
        # A directory cannot replace a non-empty one in one rename: move the old aside first.
        # Between the two renames the name is briefly absent, never torn.
        old = os.path.join(parent, _OLD_PREFIX + os.path.basename(final))
        _remove_tree(old)
        os.rename(final, old)
        os.rename(tmp, final)
        fsync_directory(parent)
        _remove_tree(old)
    else:
        os.rename(tmp, final)
        fsync_directory(parent)


def _remove_tree(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # nothing left over: the usual case
        shutil.rmtree(path)


def remove_leftovers(directory: str | os.PathLike[str], prefix: str) -> list[str]:
    """Remove the temporary and set-aside directories of saves named ``<prefix>...`` that were
    killed midway; their names. Only when no save of these names can be running (at start-up):
    unlike a temporary file's, their name carries no writer to tell a live one from a dead one.
    """
    removed = []
    for name in os.listdir(directory):
        if name.startswith((TEMP_PREFIX + prefix, _OLD_PREFIX + prefix)):
            _remove_tree(os.path.join(directory, name))
            removed.append(name)
    return removed


def prune_sharded(
    directory: str | os.PathLike[str], keep: int, pattern: str | None = None, *,
    protect: str | os.PathLike[str] | None = None,
) -> PruneResult:
    """Delete all but the ``keep`` newest complete checkpoints' DCP directories.

    :func:`runai_entry.training.atomic.prune` deletes files only. What is kept is decided as
    there (:func:`~runai_entry.training.atomic.plan_retention`: verified, ``protect`` never
    deleted), so the newest complete checkpoint is never a candidate. Each directory is first
    renamed to a hidden name, then removed: a removal cut short never leaves a partial
    directory under a final name.
    """
    result, older = plan_retention(directory, keep, pattern, protect)
    for candidate in older:
        if candidate.layout != "dcp":
            continue
        old = os.path.join(os.fspath(directory), _OLD_PREFIX + candidate.name)
        try:
            os.rename(candidate.path, old)
        except FileNotFoundError:  # another process pruned it first
            result.vanished.append(candidate.name)
            continue
        _remove_tree(old)
        result.deleted.append(candidate.name)
    if result.deleted:
        fsync_directory(directory)
    return result


def load_sharded(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Load the DCP checkpoint at ``path`` (raw or torch's layout) into ``state``, in place.
    Call on every rank."""
    dcp_load(state, storage_reader=RawReader(os.fspath(path)))


def save_sharded_training_state(
    path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int,
    epoch: int = 0,
) -> str:
    """Model, optimizer, step and epoch as a DCP checkpoint; every rank writes its own shards.

    RNG states are per rank and not saved here: for bit-exact resume of a sharded run, keep
    them yourself (``runai_entry.training.continuity.rng_state``) per rank.
    """
    model_state, optim_state = get_state_dict(model, optimizer if optimizer is not None else [])
    state = {"model": model_state, "optimizer": optim_state,
             "progress": {"step": step, "epoch": epoch}}
    return save_sharded(path, state)


def load_sharded_training_state(
    path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[int, int]:
    """Restore what :func:`save_sharded_training_state` wrote; returns ``(step, epoch)``."""
    optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer] = (
        optimizer if optimizer is not None else []
    )
    model_state, optim_state = get_state_dict(model, optimizers)
    progress = {"step": 0, "epoch": 0}
    state: dict[str, Any] = {"model": model_state, "optimizer": optim_state, "progress": progress}
    load_sharded(path, state)  # in place: tensors are filled, plain values replaced in the dicts
    set_state_dict(model, optimizers, model_state_dict=model_state, optim_state_dict=optim_state)
    return int(state["progress"]["step"]), int(state["progress"]["epoch"])


__all__ = [
    "TEMP_PREFIX",
    "RawReader",
    "load_sharded",
    "load_sharded_training_state",
    "prune_sharded",
    "remove_leftovers",
    "save_sharded",
    "save_sharded_training_state",
]
