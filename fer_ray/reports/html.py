"""The results page's HTML: pure functions from values to markup (no storage, no Ray).

The page is one self-contained file: a small inline style sheet, images as `data:` URIs,
and one tiny inline script that sorts a table when its header is clicked. Nothing is
fetched, so the page opens the same from a local folder, a download of an S3 object or
an e-mail attachment.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
.sub{color:#666;margin-top:0}table{border-collapse:collapse;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer}table.sortable th:after{content:" \\2195";color:#aaa}
img{max-width:100%;border:1px solid #eee;margin:4px 0}figure{margin:8px 0}figcaption{color:#666;font-size:12px}
pre{background:#f7f7f7;padding:8px;overflow:auto}.note{color:#666;font-style:italic}code{font-size:13px}
"""

# Sorts a table.sortable by the clicked column: numerically when every filled cell of it is
# a number, else as text; empty cells last; a second click on the same column reverses.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var cell = function (r) { return r.cells[col].getAttribute("data-value") || r.cells[col].textContent; };
      var numeric = rows.every(function (r) { return cell(r) === "" || !isNaN(Number(cell(r))); });
      var dir = th.getAttribute("data-dir") === "asc" ? -1 : 1;
      rows.sort(function (a, b) {
        var x = cell(a), y = cell(b);
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        return dir * (numeric ? Number(x) - Number(y) : x.localeCompare(y));
      });
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", dir === 1 ? "asc" : "desc");
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


@dataclass
class Page:
    """A results page: a title, a line under it, and (heading, HTML body) sections in order."""
    title: str
    subtitle: str = ""
    sections: list[tuple[str, str]] = field(default_factory=list)

    def add(self, heading: str, body: str) -> None:
        self.sections.append((heading, body))


def render(page: Page) -> str:
    """The whole page as one HTML document."""
    sections = "\n".join(f'<section><h2>{esc(h)}</h2>\n{body}</section>' for h, body in page.sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(page.title)}</title><style>{STYLE}</style></head>\n<body>"
            f'<h1>{esc(page.title)}</h1><p class="sub">{esc(page.subtitle)}</p>\n{sections}\n'
            f"<script>{SORT_SCRIPT}</script></body></html>\n")


class Markup(str):
    """Text that is HTML already (a table cell holding line breaks): inserted as it is."""


def esc(value) -> str:
    return value if isinstance(value, Markup) else html.escape(str(value), quote=True)


def lines(texts: list[str]) -> Markup:
    """Several lines of plain text in one cell."""
    return Markup("<br>".join(html.escape(t) for t in texts))


def show(value) -> str:
    """A cell's text: floats rounded to what a reader compares, None as empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table(header: list[str], rows: list[list], sortable: bool = False) -> str:
    """A table; numbers right-aligned (and sorted by value, not by their rounded text)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    kind = ' class="sortable"' if sortable else ""
    return f"<table{kind}><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>\n"


def cell(value) -> str:
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    if is_number(value):
        raw = "" if isinstance(value, float) and math.isnan(value) else repr(value)
        return f'<td class="num" data-value="{esc(raw)}">{esc(show(value))}</td>'
    return f"<td>{esc(show(value))}</td>"


def key_values(items: dict) -> str:
    """A two-column table of names and values (nested dicts shown as `k=v, ...`)."""
    rows = [[name, ", ".join(f"{k or '(none)'}={show(v)}" for k, v in value.items()) if isinstance(value, dict)
             else value] for name, value in items.items()]
    return table(["", "value"], rows)


def image(png: bytes, alt: str, caption: str = "") -> str:
    """A PNG inlined as a data: URI, so the page needs no file beside it."""
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    figcaption = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{src}" alt="{esc(alt)}">{figcaption}</figure>\n'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>\n'


def preformatted(text: str) -> str:
    return f"<pre>{esc(text)}</pre>\n"
