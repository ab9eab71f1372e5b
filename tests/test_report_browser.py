"""The reports in a real browser: headless Chromium (Debian ``chromium``).

Chromium loads (a) the page of a synthetic invalid run, from ``file://``, and (b) the runs
index served by ``raftlab serve --port 0``. Each load is one Chromium process that dumps
the DOM after the page's scripts ran (``--dump-dom``), writes a screenshot
(``--screenshot``) and logs every console message to stderr (``--enable-logging=stderr``:
lines with ``:CONSOLE``; an uncaught exception is one of them). The tests require:

* no console message at all (our pages log nothing; a script error is ``Uncaught ...``);
* the DOM as the scripts leave it: the verdict, the plots' ``<svg>``, and what only the
  script adds (the history filters shown, the index's sortable headers);
* a screenshot that is not blank: decoded with zlib (no image library), it has enough
  ink, the verdict's colour (the banner's red, the index's red and green squares) and
  the plots' colours.

One more test breaks a page's script on purpose and requires the check to see it, so a
console check that sees nothing cannot pass unnoticed. Chromium runs in a session of its
own, killed whatever happens, and the tests check none of its processes is left.

Without Chromium the tests skip with the reason; on CI (``CI`` set) they fail instead,
since ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from needs import missing
from test_report import Synth, write_run
from test_report_index import add_run, add_running, stamp
from test_report_serve import served

from lab.report import render_run

pytestmark = pytest.mark.timeout(120)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0"]
INVALID_RED = (0xB4, 0x23, 0x18)  # --invalid: the banner's word and border
SQUARE_RED, SQUARE_GREEN = (0xCF, 0x22, 0x2E), (0x2D, 0xA4, 0x4E)  # the index's squares
LEADER_GREEN = (0x1B, 0x9E, 0x77)  # the leader lanes of the cluster plot
OK_BLUE = (0x2A, 0x7A, 0xB9)  # ok operations in the latency and throughput plots


def chromium_path() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found is None:
        missing("chromium", "chromium is not installed (Debian package 'chromium')")
    return found


GROUPS: list[int] = []  # the process groups of every Chromium started here


@pytest.fixture(scope="module", autouse=True)
def reaped() -> Iterator[None]:
    """After the module, wait (best effort, 6 s at most) until init has reaped the dead
    helpers of every Chromium, so that not even a zombie shows in ``pgrep``."""
    yield
    deadline = time.monotonic() + 6
    while any(in_group(g, zombies=True) for g in GROUPS) and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture
def chromium() -> str:
    return chromium_path()


# --------------------------------------------------------------------------- the browser


@dataclass
class Visit:
    dom: str
    png: bytes
    console: list[str]
    log: str


def in_group(pgid: int, zombies: bool = False) -> list[str]:
    """Processes of that process group still running (and, with ``zombies``, those dead
    but not yet reaped by init, which are no longer ours to reap)."""
    out = []
    for p in psutil.process_iter(["pid", "name", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and (
                    zombies or p.info["status"] != psutil.STATUS_ZOMBIE):
                out.append(f"{p.pid} {p.info['name']}")
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def visit(chromium: str, url: str, work: Path, size: str = "1300,2000") -> Visit:
    """Load ``url`` once: the DOM after scripts, a screenshot, the console messages.

    With ``RAFTLAB_SCREENSHOTS=DIR`` set, the screenshot is also kept there (named after
    the test), to look at."""
    work.mkdir(parents=True, exist_ok=True)
    shot = work / "shot.png"
    env = dict(os.environ, HOME=str(work), XDG_CONFIG_HOME=str(work / "config"),
               XDG_CACHE_HOME=str(work / "cache"))
    cmd = [chromium, *FLAGS, f"--user-data-dir={work / 'profile'}", f"--window-size={size}",
           f"--screenshot={shot}", "--dump-dom", url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=work, start_new_session=True)
    try:
        dom, log = proc.communicate(timeout=45)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its helpers (zygote, gpu, crashpad) too
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert in_group(proc.pid) == [], "chromium processes left behind"
    GROUPS.append(proc.pid)
    assert proc.returncode == 0, log[-2000:]
    assert shot.exists(), log[-2000:]
    keep = os.environ.get("RAFTLAB_SCREENSHOTS")
    if keep:
        test = os.environ.get("PYTEST_CURRENT_TEST", "page").split("::")[-1].split(" ")[0]
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / f"{test}.png")
    console = [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return Visit(dom, shot.read_bytes(), console, log)


# --------------------------------------------------------------------------- PNG, by hand


@dataclass
class Image:
    width: int
    height: int
    channels: int
    rows: list[bytes]

    def pixels(self, step: int = 1) -> Iterator[tuple[int, int, int]]:
        c = self.channels
        for row in self.rows[::step]:
            for i in range(0, len(row), c * step):
                yield row[i], row[i + 1], row[i + 2]

    def count(self, colour: tuple[int, int, int], tolerance: int = 10) -> int:
        r0, g0, b0 = colour
        return sum(1 for r, g, b in self.pixels() if abs(r - r0) <= tolerance
                   and abs(g - g0) <= tolerance and abs(b - b0) <= tolerance)

    def ink(self) -> float:
        """The share of pixels that are neither white nor the pages' light grey ground."""
        n = hits = 0
        for r, g, b in self.pixels(step=2):
            n += 1
            if min(r, g, b) < 225:
                hits += 1
        return hits / max(n, 1)


