"""What the training library says: records of the ``runai_entry.training`` logger, and one-time
advice through :mod:`warnings`. The callers speak on rank 0 only (every rank would say the same).

So a user routes or silences them with the standard API: a handler or a level on
``logging.getLogger("runai_entry.training")``, ``warnings.filterwarnings`` for the advice.

Until the application configures logging (no handler on the way from this logger to the root),
:class:`Fallback` shows the records on stderr as the library printed them before 0.3,
``runai-entry checkpointer: <line>``. Not :data:`logging.lastResort`: it shows warnings only,
and the lines a user asked for (the interval ``every_seconds="auto"`` chose, ``verbose=True``'s
saves) are INFO. Once the application has a handler, the records go there alone.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LOGGER = logging.getLogger("runai_entry.training")
#: What starts each line on stderr, and each advice's text (what tests and users grep for).
PREFIX = "runai-entry checkpointer: "
#: Frames in these files are the library's; a warning is attributed to the first frame outside.
_LIBRARY = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class Fallback(logging.Handler):
    """Shows a record on stderr while nothing else would: no other handler on the way from the
    record's logger to the root. sys.stderr is looked up at each record (as lastResort does),
    so a stream replaced later (pytest's capture, a redirect) is the one written to."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(PREFIX + "%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if _handled_elsewhere(LOGGER, self):
            return
        try:
            sys.stderr.write(self.format(record) + "\n")  # one write: ranks may share a pipe
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed or broken stderr: logging's own policy
            self.handleError(record)


def _handled_elsewhere(logger: logging.Logger, fallback: logging.Handler) -> bool:
    current: logging.Logger | None = logger
    while current is not None:
        if any(handler is not fallback for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def _install() -> None:
    if not any(isinstance(handler, Fallback) for handler in LOGGER.handlers):
        LOGGER.addHandler(Fallback())
    if LOGGER.level == logging.NOTSET:  # INFO is what verbose=True and the auto interval say;
        LOGGER.setLevel(logging.INFO)   # a level the application set first is kept


_install()


def say(line: str, level: int = logging.WARNING) -> None:
    """One line about what the library did or saw (a save waited, a checkpoint discarded)."""
    LOGGER.log(level, "%s", line)


def advise(line: str) -> None:
    """One-time advice (the stop budget is tight, pinned memory ran out): a ``UserWarning``
    attributed to the user's line that called into the library."""
    level, frame = 2, sys._getframe(1)  # 2: the caller of this function
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    warnings.warn(PREFIX + line, UserWarning, stacklevel=level)
