"""The timeline picture: its structure parsed as XML, and what a real browser draws of it."""

from __future__ import annotations

import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

import pytest

from runai_entry.core.errors import ConfigError
from runai_entry.history.goodput import attempt_figures
from runai_entry.history.timeline import PARTS, WIDTH, render, write_timeline
from tests.history.test_goodput import attempt, ckpt, typed

SVG = "{http://www.w3.org/2000/svg}"

#: Preempted with periodic saves only (10 s lost), preempted after a stop-time save, completed.
LINES = [
    attempt(1, "preempted", 0, 52, first_step=5, stop=50, grace=2, newest=ckpt(400, 40),
            saved=(ckpt(400, 40), ckpt(300, 30), ckpt(200, 20), ckpt(100, 10))),
    attempt(2, "preempted", 60, 72, first_step=66, stop=130, grace=2, resumed=ckpt(400, 40),
            newest=ckpt(1150, 131), saved=(ckpt(1150, 131), ckpt(1000, 110), ckpt(800, 90))),
    attempt(3, "completed", 140, 60, first_step=144, resumed=ckpt(1150, 131),
            newest=ckpt(1700, 199), saved=(ckpt(1700, 199), ckpt(1400, 170))),
]
RECORDS = typed(LINES)
TWO_MEMBERS = typed(LINES + [{**r, "member": "1"} for r in LINES])


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def groups(root: ET.Element, cls: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == cls]


class TestStructure:
    def test_one_lane_per_member_one_bar_per_attempt(self) -> None:
        root = parse(render(TWO_MEMBERS, "job"))
        lanes = groups(root, "lane")
        assert [lane.get("data-member") for lane in lanes] == ["0", "1"]
        for lane in lanes:
            bars = [g for g in lane.iter(f"{SVG}g") if g.get("class") == "attempt"]
            assert [(b.get("data-attempt"), b.get("data-outcome")) for b in bars] == [
                ("1", "preempted"), ("2", "preempted"), ("3", "completed")]

    def test_parts_are_as_wide_as_their_figures(self) -> None:
        """Each part's width is its share of the attempt's bar, in seconds × the scale."""
        root = parse(render(RECORDS, "job"))
        scale = (WIDTH - 110 - 40) / 200  # 200 s from the first start to the last end
        bar = groups(root, "attempt")[0]
        widths = {rect.get("class", "").split()[1]: float(rect.get("width", 0))
                  for rect in bar.iter(f"{SVG}rect") if "part" in rect.get("class", "")}
        f = attempt_figures(RECORDS)[0]
        expected = {"startup": f.startup_s, "productive": f.productive_s, "lost": f.lost_s,
                    "stop": f.stop_s}
        assert widths == pytest.approx({k: v * scale for k, v in expected.items()}, abs=0.2)

    def test_queue_gaps_and_checkpoint_ticks(self) -> None:
        root = parse(render(RECORDS, "job"))
        assert len(groups(root, "queue")) == 2
        ticks = [p for p in root.iter(f"{SVG}path") if p.get("class") == "checkpoint"]
        assert len(ticks) == 9  # every checkpoint the records name, once each
        assert "step-1150.pt (step 1150)" in {t.findtext(f"{SVG}title", "")[11:] for t in ticks}

    def test_legend_names_every_part_and_the_goodput(self) -> None:
        svg = render(RECORDS, "job")
        legend = groups(parse(svg), "legend")[0]
        texts = {t.text for t in legend.iter(f"{SVG}text")}
        assert {label for _, label, _ in PARTS} <= texts
        assert "waiting in the queue" in texts and "checkpoint written" in texts
        headline = [t.text for t in parse(svg).iter(f"{SVG}text") if t.get("class") == "goodput"]
        assert headline == ["goodput 78% of 3m 20s: start-up 15s, lost work 10s, stop 4.0s, "
                            "waiting in the queue 16s"]

    def test_a_job_that_never_beats_says_so(self) -> None:
        records = typed([{**r, "first_step_at": None} for r in LINES])
        svg = render(records, "job")
        hatched = [r for r in parse(svg).iter(f"{SVG}rect") if r.get("class") == "unknown"]
        assert len(hatched) == 3  # each attempt's productive part is only an upper bound
        assert "start-up unknown, counted 0: the job never beat" in svg

    def test_nothing_to_draw(self) -> None:
        """No record, or none with a start time: a valid picture that says so."""
        assert "no attempt recorded yet" in render([], "job")
        root = parse(render(typed([{"attempt": 1, "outcome": "completed"}]), "job"))
        assert groups(root, "lane") == []

    def test_text_is_escaped(self) -> None:
        parse(render(RECORDS, "job <&> \"quoted\""))

    def test_unwritable_path_is_one_line(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"^--timeline: cannot write .*missing"):
            write_timeline(str(tmp_path / "missing" / "t.svg"), RECORDS, "job")


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) bytes of an 8-bit PNG (what chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        header = chunk if kind == b"IHDR" else header
        idat += chunk if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    bpp = 4 if colour == 6 else 3
    raw, stride, rows = zlib.decompress(idat), width * bpp, []
    previous = bytearray(stride)
    for y in range(height):
        offset = y * (stride + 1)
        kind, line = raw[offset], bytearray(raw[offset + 1:offset + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, bpp, rows


def count(row: bytes, bpp: int, rgb: str) -> int:
    want = bytes.fromhex(rgb.lstrip("#"))
    return sum(1 for i in range(0, len(row), bpp) if row[i:i + 3] == want)


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="no chromium here: the picture is checked in a real browser only "
                    "where Debian's chromium is installed")
class TestInABrowser:
    def test_chromium_draws_each_part_as_wide_as_its_seconds(self, tmp_path: Path) -> None:
        """Rendered by headless chromium, a row of pixels across the bars (above their labels)
        shows each part's colour over as many pixels as its seconds take on the scale: the
        picture shows the figures, not an error page."""
        svg, png = tmp_path / "t.svg", tmp_path / "t.png"
        write_timeline(str(svg), RECORDS, "job")
        run: Any = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--force-device-scale-factor=1", f"--screenshot={png}",
             f"--window-size={WIDTH},400", svg.as_uri()],
            capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert png.exists(), run.stderr[-2000:]
        _, bpp, rows = png_pixels(png)
        row = rows[78 + 18 + 3]  # the first lane's bars, 3 px below their top edge
        scale = (WIDTH - 110 - 40) / 200
        figures = attempt_figures(RECORDS)
        seconds = {"startup": sum(f.startup_s or 0 for f in figures),
                   "productive": sum(f.productive_s for f in figures),
                   "lost": sum(f.lost_s or 0 for f in figures),
                   "stop": sum(f.stop_s for f in figures)}
        for key, _, colour in PARTS:
            # Edges are antialiased: up to a pixel each side of each of the three bars.
            assert count(row, bpp, colour) == pytest.approx(seconds[key] * scale, abs=6), key
