"""Structured logs on stderr: JSON lines for a log shipper, or a console form for a person.

Every event carries ``logger="runai-entry"`` so it stands apart from the job's own output on the
same stream. Both forms take the same calls, ``log.info("event", key=value, ...)``.

The console form is structlog's ConsoleRenderer. JSON lines — what every pod writes — come from
:class:`JsonLogger` below instead: importing structlog pulls in rich, asyncio and ~190 modules,
memory that each pod would carry for nothing and that the kernel must tear down before our exit
status reaches the platform (the exit latency with and without it: docs/benchmarks.md).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import MutableMapping
from typing import Any, Protocol

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _write(line: str) -> None:
    """One line on stderr; a reader that has gone away must not kill the supervisor.

    (``runai-entry ... 2>&1 | head``: the job guarded by this process matters more than its logs.)
    """
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except BrokenPipeError:  # nobody reads the logs any more
        pass


class Logger(Protocol):
    """What every module logs through: one event name and its facts as keywords."""

    def debug(self, event: str, **fields: Any) -> Any: ...
    def info(self, event: str, **fields: Any) -> Any: ...
    def warning(self, event: str, **fields: Any) -> Any: ...
    def error(self, event: str, **fields: Any) -> Any: ...


class JsonLogger:
    """JSON lines: timestamp (ISO 8601 UTC), level, event, then the event's fields."""

    def __init__(self, level: int, fields: dict[str, Any]) -> None:
        self._dumps = json.dumps
        self._level = level
        self._fields = fields

    def bind(self, **fields: Any) -> JsonLogger:
        return JsonLogger(self._level, {**self._fields, **fields})

    def _emit(self, level: int, name: str, event: str, fields: dict[str, Any]) -> None:
        if level < self._level:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        record = {"timestamp": stamp, "level": name, "event": event, **self._fields, **fields}
        _write(self._dumps(record, default=str))

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(10, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(20, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(30, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(40, "error", event, fields)


class _Stderr:
    """The structlog logger behind the console form: each rendered event is a line on stderr."""

    def msg(self, message: str) -> None:
        _write(message)

    debug = info = warning = error = critical = exception = msg


def configure(log_format: str, level: str) -> Logger:
    """Return the logger every module uses, in the configured form."""
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    if log_format == "json":
        return JsonLogger(_LEVELS[level], {"logger": "runai-entry"})

    import structlog

    # Here, not at the top: JSON lines never need it, and its pattern is slow to compile.
    from runai_entry.core.printable import printable_value

    def escape_controls(_: Any, __: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
        # ConsoleRenderer writes strings as they are: a checkpoint named with an ESC sequence
        # or a newline would reach the terminal raw (JSON lines escape them already).
        return {key: printable_value(value) for key, value in event.items()}

    structlog.configure(
        processors=[
            escape_controls,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *args: _Stderr(),
        cache_logger_on_first_use=True,
    )
    logger: Logger = structlog.get_logger().bind(logger="runai-entry")
    return logger
