"""Output of the ``nasdb`` command: aligned text tables for people, JSON (``--json``) for programs.

JSON is strict: non-finite floats are written as the strings "nan", "inf", "-inf"; datetimes
as ISO 8601 strings.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any, Iterable, Mapping, Sequence

import click

MAX_CELL = 60


def plain(value: Any) -> Any:
    """A JSON-safe version of ``value`` (recursively)."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return plain(value.item())
    return value


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(plain(obj), indent=2, allow_nan=False))


def cell(value: Any) -> str:
    """One value as table text: floats to 4 decimals, lists compact, long text cut."""
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.4f}" if math.isfinite(value) else str(value)
    elif isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
    elif isinstance(value, (list, tuple)):
        text = "[" + ",".join(cell(v) for v in value) + "]"
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def echo_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Rows as an aligned table (numbers right-aligned); "(no rows)" when empty."""
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    if not rows:
        click.echo("(no rows)")
        return
    texts = [[cell(r.get(c)) for c in columns] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) or r.get(c) is None
                   for r in rows) for c in columns]
    widths = [max(len(c), *(len(t[i]) for t in texts)) for i, c in enumerate(columns)]

    def line(values: Iterable[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    click.echo(line(columns))
    click.echo(line("-" * w for w in widths))
    for t in texts:
        click.echo(line(t))


def echo_pairs(pairs: Mapping[str, Any]) -> None:
    """``key: value`` lines with aligned keys."""
    width = max((len(k) for k in pairs), default=0)
    for k, v in pairs.items():
        click.echo(f"{k.ljust(width)}  {cell(v) if not isinstance(v, str) else v}")


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
