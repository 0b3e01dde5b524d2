"""Query results as files and JSON: what the CLI prints and the UI downloads, one way.

CSV holds no nested values, so lists, maps and structs are written as JSON text;
JSON has no bytes, dates or NaN, so those become base64, ISO 8601 and null.
pyarrow is imported by the functions that write files, not by ``jsonable``: printing a small
result (`edgemine sql`) does without it.
"""

from __future__ import annotations

import base64
import io
import json
import math
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


def jsonable(value: Any) -> Any:
    """``value`` (as Arrow's ``to_pylist`` gives it) made of JSON's types only."""
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


def csv_bytes(table: pa.Table) -> bytes:
    """The table as CSV with a header row; nested values as JSON text."""
    import pyarrow.csv as pacsv

    buffer = io.BytesIO()
    pacsv.write_csv(_csv_safe(table), buffer)
    return buffer.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _csv_safe(table: pa.Table) -> pa.Table:
    import pyarrow as pa

    columns = []
    for column in table.columns:
        if pa.types.is_nested(column.type):
            column = pa.array([None if v is None else json.dumps(jsonable(v)) for v in column.to_pylist()], pa.string())
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)
