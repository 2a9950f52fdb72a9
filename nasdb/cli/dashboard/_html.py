"""The dashboard's HTML: one page layout with inline CSS, tables, and charts as inline SVG.

Nothing is loaded from elsewhere (no CDN, no script): a page is one HTML document whose charts
are drawn here on the server (box plots, best-so-far curves, distance bars); the embedding map
is a PNG from matplotlib served by the app itself. Every value is escaped.
"""

from __future__ import annotations

import math
from datetime import datetime
from html import escape
from typing import Any, Iterable, Sequence
from urllib.parse import quote

NAV = (("/", "Store"), ("/runs", "Runs"), ("/predictors", "Predictors"), ("/embeddings", "Task map"),
       ("/curves", "Search curves"), ("/suggest", "Suggest"), ("/docs", "API"))
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939")
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:.6em 1.5em;display:flex;gap:1.5em;align-items:center;flex-wrap:wrap}
header b{font-size:1.1em;margin-right:1em} header a{color:#c9d4ea;text-decoration:none}
header a.on{color:#fff;border-bottom:2px solid #7fb3ff} main{padding:1em 1.5em;max-width:1200px}
h1{font-size:1.35em;margin:.4em 0} h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff;margin:.5em 0;font-size:13px}
th,td{border:1px solid #dde1e7;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eef1f5} td.n{text-align:right;font-variant-numeric:tabular-nums}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:.8em 1em;margin:.6em 0}
.stats{display:flex;gap:1em;flex-wrap:wrap} .stat{background:#fff;border:1px solid #dde1e7;border-radius:6px;
padding:.5em 1em} .stat b{display:block;font-size:1.4em} .muted{color:#667085} .err{color:#b42318}
.tag{background:#e0ecff;border-radius:3px;padding:0 .35em;margin-right:.3em;font-size:12px}
form.inline{display:flex;gap:.8em;align-items:end;flex-wrap:wrap} label{display:flex;flex-direction:column;gap:.2em}
code{background:#eef1f5;padding:0 .25em;border-radius:3px} svg{background:#fff;border:1px solid #dde1e7}
"""


def fmt(v: Any, digits: int = 4) -> str:
    """A cell: floats to ``digits`` significant places, times to the second, lists joined."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x, digits) for x in v)
    return str(v)


def page(title: str, body: str, *, active: str = "/", store: str = "") -> str:
    nav = "".join(f'<a href="{href}"{" class=on" if href == active else ""}>{escape(name)}</a>' for href, name in NAV)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)} · nasdb</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_CSS}</style></head>"
            f"<body><header><b>nasdb</b>{nav}<span class=muted style='margin-left:auto'>{escape(store)}</span></header>"
            f"<main><h1>{escape(title)}</h1>{body}</main></body></html>")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, links: dict[str, str] | None = None,
          table_id: str = "") -> str:
    """An HTML table of ``rows``; ``links`` maps a column to a URL pattern with ``{}`` for the cell's value."""
    if not rows:
        return "<p class=muted>nothing yet</p>"
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            text = escape(fmt(v))
            if links and c in links and v is not None:
                text = f'<a href="{escape(links[c].format(quote(str(v), safe="")))}">{text}</a>'
            cls = " class=n" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    ident = f" id={escape(table_id)}" if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def stats(items: Iterable[tuple[str, Any]]) -> str:
    return "<div class=stats>" + "".join(f"<div class=stat><b>{escape(fmt(v))}</b>{escape(k)}</div>"
                                         for k, v in items) + "</div>"


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def box_plots(rows: Sequence[dict[str, Any]], *, label: str = "task", width: int = 760) -> str:
    """Horizontal box plots, one per row with ``q`` = [min, 5%, 25%, 50%, 75%, 95%, max]: whiskers at 5% and 95%."""
    rows = [r for r in rows if r.get("q")]
    if not rows:
        return "<p class=muted>no finite validation accuracies</p>"
    left, right, row_h, top = 230, width - 20, 22, 10
    lo = min(r["q"][1] for r in rows)
    hi = max(r["q"][5] for r in rows)
    x = _scale(lo, hi, left, right)
    height = top + row_h * len(rows) + 30
    out = [f'<svg class=boxplot width="{width}" height="{height}" role=img aria-label="validation accuracy per task">']
    for t in _ticks(lo, hi):
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{height - 25}" stroke="#eee"/>'
                   f'<text x="{x(t):.1f}" y="{height - 10}" font-size="11" text-anchor="middle">{t:.3g}</text>')
    for i, r in enumerate(rows):
        _, p5, q1, med, q3, p95, _ = r["q"]
        y = top + i * row_h + row_h / 2
        color = PALETTE[i % len(PALETTE)]
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="12" text-anchor="end">{escape(str(r[label]))}</text>'
                   f'<line x1="{x(p5):.1f}" x2="{x(p95):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#555"/>'
                   f'<rect x="{x(q1):.1f}" y="{y - 7:.1f}" width="{max(x(q3) - x(q1), 1):.1f}" height="14" '
                   f'fill="{color}" fill-opacity=".55" stroke="{color}"/>'
                   f'<line x1="{x(med):.1f}" x2="{x(med):.1f}" y1="{y - 8:.1f}" y2="{y + 8:.1f}" stroke="#111" '
                   f'stroke-width="2"/><title>{escape(str(r[label]))}: median {med:.4g}, quartiles {q1:.4g} to '
                   f'{q3:.4g}, 5-95% {p5:.4g} to {p95:.4g}</title>')
    out.append("</svg>")
    return "".join(out)


