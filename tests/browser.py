"""A results page opened in a real headless Chromium (Debian's package, installed by
scripts/setup.sh; no browser-download library): console messages, whether every image
decoded, the DOM after the page's scripts ran, and a screenshot."""
from __future__ import annotations

import html as html_module
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--hide-scrollbars"]
# Appended to a copy of the page: once everything has loaded, it records on <body> whether
# every <img> decoded (complete, with a width), and how many there are.
IMAGE_PROBE = """<script>window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-images-ok", String(images.every(function (i) {
    return i.complete && i.naturalWidth > 0; })));
});</script>"""
# Appended too: clicks the header of a sortable table's column (by its text) and records the
# first column's cells in their new order, to check that the page's own script sorts.
CLICK_PROBE = """<script>window.addEventListener("load", function () {
  var th = Array.prototype.slice.call(document.querySelectorAll("table.sortable th")).filter(
    function (h) { return h.textContent === %s; })[0];
  if (!th) { return; }
  th.click();
  var rows = th.closest("table").tBodies[0].rows;
  document.body.setAttribute("data-sorted", Array.prototype.map.call(rows, function (r) {
    return r.cells[0].textContent; }).join("|"));
});</script>"""
CONSOLE_LINE = re.compile(r":CONSOLE[:(]|Uncaught")


@dataclass
class Opened:
    dom: str
    console: list[str]  # console messages and uncaught errors, as Chromium logged them
    images: int
    images_ok: bool
    screenshot: Path
    sorted_rows: list[str]  # the first column after the click (open_page's sort_by), else []

    def headings(self) -> list[str]:
        return [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<h2>(.*?)</h2>", self.dom)]


def chromium(args: list[str], profile: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=timeout)


def open_page(html: str, workdir: Path, sort_by: str = "", width: int = 1280, height: int = 2400) -> Opened:
    """Load the page twice: its own bytes (screenshot, console) and a copy with IMAGE_PROBE
    (and CLICK_PROBE on the column `sort_by`) for the DOM."""
    workdir.mkdir(parents=True, exist_ok=True)
    page, probed, shot = workdir / "report.html", workdir / "probed.html", workdir / "screenshot.png"
    page.write_text(html)
    probes = IMAGE_PROBE + (CLICK_PROBE % json.dumps(sort_by) if sort_by else "")
    probed.write_text(html.replace("</body>", probes + "</body>"))
    shown = chromium([f"--screenshot={shot}", f"--window-size={width},{height}", page.as_uri()],
                     workdir / "profile-shot")
    dumped = chromium(["--dump-dom", probed.as_uri()], workdir / "profile-dom")
    console = [line for line in (shown.stderr + dumped.stderr).splitlines() if CONSOLE_LINE.search(line)]
    body = re.search(r"<body([^>]*)>", dumped.stdout)
    attributes = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body.group(1))) if body else {}
    sorted_rows = html_module.unescape(attributes["data-sorted"]).split("|") if "data-sorted" in attributes else []
    return Opened(dumped.stdout, console, int(attributes.get("data-images", -1)),
                  attributes.get("data-images-ok") == "true", shot, sorted_rows)


def check_page(output: str, workdir: Path, headings: list[str], min_images: int = 1, sort_by: str = "") -> Opened:
    """The output's report.html loads in Chromium with no console message, every image
    decodes, its sections are `headings`, and its screenshot shows a page (not a blank)."""
    from fer_ray import storage

    opened = open_page(storage.read_bytes(storage.join(output, "report.html")).decode(), workdir, sort_by)
    assert opened.console == [], opened.console
    assert opened.images >= min_images and opened.images_ok, (opened.images, opened.images_ok)
    assert opened.headings() == headings
    check_screenshot(opened.screenshot)
    return opened


def check_screenshot(path: Path) -> None:
    """A real PNG of the window's size with a page drawn on it: a light page with its title
    at the top and more below (a page of two short tables has about 14,000 dark pixels; a
    blank one none)."""
    with Image.open(path) as shot:
        assert shot.format == "PNG" and shot.size == (1280, 2400)
        grey = np.asarray(shot.convert("L"))
    assert grey[:16, :16].min() > 240 and (grey[:100] < 128).sum() > 200  # the margin, the title
    assert (grey < 128).sum() > 5000 and len(np.unique(grey)) > 16
