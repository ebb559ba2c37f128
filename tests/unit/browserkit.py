"""Opening a page in headless Chromium (Debian's `chromium`, installed by scripts/install.sh):
its rendered DOM, a screenshot, and how many colours the screenshot holds (a blank page has
one). The browser runs as its own process with its own profile directory, and is waited for."""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

# A browser that starts, renders a static page and quits takes ~3 s here; under the shared
# cores' load, much more.
TIMEOUT = 120


def chromium() -> str:
    found = shutil.which("chromium")
    assert found, "chromium is missing: scripts/install.sh installs it (apt: chromium)"
    return found


def _run(page: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="nh-chromium-") as profile:
        # As root, Chromium refuses to start with its sandbox; a static file needs none.
        argv = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *flags,
            page.resolve().as_uri(),
        ]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=TIMEOUT, check=False, cwd=profile
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def dump_dom(page: Path) -> str:
    """The DOM after Chromium loaded and laid out the page, serialised."""
    return _run(page, "--dump-dom").stdout


def screenshot(page: Path, out: Path, size: tuple[int, int] = (1280, 800)) -> bytes:
    """A PNG of the page as Chromium draws it in a window of `size`."""
    _run(page, f"--screenshot={out}", f"--window-size={size[0]},{size[1]}")
    return out.read_bytes()


def png_colours(data: bytes) -> int:
    """How many distinct pixel values an 8-bit RGB or RGBA PNG holds (non-interlaced)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    at, idat = 8, b""
    width = height = channels = 0
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        filter_type, row = line[0], bytearray(line[1:])
        for i in range(stride):
            a = row[i - channels] if i >= channels else 0
            b = previous[i]
            c = previous[i - channels] if i >= channels else 0
            if filter_type == 1:
                row[i] = (row[i] + a) & 0xFF
            elif filter_type == 2:
                row[i] = (row[i] + b) & 0xFF
            elif filter_type == 3:
                row[i] = (row[i] + (a + b) // 2) & 0xFF
            elif filter_type == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                row[i] = (row[i] + pred) & 0xFF
        colours.update(bytes(row[x : x + channels]) for x in range(0, stride, channels))
        previous = row
    return len(colours)


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""


class Dom(HTMLParser):
    """The elements of a serialised DOM, with the text directly inside each."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(element)
        if tag not in ("meta", "link", "br", "img", "input", "hr"):
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1].text += data

    def with_class(self, name: str) -> list[Element]:
        return [e for e in self.elements if name in e.attrs.get("class", "").split()]

    def tags(self, tag: str) -> list[Element]:
        return [e for e in self.elements if e.tag == tag]


def parse(markup: str) -> Dom:
    dom = Dom()
    dom.feed(markup)
    dom.close()
    return dom
