"""The training-side library: stop on preemption, save checkpoints that survive a kill, resume.

Importing this package imports nothing heavy (no torch, numpy, keras, click, psutil or
structlog): names are resolved on first use. A PyTorch loop needs one object::

    from runai_entry.training import Checkpointer      # imports torch when first used

Keras users take ``preemption``, ``resume_path`` and ``atomic_write``
(:mod:`runai_entry.training.keras` wraps them). The lower layer the Checkpointer is built on
stays public in its modules (:mod:`.stop`, :mod:`.atomic`, :mod:`.schedule`, :mod:`.resume`,
:mod:`.torch`, :mod:`.dcp`, :mod:`.tensorfile`), and its 0.1.0 names still resolve here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> submodule. Only checkpointer imports torch, and only when Checkpointer is asked for.
_EXPORTS = {
    "Checkpointer": "checkpointer",
    "StopFlag": "stop",
    "preemption": "stop",
    "atomic_write": "atomic",
    "resume_path": "resume",
    "attempt": "resume",
    "checkpoint_dir": "resume",
    "heartbeat": "heartbeat",  # for loops without the Checkpointer (it beats by itself)
    "saving": "heartbeat",
}
# 0.1.0 exported these too; they still resolve, but a loop needs none of them any more.
_LOWER_LAYER = {
    "parse_signal": "stop",
    "stop_signal_from_env": "stop",
    "stop_timeout_from_env": "stop",
    "atomic_open": "atomic",
    "atomic_write_bytes": "atomic",
    "prune": "atomic",
    "PruneResult": "atomic",
    "clean_stale_temps": "atomic",
    "is_temp_name": "atomic",
    "Periodic": "schedule",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # names for type checkers and IDEs; at run time __getattr__ imports them
    from runai_entry.training.atomic import PruneResult as PruneResult
    from runai_entry.training.atomic import atomic_open as atomic_open
    from runai_entry.training.atomic import atomic_write as atomic_write
    from runai_entry.training.atomic import atomic_write_bytes as atomic_write_bytes
    from runai_entry.training.atomic import clean_stale_temps as clean_stale_temps
    from runai_entry.training.atomic import is_temp_name as is_temp_name
    from runai_entry.training.atomic import prune as prune
    from runai_entry.training.checkpointer import Checkpointer as Checkpointer
    from runai_entry.training.heartbeat import heartbeat as heartbeat
    from runai_entry.training.heartbeat import saving as saving
    from runai_entry.training.resume import attempt as attempt
    from runai_entry.training.resume import checkpoint_dir as checkpoint_dir
    from runai_entry.training.resume import resume_path as resume_path
    from runai_entry.training.schedule import Periodic as Periodic
    from runai_entry.training.stop import StopFlag as StopFlag
    from runai_entry.training.stop import parse_signal as parse_signal
    from runai_entry.training.stop import preemption as preemption
    from runai_entry.training.stop import stop_signal_from_env as stop_signal_from_env
    from runai_entry.training.stop import stop_timeout_from_env as stop_timeout_from_env


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name) or _LOWER_LAYER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
