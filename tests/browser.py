"""A results page opened in a real headless Chromium (Debian's package, installed by
scripts/setup.sh; no browser-download library): console messages, whether every image
decoded, the DOM after the page's scripts ran, and a screenshot."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

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
CONSOLE_LINE = re.compile(r":CONSOLE[:(]|Uncaught")


@dataclass
class Opened:
    dom: str
    console: list[str]  # console messages and uncaught errors, as Chromium logged them
    images: int
    images_ok: bool
    screenshot: Path

    def headings(self) -> list[str]:
        return [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<h2>(.*?)</h2>", self.dom)]


def chromium(args: list[str], profile: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=timeout)


def open_page(html: str, workdir: Path, width: int = 1280, height: int = 2400) -> Opened:
    """Load the page twice: its own bytes (screenshot, console) and a copy with IMAGE_PROBE (DOM)."""
    workdir.mkdir(parents=True, exist_ok=True)
    page, probed, shot = workdir / "report.html", workdir / "probed.html", workdir / "screenshot.png"
    page.write_text(html)
    probed.write_text(html.replace("</body>", IMAGE_PROBE + "</body>"))
    shown = chromium([f"--screenshot={shot}", f"--window-size={width},{height}", page.as_uri()],
                     workdir / "profile-shot")
    dumped = chromium(["--dump-dom", probed.as_uri()], workdir / "profile-dom")
    console = [line for line in (shown.stderr + dumped.stderr).splitlines() if CONSOLE_LINE.search(line)]
    body = re.search(r"<body([^>]*)>", dumped.stdout)
    attributes = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body.group(1))) if body else {}
    return Opened(dumped.stdout, console, int(attributes.get("data-images", -1)),
                  attributes.get("data-images-ok") == "true", shot)
