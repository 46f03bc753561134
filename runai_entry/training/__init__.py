"""The training-side library: stop on preemption, save checkpoints that survive a kill, resume.

Importing this package imports nothing heavy (no torch, numpy, keras, click, psutil or
structlog): names are resolved on first use. A PyTorch loop needs one object::

    from runai_entry.training import Checkpointer      # imports torch when first used

The face is ``__all__`` (pinned by tests/training/test_exported_members.py: a new public name is
a deliberate edit). Keras users take ``preemption``, ``resume_path`` and ``atomic_write``
(:mod:`.keras` wraps them). The layer the Checkpointer is built on stays public in its modules:
:mod:`.stop`, :mod:`.atomic`, :mod:`.schedule`, :mod:`.resume`, :mod:`.heartbeat`,
:mod:`.continuity`, :mod:`.dist`, :mod:`.dcp`, :mod:`.errors`; its I/O machinery is the private
``_io``. Names and module paths of 0.1.0 and 0.2 that moved still resolve, with a
``DeprecationWarning`` (:mod:`.legacy`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runai_entry.training import legacy as _legacy

# Bound now, not on first use: the submodule of the same name, once anything imported it (the
# stop flag and the Checkpointer do), would be what ``runai_entry.training.heartbeat`` names,
# and ``heartbeat(step)`` a TypeError. Standard library only, as this package's import must be.
from runai_entry.training.heartbeat import heartbeat, saving

# name -> submodule. Only checkpointer and continuity import torch, and only when asked for.
_EXPORTS = {
    "Checkpointer": "checkpointer",
    "StopFlag": "stop",
    "preemption": "stop",
    "atomic_write": "atomic",
    "resume_path": "resume",
    "attempt": "resume",
    "checkpoint_dir": "resume",
    "heartbeat": "heartbeat",  # bound above; for loops without the Checkpointer
    "saving": "heartbeat",
    "ResumableSampler": "continuity",  # the data position, without worker processes
    "CheckpointError": "errors",
    "CheckpointSaveFailed": "errors",
    "CheckpointWriteFailed": "errors",
    "CheckpointFormatError": "errors",
    "CheckpointMismatch": "errors",
}

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatch",
    "CheckpointSaveFailed",
    "CheckpointWriteFailed",
    "Checkpointer",
    "ResumableSampler",
    "StopFlag",
    "atomic_write",
    "attempt",
    "checkpoint_dir",
    "heartbeat",
    "preemption",
    "resume_path",
    "saving",
]

_legacy.install()  # the old module paths (runai_entry.training.tensorfile, ...) still import

if TYPE_CHECKING:  # names for type checkers and IDEs; at run time __getattr__ imports them
    from runai_entry.training.atomic import atomic_write as atomic_write
    from runai_entry.training.checkpointer import Checkpointer as Checkpointer
    from runai_entry.training.continuity import ResumableSampler as ResumableSampler
    from runai_entry.training.errors import CheckpointError as CheckpointError
    from runai_entry.training.errors import CheckpointFormatError as CheckpointFormatError
    from runai_entry.training.errors import CheckpointMismatch as CheckpointMismatch
    from runai_entry.training.errors import CheckpointSaveFailed as CheckpointSaveFailed
    from runai_entry.training.errors import CheckpointWriteFailed as CheckpointWriteFailed
    from runai_entry.training.resume import attempt as attempt
    from runai_entry.training.resume import checkpoint_dir as checkpoint_dir
    from runai_entry.training.resume import resume_path as resume_path
    from runai_entry.training.stop import StopFlag as StopFlag
    from runai_entry.training.stop import preemption as preemption


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:  # 0.1.0's lower-layer names: they warn, and are not cached here
        return _legacy.facade_name(name)
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
