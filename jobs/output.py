"""How commands print results: a readable table, CSV, or JSON (one object per row)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from mining.core.serialize import csv_bytes, jsonable

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = ("table", "csv", "json")


def write_json(obj: Any, out: TextIO) -> None:
    json.dump(jsonable(obj), out, indent=2)
    out.write("\n")


def write_rows(table: pa.Table, fmt: str, out: TextIO, *, max_rows: int = 100, cut: bool = False) -> None:
    """``table`` in ``fmt``; ``cut``: it is the first rows of a longer result (the table format says so)."""
    if fmt == "json":
        write_json(table.to_pylist(), out)
    elif fmt == "csv":
        out.write(csv_bytes(table).decode())
    elif fmt == "table":
        out.write(render_table(table, max_rows=max_rows, cut=cut))
    else:
        raise ValueError(f"unknown output format {fmt!r}; allowed: {', '.join(FORMATS)}")


def render_table(table: pa.Table, *, max_rows: int = 100, max_width: int = 40, cut: bool = False) -> str:
    shown = table.slice(0, max_rows)
    rows = [tuple(row.values()) for row in shown.to_pylist()]
    return render_rows(table.column_names, rows, total=table.num_rows, max_width=max_width, cut=cut)


def render_rows(names: Sequence[str], rows: Sequence[Sequence[Any]], *, total: int | None = None,
                max_width: int = 40, cut: bool = False) -> str:
    """``rows`` (Python values, one tuple per row) under their column ``names`` as a readable table;
    ``total``: the rows of the whole result when more than these (default: these); ``cut``: the
    result has more rows than ``total`` (the first rows of a longer query result)."""
    total = len(rows) if total is None else total
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    lines = [" | ".join(n.ljust(w) for n, w in zip(names, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    more = total - len(rows)
    if cut and not more:
        lines.append(f"(the first {len(rows)} rows; the result has more: --max-rows N shows more, "
                     "--output FILE.parquet writes every row)")
        return "\n".join(lines) + "\n"
    lines.append(
        f"({total} row{'s' if total != 1 else ''}"
        + (f", {more} not shown; use --format csv or --output for all)" if more else ")")
    )
    return "\n".join(lines) + "\n"


def _cell(value: Any, max_width: int) -> str:
    if isinstance(value, float):
        value = float(f"{value:.6g}")  # float32 columns print as their 7 digits, not 17
    text = (
        "NULL"
        if value is None
        else json.dumps(jsonable(value))
        if isinstance(value, dict | list)
        else str(jsonable(value))
    )
    return text if len(text) <= max_width else text[: max_width - 1] + "…"

