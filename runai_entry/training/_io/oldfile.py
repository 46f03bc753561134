"""0.1.0's one-file checkpoint (a ``torch.save`` of a dict), read back.

Writing these files is deprecated (:mod:`runai_entry.training.legacy`); reading them is not: the
Checkpointer resumes from one a job wrote before it moved on, so the reader lives here, where it
outlives the legacy module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runai_entry.training._io.tensorfile import FORMAT

if TYPE_CHECKING:
    import torch

__all__ = ["FORMAT", "VERSION", "TrainingState", "read_training_state"]

#: The version of the one-file format (its ``format`` field is tensorfile's ``FORMAT``).
VERSION = 1


@dataclass
class TrainingState:
    """What :func:`read_training_state` restored besides the objects passed to it."""

    path: str
    step: int
    epoch: int
    extra: dict[str, Any] = field(default_factory=dict)


def read_training_state(
    path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    rng: bool = True,
    strict: bool = True,
    weights_only: bool = True,
) -> TrainingState:
    """Restore what 0.1.0's ``save_training_state`` wrote into the given objects; every rank
    reads, onto the CPU. ``weights_only=False`` unpickles arbitrary objects: only for trusted
    files."""
    import torch

    from runai_entry.training.continuity import set_rng_state, unwrap
    from runai_entry.training.errors import CheckpointFormatError, CheckpointMismatch

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
    return TrainingState(path=os.fspath(path), step=state["step"], epoch=state["epoch"],
                         extra=state["extra"])
