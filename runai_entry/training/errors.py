"""The training library's checkpoint errors: one family, the same type on every rank.

A user writes ``except CheckpointError`` once and catches whatever the library raises about a
checkpoint, whichever rank it happened on and whichever backend wrote it. Each class also derives
from the builtin a caller of 0.1.0 caught (``RuntimeError`` for a failed save, ``ValueError`` for
a file that is not what it should be), so older ``except`` clauses keep working. Standard library
only: :mod:`runai_entry.training` must stay cheap to import.

Configuration mistakes (a bad ``keep``, a missing directory) are not checkpoint errors; they stay
:class:`~runai_entry.core.errors.ConfigError`.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatch",
    "CheckpointSaveFailed",
    "CheckpointWriteFailed",
]


class CheckpointError(Exception):
    """Base of every checkpoint error the training library raises."""


class CheckpointSaveFailed(CheckpointError, RuntimeError):
    """A save failed; raised on every rank, so none is left waiting in a collective."""


class CheckpointWriteFailed(CheckpointSaveFailed):
    """A (background) write failed on the rank that wrote it; raised on every rank."""


class CheckpointFormatError(CheckpointError, ValueError):
    """A file is not a checkpoint this library can read: truncated, foreign, or torn."""


class CheckpointMismatch(CheckpointError, ValueError):
    """A checkpoint does not fit what it is restored into: a missing part (no optimizer state),
    or a tensor of another name, shape or dtype. The message names the first difference."""
