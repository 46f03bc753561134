"""Structured logs on stderr: JSON lines for a log shipper, or a console form for a person.

Every event carries ``logger="runai-entry"`` so it stands apart from the job's own output on the
same stream. Importing structlog costs more than all the rest of start-up, so :func:`configure`
is called after the job has been started, never before.
"""

from __future__ import annotations

import sys
from typing import Any

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class _Stderr:
    """A structlog logger that writes each event as a line on stderr.

    PrintLogger would do, but raises when the reader of stderr has gone (``runai-entry ... |
    head``): a supervisor must not die of its own logging while the job it guards runs on.
    """

    def msg(self, message: str) -> None:
        try:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
        except BrokenPipeError:  # nobody reads the logs any more: the job matters more
            pass

    debug = info = warning = error = critical = exception = msg


def configure(log_format: str, level: str) -> Any:
    """Configure structlog once and return the logger every module uses."""
    import structlog

    renderer: Any
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *args: _Stderr(),
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger().bind(logger="runai-entry")
