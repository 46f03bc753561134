"""Text from outside (file names, a job's arguments, records a co-tenant may have written) made
safe to show a person: one escape for the console log, ``--inspect``, the drill's table, the
timeline and the termination message."""

from __future__ import annotations

import re
from typing import Any

#: What a terminal would act on rather than show: C0 and C1 controls (an ESC starts a sequence
#: that can move the cursor, clear the screen or set the window title; a newline forges a line),
#: DEL, Unicode's line separators and bidirectional overrides (text that reads backwards), and
#: lone surrogates: a name that is not UTF-8, as Python hands it over (surrogateescape), which a
#: strict UTF-8 stdout refuses to write at all.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                          "\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # one byte that was not UTF-8: show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` safe to show a person: every character a terminal would act on, and every byte
    that is not UTF-8, written as an escape (``\\x1b``, ``\\n``, ``\\xff``). Backslashes are left
    as they are, so escaping twice changes nothing. The one escape for what runai-entry shows:
    the console log, ``--inspect``, the drill's table and the timeline.
    """
    return _UNPRINTABLE.sub(_escape, text) if _UNPRINTABLE.search(text) else text


def printable_value(value: Any) -> Any:
    """``value`` with :func:`printable` applied to every string in it (lists, dicts too)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, (list, tuple)):
        return [printable_value(item) for item in value]
    if isinstance(value, dict):
        return {printable_value(k): printable_value(v) for k, v in value.items()}
    return value


def or_unknown(value: object) -> str:
    """A record's field as shown to a person: ``?`` when it was not recorded."""
    return "?" if value is None else str(value)
