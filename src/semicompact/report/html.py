"""One self-contained HTML page: every table and figure inline (images as base64), no network.

A few lines of inline script count the images that decoded and mark the page (``data-figures-ok``),
so a headless browser can check the report renders completely.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .tables import Table, _cell

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 .3em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f2f2f2} caption{caption-side:bottom;text-align:left;font-size:12px;color:#555;padding-top:4px}
figure{margin:1em 0} figure img{max-width:100%} figcaption{font-size:12px;color:#555}
nav a{margin-right:1em} .note{font-size:12px;color:#777}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('figure img');
  var ok = 0;
  imgs.forEach(function (im) { if (im.complete && im.naturalWidth > 0) ok++; });
  document.body.setAttribute('data-figures', imgs.length);
  document.body.setAttribute('data-figures-ok', ok);
  document.body.setAttribute('data-tables', document.querySelectorAll('table').length);
});
"""


def _table_html(table: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(_cell(v, table.digits))}</td>" for v in row) + "</tr>" for row in table.rows
    )
    notes = "".join(f"<p class='note'>{e(n)}</p>" for n in table.notes)
    return (
        f"<section id='{e(table.key)}'><h3>{e(table.title)}</h3><table id='table-{e(table.key)}'>"
        f"<caption>{e(table.caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
        f"</table>{notes}</section>"
    )


def _figure_html(key: str, caption: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    e = html.escape
    return (
        f"<figure id='figure-{e(key)}'><img alt='{e(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{e(caption)}</figcaption></figure>"
    )


def render_html(
    title: str, intro: list[str], tables: list[Table], figures: list[tuple[str, str, Path]]
) -> str:
    e = html.escape
    nav = "".join(f"<a href='#{e(t.key)}'>{e(t.key)}</a>" for t in tables)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>",
        f"<h1>{e(title)}</h1>",
        *[f"<p>{e(line)}</p>" for line in intro],
        f"<nav>{nav}</nav>",
        "<h2>Tables</h2>",
        *[_table_html(t) for t in tables],
        "<h2>Figures</h2>",
        *[_figure_html(k, c, p) for k, c, p in figures],
        "</body></html>",
    ]
    return "\n".join(parts)
