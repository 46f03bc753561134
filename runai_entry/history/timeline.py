"""``--timeline FILE.svg``: the attempts as a picture, readable at a glance in a browser.

One lane per member, one bar per attempt, in time: start-up, productive time, lost work and the
stop each in their own colour; the queue between two attempts as a dashed gap; every checkpoint
the records know as a tick above its lane; a legend with the goodput line. Self-contained (no
script, font or stylesheet from elsewhere), so it opens from a CI artifact or a mail as it is;
hovering over a part shows its figures. Drawn from the same figures as the table
(:mod:`runai_entry.history.goodput`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any
from xml.sax import saxutils

from runai_entry.core.attempt_record import AttemptRecord, Checkpoint
from runai_entry.core.errors import ConfigError, os_error_cause
from runai_entry.core.printable import printable
from runai_entry.history.goodput import AttemptFigures, attempt_figures
from runai_entry.history.report import goodput_lines, span

WIDTH = 1200
_LEFT, _RIGHT, _TOP = 110, 40, 78
_LANE, _BAR = 58, 26
#: (key, legend label, fill). Colour-blind safe (Okabe-Ito), and distinct in greyscale too.
PARTS = (
    ("startup", "start-up", "#E69F00"),
    ("productive", "productive", "#009E73"),
    ("lost", "lost work", "#D55E00"),
    ("stop", "stop (signal → exit)", "#6A3D9A"),
)
_COLOUR = {key: colour for key, _, colour in PARTS}
_QUEUE, _TICK, _INK, _FAINT = "#8A8A8A", "#1F1F1F", "#222222", "#D8D8D8"
#: Over a productive part that holds an unknown start-up or lost work (an upper bound).
_HATCH = ('<defs><pattern id="unknown" width="8" height="8" patternUnits="userSpaceOnUse" '
          'patternTransform="rotate(45)"><rect width="3" height="8" fill="#FFFFFF" '
          'fill-opacity="0.55"/></pattern></defs>')
_NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200,
               86400)
#: Checkpoint ticks drawn per lane at most: the records hold 20 per attempt; a history written
#: by someone else may hold far more, and each tick is a few hundred bytes of SVG.
MAX_TICKS = 500


def escape(text: str) -> str:
    """Text for the SVG: XML 1.0 allows no control character, and names may hold any."""
    return saxutils.escape(printable(text))


def quoteattr(text: str) -> str:
    return saxutils.quoteattr(printable(text))


def write_timeline(path: str, records: Sequence[AttemptRecord], title: str) -> None:
    """Write the picture to ``path`` (atomically: a reader never sees half of it). Raises
    :class:`ConfigError` with one line when it cannot be written."""
    from runai_entry.core.atomicfile import atomic_write_bytes

    try:
        atomic_write_bytes(os.path.abspath(path), render(records, title).encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"--timeline: cannot write {path!r}: {os_error_cause(exc)}") from None


def render(records: Sequence[AttemptRecord], title: str) -> str:
    """The SVG document for ``records`` (history records, oldest first)."""
    figures = attempt_figures(records)
    placed = [(r, f) for r, f in zip(records, figures, strict=True)
              if f.start is not None and f.end is not None]
    members = sorted({f.member for _, f in placed}, key=_member_order)
    lines = goodput_lines(records) if records else ["no attempt recorded yet"]
    notes = [line.strip() for line in lines[1:]]
    if len(placed) < len(records):  # no readable start (or one outside 1970-2200): no place
        notes.append(f"{len(records) - len(placed)} of {len(records)} attempts not drawn: "
                     "their start time is missing or unreadable")
    axis = _TOP + max(1, len(members)) * _LANE
    height = axis + 48 + 17 * len(notes) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, '
           f'sans-serif" font-size="13" fill="{_INK}">',
           _HATCH,
           f'<rect width="{WIDTH}" height="{height}" fill="#FFFFFF"/>',
           f'<text x="20" y="28" font-size="17" font-weight="bold">{escape(title)}</text>']
    out.append(f'<text class="goodput" x="20" y="52" font-size="14">{escape(lines[0])}</text>')
    if not placed:
        out.append(f'<text x="{_LEFT}" y="{_TOP + 30}">no attempt with a start time: '
                   'nothing to draw</text>')
    else:
        t0 = min(f.start for _, f in placed if f.start is not None)
        t1 = max(f.end for _, f in placed if f.end is not None)
        scale = (WIDTH - _LEFT - _RIGHT) / max(t1 - t0, 1e-3)

        def x(t: float) -> float:
            return _LEFT + (t - t0) * scale

        for lane, name in enumerate(members):
            top = _TOP + lane * _LANE
            out += _lane(name, top, [(r, f) for r, f in placed if f.member == name], x)
        out += _axis(t1 - t0, scale, axis)
    for i, note in enumerate(notes):
        out.append(f'<text x="20" y="{axis + 52 + 17 * i}" font-size="12" fill="#555555">'
                   f'{escape(note)}</text>')
    out += _legend(height - 30)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _lane(name: str, top: float, attempts: list[tuple[AttemptRecord, AttemptFigures]],
          x: Any) -> list[str]:
    bar_top = top + 18
    middle = bar_top + _BAR / 2
    out = [f'<g class="lane" data-member={quoteattr(name)}>',
           f'<text x="{_LEFT - 12}" y="{middle + 5:.1f}" text-anchor="end" '
           f'font-weight="bold">member {escape(name)}</text>',
           f'<line x1="{_LEFT}" y1="{middle:.1f}" x2="{WIDTH - _RIGHT}" y2="{middle:.1f}" '
           f'stroke="{_FAINT}" stroke-width="1"/>']
    previous_end: float | None = None
    ticks: dict[tuple[Any, Any], Checkpoint] = {}
    for record, f in sorted(attempts, key=lambda item: item[1].start or 0.0):
        assert f.start is not None and f.end is not None  # only placed attempts come here
        if previous_end is not None and f.requeue_wait_s:
            out += _queue(x(previous_end), x(f.start), middle, f.requeue_wait_s)
        out += _bar(f, x(f.start), x(f.end), bar_top)
        previous_end = f.end
        for c in [*(record.checkpoints or ()), record.newest]:
            if c is not None and c.mtime is not None:
                ticks.setdefault((c.path, c.mtime), c)
    for c in list(ticks.values())[-MAX_TICKS:]:
        assert c.mtime is not None
        cx = x(c.mtime)
        if _LEFT - 1 <= cx <= WIDTH - _RIGHT + 1:
            label = os.path.basename((c.path or "?").rstrip("/"))
            out.append(f'<path class="checkpoint" d="M{cx:.1f},{bar_top - 1:.1f} l-5,-9 h10 z" '
                       f'fill="{_TICK}"><title>checkpoint {escape(label)}'
                       f'{"" if c.step is None else f" (step {c.step})"}</title></path>')
    out.append("</g>")
    return out


def _bar(f: AttemptFigures, left: float, right: float, top: float) -> list[str]:
    width = max(right - left, 1.0)
    durations = {"startup": f.startup_s or 0.0, "productive": f.productive_s,
                 "lost": f.lost_s or 0.0, "stop": f.stop_s}
    total = sum(durations.values()) or 1.0
    title = (f"attempt {f.attempt} ({f.outcome}), ran {span(f.ran_for_s)}: start-up "
             f"{span(f.startup_s)}, productive {span(f.productive_s)}, lost work "
             f"{span(f.lost_s)}, stop {span(f.stop_s)}")
    out = [f'<g class="attempt" data-attempt={quoteattr(str(f.attempt))} '
           f'data-outcome={quoteattr(f.outcome)}><title>{escape(title)}</title>']
    cursor = left
    for key, seconds in durations.items():
        part = width * seconds / total
        if part <= 0:
            continue
        out.append(f'<rect class="part {key}" x="{cursor:.1f}" y="{top:.1f}" '
                   f'width="{part:.1f}" height="{_BAR}" fill="{_COLOUR[key]}"/>')
        cursor += part
    if f.unknown:  # productive is then an upper bound: say so on the part itself
        start = left + width * durations["startup"] / total
        part = width * durations["productive"] / total
        out.append(f'<rect class="unknown" x="{start:.1f}" y="{top:.1f}" width="{part:.1f}" '
                   f'height="{_BAR}" fill="url(#unknown)"/>')
    out.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{width:.1f}" height="{_BAR}" '
               f'fill="none" stroke="{_INK}" stroke-width="1"/>')
    # Only where it fits (the tooltip has it anyway); text about 7.5 px a character.
    text = next((t for t in (f"attempt {f.attempt}: {f.outcome}", f"{f.attempt} {f.outcome}",
                             str(f.attempt)) if width > 7.5 * len(t) + 8), "")
    if text:
        out.append(f'<text x="{left + 5:.1f}" y="{top + _BAR - 8:.1f}" fill="#FFFFFF" '
                   f'font-weight="bold" stroke="#000000" stroke-width="2.5" '
                   f'paint-order="stroke">{escape(text)}</text>')
    out.append("</g>")
    return out


def _queue(left: float, right: float, middle: float, seconds: float) -> list[str]:
    out = [f'<g class="queue"><title>waiting in the queue {escape(span(seconds))}</title>',
           f'<line x1="{left:.1f}" y1="{middle:.1f}" x2="{right:.1f}" y2="{middle:.1f}" '
           f'stroke="{_QUEUE}" stroke-width="3" stroke-dasharray="5 4"/>']
    label = next((t for t in (f"queue {span(seconds)}", span(seconds))
                  if right - left > 7 * len(t) + 4), "")
    if label:
        out.append(f'<text x="{(left + right) / 2:.1f}" y="{middle - 6:.1f}" '
                   f'text-anchor="middle" font-size="12" fill="#555555">{escape(label)}</text>')
    out.append("</g>")
    return out


def _axis(seconds: float, scale: float, top: float) -> list[str]:
    step = next((s for s in _NICE_STEPS if seconds / s <= 10), None)
    if step is None:  # beyond 10 days: whole days, still at most 10 ticks whatever the span
        step = 86400 * math.ceil(seconds / 10 / 86400)
    out = [f'<g class="axis"><line x1="{_LEFT}" y1="{top:.1f}" x2="{WIDTH - _RIGHT}" '
           f'y2="{top:.1f}" stroke="{_INK}"/>']
    tick = 0.0
    while tick <= seconds + 1e-6:
        tx = _LEFT + tick * scale
        out.append(f'<line x1="{tx:.1f}" y1="{top:.1f}" x2="{tx:.1f}" y2="{top + 5:.1f}" '
                   f'stroke="{_INK}"/><text x="{tx:.1f}" y="{top + 19:.1f}" '
                   f'text-anchor="middle" font-size="12">{escape(span(tick))}</text>')
        tick += step
    out.append(f'<text x="{_LEFT - 12}" y="{top + 19:.1f}" text-anchor="end" font-size="12" '
               'fill="#555555">since start</text></g>')
    return out


def _legend(top: float) -> list[str]:
    out = ['<g class="legend">']
    cx = 20.0
    for key, text, colour in PARTS:
        out.append(f'<rect x="{cx:.0f}" y="{top:.0f}" width="16" height="14" fill="{colour}" '
                   f'stroke="{_INK}" stroke-width="0.5"/><text x="{cx + 22:.0f}" '
                   f'y="{top + 12:.0f}" data-part="{key}">{escape(text)}</text>')
        cx += 34 + 7.3 * len(text)
    out.append(f'<line x1="{cx:.0f}" y1="{top + 7:.0f}" x2="{cx + 26:.0f}" y2="{top + 7:.0f}" '
               f'stroke="{_QUEUE}" stroke-width="3" stroke-dasharray="5 4"/>'
               f'<text x="{cx + 32:.0f}" y="{top + 12:.0f}">waiting in the queue</text>')
    cx += 32 + 7.3 * len("waiting in the queue") + 14
    out.append(f'<path d="M{cx + 5:.0f},{top + 14:.0f} l-5,-9 h10 z" fill="{_TICK}"/>'
               f'<text x="{cx + 16:.0f}" y="{top + 12:.0f}">checkpoint written</text>')
    cx += 16 + 7.3 * len("checkpoint written") + 20
    out.append(f'<rect x="{cx:.0f}" y="{top:.0f}" width="16" height="14" '
               f'fill="{_COLOUR["productive"]}" stroke="{_INK}" stroke-width="0.5"/>'
               f'<rect x="{cx:.0f}" y="{top:.0f}" width="16" height="14" fill="url(#unknown)"/>'
               f'<text x="{cx + 22:.0f}" y="{top + 12:.0f}">includes what is unknown</text>')
    out.append("</g>")
    return out


def _member_order(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)

