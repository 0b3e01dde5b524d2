"""How commands print results: a readable table, CSV, or JSON (one object per row)."""

from __future__ import annotations

import base64
import io
import json
import math
from datetime import date, datetime
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.csv as pacsv

FORMATS = ("table", "csv", "json")


class Summary:
    """Base of the jobs' summary dataclasses: ``to_dict`` for --json, seconds rounded."""

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # Arrow gives a MAP as a list of (key, value) pairs; JSON wants an object.
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {str(k): jsonable(v) for k, v in value}
        return [jsonable(v) for v in value]
    return value


def write_json(obj: Any, out: TextIO) -> None:
    json.dump(jsonable(obj), out, indent=2)
    out.write("\n")


def write_rows(table: pa.Table, fmt: str, out: TextIO, *, max_rows: int = 100) -> None:
    if fmt == "json":
        write_json(table.to_pylist(), out)
    elif fmt == "csv":
        buffer = io.BytesIO()
        pacsv.write_csv(_csv_safe(table), buffer)
        out.write(buffer.getvalue().decode())
    elif fmt == "table":
        out.write(render_table(table, max_rows=max_rows))
    else:
        raise ValueError(f"unknown output format {fmt!r}; allowed: {', '.join(FORMATS)}")


def render_table(table: pa.Table, *, max_rows: int = 100, max_width: int = 40) -> str:
    shown = table.slice(0, max_rows)
    names = table.column_names
    rows = [[_cell(v, max_width) for v in row.values()] for row in shown.to_pylist()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    lines = [" | ".join(n.ljust(w) for n, w in zip(names, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    more = table.num_rows - shown.num_rows
    lines.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''}" + (f", {more} not shown; use --format csv or --output for all)" if more else ")"))
    return "\n".join(lines) + "\n"


def _cell(value: Any, max_width: int) -> str:
    if isinstance(value, float):
        value = float(f"{value:.6g}")  # float32 columns print as their 7 digits, not 17
    text = "NULL" if value is None else json.dumps(jsonable(value)) if isinstance(value, dict | list) else str(jsonable(value))
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def _csv_safe(table: pa.Table) -> pa.Table:
    """CSV holds no nested values: write lists, maps and structs as JSON text."""
    columns = []
    for column in table.columns:
        if pa.types.is_nested(column.type):
            column = pa.array([None if v is None else json.dumps(jsonable(v)) for v in column.to_pylist()], pa.string())
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)
