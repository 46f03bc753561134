"""The training library's face is a short, deliberate list (httpx's tests/test_exported_members).

A new public name is an edit of :data:`EXPORTED` below, made on purpose; the building blocks stay
public in their own modules, and 0.1.0's extra names resolve only with a DeprecationWarning
(tests/training/test_legacy.py).
"""

from __future__ import annotations

import runai_entry.training as training
from runai_entry.training import legacy

#: What a loop needs: the Checkpointer, the stop flag, where to resume from, the heartbeat for a
#: loop of its own, crash-safe writes, the data position, and the errors to catch.
EXPORTED = [
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


def test_all_is_pinned() -> None:
    """__all__ is exactly the pinned list, sorted, and the facade resolves nothing else quietly:
    every name it maps is in __all__."""
    assert training.__all__ == EXPORTED
    assert sorted(training._EXPORTS) == sorted(EXPORTED)


def test_every_exported_name_resolves_from_its_module() -> None:
    """Each name is its defining module's own object (one definition); dir() lists it."""
    import importlib

    for name in EXPORTED:
        module = importlib.import_module(f"runai_entry.training.{training._EXPORTS[name]}")
        assert getattr(training, name) is getattr(module, name)
    assert set(EXPORTED) <= set(dir(training))


def test_legacy_names_are_not_exported() -> None:
    """0.1.0's lower-layer names stay resolvable (with a warning) but are not part of the face."""
    assert not set(legacy.FACADE_NAMES) & set(EXPORTED)
