"""End to end: the report opens in headless Chromium, renders, logs nothing, fetches nothing.

Chromium's console messages are read from its log (``--enable-logging=stderr``,
where every page console message appears as ``CONSOLE``), and the hosts it
contacted from a net log. Chromium itself calls a few Google services in the
background despite the flags; those are told apart by host. A control page
with a console error and an external image checks that both detectors work.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from fairserve.report.html import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is absent (apt-get install -y chromium) - browser test skipped",
)
CONSOLE = re.compile(r":CONSOLE[:(]\d+\)?\] (.*)")
# Hosts Chromium contacts on its own (sign-in, time, component checks); never the page's.
BROWSER_OWN = re.compile(r"(^|\.)(google\.com|googleapis\.com|gstatic\.com|gvt1\.com)$")


WIDTHS = (1400, 800)  # a desktop window and a narrow one (half a laptop screen)
HEIGHT = 2400


def open_in_chromium(page: Path, tmp: Path, width: int = 1280) -> tuple[list[str], set[str], Path]:
    """Console messages, hosts contacted (Chromium's own left out) and the screenshot path."""
    shot, netlog = tmp / f"shot-{width}.png", tmp / f"net-{width}.json"
    assert CHROMIUM is not None
    proc = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--no-first-run", "--disable-component-update",
            "--disable-sync", "--disable-quic", f"--user-data-dir={tmp / 'profile'}",
            "--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}",
            f"--window-size={width},{HEIGHT}", f"--screenshot={shot}", page.resolve().as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [m.group(1) for m in CONSOLE.finditer(proc.stderr)]
    urls = re.findall(r'"(?:https?|wss?)://([^/":\s]+)', netlog.read_text(errors="replace"))
    hosts = {h for h in urls if not BROWSER_OWN.search(h)}
    return console, hosts, shot


def test_detectors_catch_a_bad_page(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text(
        '<html><body><script>console.error("boom-marker")</script>'
        '<img src="https://fetch-me.invalid/x.png"></body></html>'
    )
    console, hosts, _ = open_in_chromium(page, tmp_path)
    assert any("boom-marker" in m for m in console)
    assert "fetch-me.invalid" in hosts


# Run in the page, after layout: how wide the document is and where the parts sit.
MEASURE = """<script>
const v = document.getElementById("verdict"), imgs = [...document.images];
document.body.dataset.measured = JSON.stringify({
  scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth,
  verdictTop: v ? v.getBoundingClientRect().top : -1,
  widestImage: Math.max(...imgs.map(i => i.getBoundingClientRect().right)),
});
</script>"""


def measure_layout(page: Path, tmp: Path, width: int) -> dict[str, float]:
    """The layout figures of MEASURE, from the DOM Chromium dumps after running it."""
    probe = tmp / f"probe-{width}.html"
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    assert CHROMIUM is not None
    proc = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", f"--user-data-dir={tmp / 'profile-probe'}",
            f"--window-size={width},{HEIGHT}", "--dump-dom", probe.resolve().as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'data-measured="([^"]+)"', proc.stdout)
    assert found, proc.stdout[-2000:]
    return dict(json.loads(html.unescape(found.group(1))))


@pytest.mark.parametrize("width", WIDTHS)
def test_report_renders_without_errors(compare_dir: Path, tmp_path: Path, width: int) -> None:
    report = write_report(compare_dir, tmp_path / "report.html")
    console, hosts, shot = open_in_chromium(report, tmp_path, width)
    assert console == []
    assert hosts == set()
    pixels = imread(shot)
    assert pixels.shape[:2] == (HEIGHT, width)
    # Not a blank page: the figures and tables put thousands of distinct colours on it.
    assert pixels[..., :3].std() > 0.05
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 100
    layout = measure_layout(report, tmp_path, width)
    # Nothing wider than the window (wide tables scroll in their own box), every figure
    # inside it, and the verdict within the first screenful.
    assert layout["scroll"] <= layout["client"] <= width
    assert layout["widestImage"] <= layout["client"]
    assert 0 < layout["verdictTop"] < 400