def decode_png(data: bytes) -> Image:
    """An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes), unfiltered."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw = zlib.decompress(b"".join(idat))
    stride, bpp = width * channels, channels
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind_, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind_ == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind_ == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind_ == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif kind_ == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return Image(width, height, channels, rows)


def test_decode_png_reads_back_what_zlib_wrote() -> None:
    """The decoder against a PNG built here, every filter type used once."""
    w, h = 3, 5
    pixels = [[(10 * x + y, 200 - x, 7 * y) for x in range(w)] for y in range(h)]
    raw = b""
    prev = bytes(3 * w)
    for y, row in enumerate(pixels):
        line = bytes(v for px in row for v in px)
        f = y % 5
        if f == 1:
            enc = bytes((line[i] - (line[i - 3] if i >= 3 else 0)) & 255 for i in range(3 * w))
        elif f == 2:
            enc = bytes((a - b) & 255 for a, b in zip(line, prev, strict=True))
        elif f == 3:
            enc = bytes((line[i] - (((line[i - 3] if i >= 3 else 0) + prev[i]) >> 1)) & 255
                        for i in range(3 * w))
        elif f == 4:  # a = left, b = up, c = up-left: Paeth predictor
            out = []
            for i in range(3 * w):
                a, b = (line[i - 3] if i >= 3 else 0), prev[i]
                c = prev[i - 3] if i >= 3 else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                out.append((line[i] - (a if pa <= pb and pa <= pc else b if pb <= pc else c))
                           & 255)
            enc = bytes(out)
        else:
            enc = line
        raw += bytes([f]) + enc
        prev = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    img = decode_png(png)
    assert (img.width, img.height, img.channels) == (w, h, 3)
    assert [list(zip(*[iter(r)] * 3, strict=True)) for r in img.rows] == pixels
    assert img.count((20, 198, 0), tolerance=0) == 1


# --------------------------------------------------------------------------- the pages


def invalid_run(root: Path) -> Path:
    d = write_run(root / "register-isolate-leader" / stamp(1),
                  Synth().register_ops(700).no_linearization())
    render_run(d)
    return d


def test_an_invalid_run_page_renders_in_chromium(chromium: str, tmp_path: Path) -> None:
    d = invalid_run(tmp_path / "reports")
    page = visit(chromium, (d / "index.html").as_uri(), tmp_path / "chromium", "1300,3400")
    assert page.console == [], "\n".join(page.console)
    verdict = re.search(r'<section class="verdict verdict-invalid" id="verdict">(.*?)</section>',
                        page.dom, re.S)
    assert verdict is not None
    banner = " ".join(re.sub(r"<[^>]+>", " ", verdict.group(1)).split())
    assert banner.startswith("INVALID 1 of 4 keys are not linearizable") and "1 anomaly" in banner
    for kind in ("latency", "throughput", "cluster", "window"):
        assert re.search(rf'<svg[^>]*class="[^"]*\b{kind}\b', page.dom), kind
    # What only the script does: show the history filters and fill the table from the data.
    assert '<form id="filters" class="filters">' in page.dom
    assert "operations match" in page.dom
    img = decode_png(page.png)
    assert (img.width, img.height) == (1300, 3400)
    assert img.ink() > 0.04
    assert img.count(INVALID_RED) > 500  # the banner: the word INVALID and its border
    assert img.count(LEADER_GREEN) > 2000  # the cluster plot's leader lanes
    assert img.count(OK_BLUE) > 1000  # ok operations in the latency and throughput plots


def test_the_served_runs_index_renders_in_chromium(chromium: str, tmp_path: Path) -> None:
    root = tmp_path / "reports"
    for k, invalid in enumerate([False, True, False]):
        add_run(root, "register", "mixed", k, invalid=invalid)
    add_run(root, "bank", "kill-leader", 5)
    add_running(root, "set", "partition-halves", 6)
    with served(root, tmp_path / "serve.err") as srv:
        page = visit(chromium, srv.url, tmp_path / "chromium")
        log = srv.log()
    assert page.console == [], "\n".join(page.console)
    assert "Traceback" not in log and '"GET / HTTP/1.1" 200' in log
    assert "<h1>Runs</h1>" in page.dom
    assert page.dom.count('<tr class="s-') == 5
    assert page.dom.count('<svg class="spark') == 4
    # What only the script does: sortable headers and the filter with its count.
    assert len(re.findall(r'<th[^>]*class="[^"]*\bsortable\b', page.dom)) == 10
    assert re.search(r'<span class="muted" id="shown">5 of 5 runs</span>', page.dom)
    img = decode_png(page.png)
    assert (img.width, img.height) == (1300, 2000)
    assert img.ink() > 0.015
    assert img.count(SQUARE_RED) > 100 and img.count(SQUARE_GREEN) > 300


def test_a_script_error_on_a_page_is_caught(chromium: str, tmp_path: Path) -> None:
    """The console check must see a broken script: run.js with a call to nothing."""
    d = invalid_run(tmp_path / "reports")
    html = (d / "index.html").read_text()
    marker = '(function () {\n  "use strict";'
    assert html.count(marker) == 1
    broken = d / "broken.html"
    broken.write_text(html.replace(marker, marker + "\n  brokenOnPurpose();"))
    page = visit(chromium, broken.as_uri(), tmp_path / "chromium")
    assert any("Uncaught ReferenceError: brokenOnPurpose is not defined" in line
               for line in page.console), page.log[-2000:]
    assert '<form id="filters" class="filters" hidden="">' in page.dom  # the script died