def line_chart(series: Sequence[dict[str, Any]], *, width: int = 760, height: int = 360, x_label: str = "children",
               y_label: str = "best validation accuracy so far") -> str:
    """Step lines of best-so-far curves: each series has ``name`` and ``points`` [(x, y), ...], x ascending."""
    series = [s for s in series if s["points"]]
    if not series:
        return "<p class=muted>no runs with finite validation accuracies</p>"
    left, right, top, bottom = 70, width - 240, 15, height - 45
    xs = [p[0] for s in series for p in s["points"]]
    ys = [p[1] for s in series for p in s["points"]]
    x_hi = max(xs)
    log = x_hi > 1000  # a long run (a million children): log-scale x, so its early steps show
    tx = (lambda v: math.log10(max(v, 1))) if log else (lambda v: v)
    x = _scale(tx(1), tx(x_hi), left, right)
    y_lo, y_hi = min(ys), max(ys)
    y = _scale(y_lo, y_hi, bottom, top)
    out = [f'<svg class=curves width="{width}" height="{height}" role=img aria-label="{escape(y_label)}">']
    for t in _ticks(y_lo, y_hi):
        out.append(f'<line x1="{left}" x2="{right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{y(t) + 4:.1f}" font-size="11" text-anchor="end">{t:.3g}</text>')
    x_ticks = [10 ** k for k in range(0, int(math.log10(x_hi)) + 1)] if log else _ticks(1, x_hi)
    for t in x_ticks:
        out.append(f'<text x="{x(tx(t)):.1f}" y="{bottom + 16}" font-size="11" text-anchor="middle">{t:,.0f}</text>')
    out.append(f'<text x="{(left + right) / 2}" y="{height - 8}" font-size="12" text-anchor="middle">'
               f'{escape(x_label)}{" (log scale)" if log else ""}</text>'
               f'<text x="14" y="{(top + bottom) / 2}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 14 {(top + bottom) / 2})">{escape(y_label)}</text>')
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts, prev = [], None
        for px, py in s["points"]:
            if prev is not None:
                pts.append(f"{x(tx(px)):.1f},{y(prev):.1f}")
            pts.append(f"{x(tx(px)):.1f},{y(py):.1f}")
            prev = py
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(pts)}">'
                   f'<title>{escape(s["name"])}</title></polyline>'
                   f'<rect x="{right + 12}" y="{top + i * 18}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{right + 27}" y="{top + i * 18 + 9}" font-size="11">{escape(s["name"][:34])}</text>')
    out.append("</svg>")
    return "".join(out)


def bars(items: Sequence[tuple[str, float]], *, width: int = 560, label: str = "distance") -> str:
    """Horizontal bars (e.g. the distance of each nearest training task)."""
    if not items:
        return ""
    left, right, row_h = 200, width - 60, 20
    hi = max(v for _, v in items) or 1.0
    height = row_h * len(items) + 10
    out = [f'<svg class=bars width="{width}" height="{height}" role=img aria-label="{escape(label)}">']
    for i, (name, v) in enumerate(items):
        yy = 5 + i * row_h
        w = max((right - left) * v / hi, 1)
        out.append(f'<text x="{left - 6}" y="{yy + 13}" font-size="12" text-anchor="end">{escape(name)}</text>'
                   f'<rect x="{left}" y="{yy + 2}" width="{w:.1f}" height="14" fill="#1f77b4"/>'
                   f'<text x="{left + w + 4:.1f}" y="{yy + 13}" font-size="11">{v:.3f}</text>')
    out.append("</svg>")
    return "".join(out)


def select(name: str, options: Sequence[str], selected: str | None = None, *, blank: str | None = None) -> str:
    opts = [f'<option value="">{escape(blank)}</option>'] if blank is not None else []
    opts += [f'<option value="{escape(o)}"{" selected" if o == selected else ""}>{escape(o)}</option>' for o in options]
    return f'<select name="{escape(name)}" id="{escape(name)}">{"".join(opts)}</select>'


def error_page(status: int, message: str, *, active: str = "/", store: str = "") -> str:
    return page(f"Error {status}", f"<p class=err id=error>{escape(message)}</p>", active=active, store=store)
