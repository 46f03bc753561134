"""The training-side library: stop on preemption, save checkpoints that survive a kill, resume.

Importing this package imports nothing heavy (no torch, numpy, keras, click, psutil or
structlog): names are resolved on first use. The framework helpers live in
:mod:`runai_entry.training.torch` and :mod:`runai_entry.training.keras`, which import their
framework.

    from runai_entry.training import preemption, atomic_write, prune, Periodic, resume_path
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> submodule; each submodule imports only the standard library and runai_entry.
_EXPORTS = {
    "StopFlag": "stop",
    "preemption": "stop",
    "parse_signal": "stop",
    "stop_signal_from_env": "stop",
    "stop_timeout_from_env": "stop",
    "atomic_write": "atomic",
    "atomic_open": "atomic",
    "atomic_write_bytes": "atomic",
    "prune": "atomic",
    "PruneResult": "atomic",
    "clean_stale_temps": "atomic",
    "is_temp_name": "atomic",
    "Periodic": "schedule",
    "resume_path": "resume",
    "attempt": "resume",
    "checkpoint_dir": "resume",
    "heartbeat": "heartbeat",
    "saving": "heartbeat",
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
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
