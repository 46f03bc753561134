"""Durations as people write them: ``30``, ``30s``, ``500ms``, ``2m``, ``1m30s``, ``1h``."""

from __future__ import annotations

import math
import re
from typing import Any

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# ms before m, or "500ms" would read as 500 minutes followed by garbage.
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
#: No timer here needs more, and far larger values overflow the C time types under the waits
#: (a lock's timeout fails past about 300 years), which would surface mid-preemption.
MAX_SECONDS = 365 * 24 * 3600.0


def parse_duration(text: Any) -> float:
    """Return seconds, or raise ValueError with the accepted forms.

    A bare number is seconds (YAML hands us ints and floats; the environment hands us strings).
    Units may be combined largest first, each once: ``1h30m``, ``1m30s``, ``2s500ms``. Anything
    else — a YAML list, mapping or boolean included — is a ValueError, never another exception.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        # YAML's `yes` is a bool, and bool is an int.
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, int) and text.bit_length() > 64:
        # Neither float() nor str() of a huge int is safe: one overflows, the other refuses
        # past 4300 digits.
        raise ValueError(f"a number of {text.bit_length()} bits is out of range for a duration")
    if isinstance(text, (int, float)):
        return _bounded(float(text), text)
    s = text.strip().lower()
    try:
        seconds = float(s)
    except ValueError:
        pass
    else:
        return _bounded(seconds, text)
    parts = _PART.findall(s)
    units = [u for _, u in parts]
    order = ["h", "m", "s", "ms"]
    well_formed = (
        bool(parts)
        and "".join(n + u for n, u in parts) == s
        and units == sorted(set(units), key=order.index)
    )
    if not well_formed:
        raise ValueError(f"{text!r} is not a duration (examples: 30, 30s, 500ms, 2m, 1m30s, 1h)")
    return _bounded(sum(float(n) * _UNIT_SECONDS[u] for n, u in parts), text)


def _bounded(seconds: float, text: Any) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a duration")
    if seconds < 0:
        raise ValueError(f"{text!r} is negative")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than a year")
    return seconds


def format_seconds(seconds: float) -> str:
    """The shortest exact decimal form, for environment variables and logs: 28, 27.5, 0.25."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")
