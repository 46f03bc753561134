"""Durations as people write them: ``30``, ``30s``, ``500ms``, ``2m``, ``1m30s``, ``1h``."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# ms before m, or "500ms" would read as 500 minutes followed by garbage.
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str | int | float) -> float:
    """Return seconds, or raise ValueError with the accepted forms.

    A bare number is seconds (YAML hands us ints and floats; the environment hands us strings).
    Units may be combined largest first, each once: ``1h30m``, ``1m30s``, ``2s500ms``.
    """
    if isinstance(text, bool):  # YAML's `yes` is a bool, and bool is an int
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"{text!r} is negative")
        return float(text)
    s = text.strip().lower()
    try:
        seconds = float(s)
    except ValueError:
        pass
    else:
        if seconds < 0 or seconds != seconds or seconds == float("inf"):
            raise ValueError(f"{text!r} is not a duration")
        return seconds
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
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def format_seconds(seconds: float) -> str:
    """The shortest exact decimal form, for environment variables and logs: 28, 27.5, 0.25."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")
