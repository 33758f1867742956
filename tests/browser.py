"""Headless Chromium for the pages: load a file with networking off, dump the DOM, screenshot it.

Also the two readers the page tests judge structure with, from the standard library alone: the DOM
as a list of elements (tag, attributes, text) and a PNG decoder that counts pixels by colour.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CONSOLE = re.compile(r":CONSOLE[:(]")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)"
)
# Nothing a page asks for can leave the machine: every name resolves to nothing and every
# connection goes to a proxy on a port nobody serves.
NO_NETWORK = (
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
)


def run_chromium(
    page: Path, profile: Path, *, screenshot: Path | None = None, size: str = "1100,1400"
) -> subprocess.CompletedProcess[str]:
    """Load `page` in headless Chromium with networking off; dump its DOM (or screenshot it)."""
    assert CHROMIUM
    output = [f"--screenshot={screenshot}", f"--window-size={size}"] if screenshot else []
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        *NO_NETWORK,
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--hide-scrollbars",
        *(output or ["--dump-dom"]),
        page.as_uri(),
    ]
    # Its own process group, so a hung browser is stopped with every helper process it started.
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as browser:
        try:
            stdout, stderr = browser.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(browser.pid, signal.SIGKILL)
            stdout, stderr = browser.communicate()
            pytest.fail(f"Chromium did not finish loading {page.name}: {stderr[-2000:]}")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGKILL)  # helpers left behind by a clean exit
    return subprocess.CompletedProcess(argv, browser.returncode, stdout, stderr)


def console_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    """Return the console messages (errors included) Chromium logged while loading."""
    return [line for line in done.stderr.splitlines() if CONSOLE.search(line)]


# --- the DOM ---------------------------------------------------------------------------------


@dataclass
class Element:
    """One element of a parsed page: its tag, attributes, classes and the text directly in it."""

    tag: str
    attrs: dict[str, str]
    parents: list[Element] = field(default_factory=list, repr=False)
    text: str = ""

    @property
    def classes(self) -> set[str]:
        """The element's class names."""
        return set(self.attrs.get("class", "").split())

    def within(self, tag: str = "", cls: str = "", id_: str = "") -> bool:
        """True when an ancestor matches the tag, class and id given."""
        return any(
            (not tag or p.tag == tag)
            and (not cls or cls in p.classes)
            and (not id_ or p.attrs.get("id") == id_)
            for p in self.parents
        )


class _Collector(HTMLParser):
    VOID = {
        "meta",
        "link",
        "br",
        "img",
        "input",
        "hr",
        "line",
        "rect",
        "circle",
        "path",
        "polyline",
    }

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.stack: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag=tag, attrs={k: v or "" for k, v in attrs}, parents=list(self.stack))
        self.elements.append(element)
        self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index].tag == tag:
                del self.stack[index:]
                return

    def handle_data(self, data: str) -> None:
        if self.stack:
            self.stack[-1].text += data


def parse_dom(text: str) -> list[Element]:
    """Parse a page (or Chromium's dumped DOM) into its elements in document order."""
    collector = _Collector()
    collector.feed(text)
    collector.close()
    return collector.elements


def find(elements: list[Element], tag: str = "", cls: str = "", **attrs: str) -> list[Element]:
    """Return the elements with this tag, class and attribute values."""
    return [
        e
        for e in elements
        if (not tag or e.tag == tag)
        and (not cls or cls in e.classes)
        and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
    ]


# --- the screenshot --------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """A decoded RGB image: width, height and `width * 3` bytes per row."""

    width: int
    height: int
    rows: list[bytes]

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        """Return the (r, g, b) at x, y."""
        row = self.rows[y]
        return row[3 * x], row[3 * x + 1], row[3 * x + 2]

    def count(self, colour: str, *, top: int = 0, bottom: int = 0, tolerance: int = 8) -> int:
        """Count pixels within `tolerance` of `colour` (#rrggbb) between rows top and bottom."""
        want = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        found = 0
        for row in self.rows[top : bottom or self.height]:
            for x in range(0, len(row), 3):
                if all(abs(row[x + i] - want[i]) <= tolerance for i in range(3)):
                    found += 1
        return found

    def distinct(self, *, step: int = 7) -> int:
        """Roughly how many distinct colours the image holds (sampling every `step`-th pixel)."""
        seen = {row[x : x + 3] for row in self.rows[::step] for x in range(0, len(row), 3 * step)}
        return len(seen)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def read_png(path: Path, *, max_rows: int = 0) -> Image:
    """Decode an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) into RGB rows."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, idat, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        chunk = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        offset += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type)
    channels = 4 if colour_type == 6 else 3
    stride = width * channels
    raw = zlib.decompress(idat)
    rows: list[bytes] = []
    previous = bytearray(stride)
    limit = min(height, max_rows or height)
    for y in range(limit):
        start = y * (stride + 1)
        kind_byte = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind_byte == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind_byte == 2:
            for i in range(stride):
                line[i] = (line[i] + previous[i]) & 0xFF
        elif kind_byte == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind_byte == 4:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                upper_left = previous[i - channels] if i >= channels else 0
                line[i] = (line[i] + _paeth(left, previous[i], upper_left)) & 0xFF
        previous = line
        rgb = bytearray(line)
        if channels == 4:
            del rgb[3::4]
        rows.append(bytes(rgb))
    return Image(width=width, height=limit, rows=rows)
