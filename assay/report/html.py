"""Small HTML builders for the report: escaped text, tables, figures and the page's style. All
markup is built here from escaped strings; nothing in the page is fetched or run."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

#: rows of a table before the rest are counted, not shown (the page stays small on large runs)
MAX_ROWS = 100

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
  margin: 0; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c9cfdb; }
nav { padding: 8px 32px; background: #e8ebf0; font-size: 13px; }
nav a { margin-right: 14px; color: #2b4c9b; text-decoration: none; }
main { padding: 8px 32px 40px; max-width: 1200px; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 6px 20px 16px;
  margin: 18px 0; }
h2 { font-size: 18px; margin: 14px 0 6px; }
h2 .kind { font-weight: normal; color: #6a7385; font-size: 14px; margin-left: 6px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.meta { color: #4a5262; margin: 0 0 8px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border-bottom: 1px solid #e3e6ec; padding: 3px 10px 3px 0; text-align: left;
  vertical-align: top; }
th { color: #4a5262; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.plot { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.examples { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.doc { border: 1px solid #e3e6ec; border-radius: 4px; padding: 6px 10px; margin: 6px 0;
  font-size: 12px; }
.doc pre { white-space: pre-wrap; word-break: break-word; margin: 4px 0 0; max-height: 14em;
  overflow: auto; font-size: 12px; }
.kept { border-left: 4px solid #3a9b48; }
.dropped { border-left: 4px solid #c9453b; }
.note { color: #6a7385; font-style: italic; }
details { margin: 6px 0; }
summary { cursor: pointer; color: #2b4c9b; }
pre.code { background: #f3f4f7; padding: 8px; overflow: auto; font-size: 12px; }
"""


def esc(value: Any) -> str:
    return escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A cell's text: numbers rounded to be read, structures as short JSON."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, default=str)
        return text if len(text) <= 200 else text[:197] + "..."
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, limit: int = MAX_ROWS) -> str:
    """An HTML table; beyond `limit` rows, a line saying how many more there were."""
    out = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in header), "</tr></thead><tbody>"]
    shown = more = 0
    for row in rows:
        if shown >= limit:
            more += 1
            continue
        shown += 1
        cells = (
            f'<td class="num">{esc(fmt(v))}</td>'
            if isinstance(v, int | float) and not isinstance(v, bool)
            else f"<td>{esc(fmt(v))}</td>"
            for v in row
        )
        out += ["<tr>", *cells, "</tr>"]
    out.append("</tbody></table>")
    if more:
        out.append(f'<p class="note">and {more:,} more rows, not shown</p>')
    return "".join(out)


def key_values(values: Mapping[str, Any], *, limit: int = 60) -> str:
    """A nested mapping flattened to dotted keys, one row each."""
    rows: list[tuple[str, Any]] = []

    def visit(prefix: str, v: Any) -> None:
        if isinstance(v, Mapping) and v:
            for k, sub in v.items():
                visit(f"{prefix}.{k}" if prefix else str(k), sub)
        else:
            rows.append((prefix, v))

    visit("", values)
    return table(["key", "value"], rows, limit=limit)


def figure(uri: str, alt: str) -> str:
    return f'<img class="plot" alt="{esc(alt)}" src="{esc(uri)}">'


def png_file(path: Path, alt: str, max_bytes: int = 2_000_000) -> str:
    """A PNG a step drew, inlined (base64); a note when it is missing or too large."""
    if not path.is_file():
        return ""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) > max_bytes:
        return f'<p class="note">{esc(path.name)} not inlined ({len(data):,} bytes)</p>'
    return figure("data:image/png;base64," + base64.b64encode(data).decode("ascii"), alt)


def details(title: str, body: str) -> str:
    return f"<details><summary>{esc(title)}</summary>{body}</details>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'
