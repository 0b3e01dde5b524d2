"""SQL: a console over the lake's views for data engineers.

Read-only by DuckDB's own settings (mining.core.sql.LakeDB): writes, ATTACH, INSTALL,
COPY and reads outside the lake are refused. A query stops at ``[query] timeout_s`` and
holds at most ``[query] max_rows`` rows (the server is shared; docs/LAKE.md, Query limits).
Results show a thumbnail column when they carry image_id, and download as CSV or Parquet.
"""

from __future__ import annotations

import base64

import pyarrow as pa
import streamlit as st

from mining.core.errors import QueryError, ReadOnlyError
from mining.core.schema import TABLES
from mining.core.serialize import csv_bytes, parquet_bytes
from mining.core.sql import EXAMPLE_QUERY, Head
from ui import data

SHOWN_ROWS = 1000
THUMBNAIL_ROWS = 200  # thumbnails for the first rows only: one lookup, not one per row of a huge result


def render() -> None:
    st.title("SQL")
    st.caption(
        "Read-only DuckDB over the lake's views: "
        + ", ".join(f"`{t}`" for t in TABLES)
        + ". `raw.reviews` has every decision (the view, the latest per image)."
    )
    st.session_state.setdefault("sql", EXAMPLE_QUERY)
    query = st.text_area("Query", key="sql", height=160)
    if st.button("Run", type="primary", key="sql_run"):
        st.session_state["sql_result"] = _run(query)
    result = st.session_state.get("sql_result")
    if isinstance(result, str):
        st.error(result)
    elif result is not None:
        _show(result)


def _run(query: str) -> Head | str:
    """The result, or the message to show instead."""
    if not query.strip():
        return "Write a query first, e.g. SELECT * FROM predictions LIMIT 10."
    try:
        return data.user_query(query)
    except ReadOnlyError as e:
        return f"Refused: {e}"
    except QueryError as e:  # DuckDB's message: a syntax error, an unknown column, the sandbox's refusal
        return str(e)


def _show(head: Head) -> None:
    result = head.table
    st.caption(
        f"{result.num_rows:,} rows" + (f", the first {SHOWN_ROWS:,} shown" if result.num_rows > SHOWN_ROWS else "")
        + (" — the result has more, cut at [query] max_rows; the downloads hold these rows, "
           "`edgemine sql --output FILE.parquet` writes every row" if head.cut else "")
    )
    shown = result.slice(0, SHOWN_ROWS)
    frame = _without_vectors(shown).to_pandas()
    config = {}
    if "image_id" in shown.column_names:
        ids = [i for i in shown.column("image_id").to_pylist()[:THUMBNAIL_ROWS] if isinstance(i, str)]
        thumbs = data.thumbnails(data.lake().uri, tuple(dict.fromkeys(ids)))
        frame.insert(0, "thumbnail", [_data_uri(thumbs.get(i)) if n < THUMBNAIL_ROWS else None
                                      for n, i in enumerate(frame["image_id"])])
        config["thumbnail"] = st.column_config.ImageColumn("thumbnail", width="small")
    st.dataframe(frame, hide_index=True, width="stretch", column_config=config, row_height=64 if config else None)
    csv, parquet = st.columns(2)
    # Callables: the file is written when clicked, not on every rerun of the page.
    csv.download_button("Download CSV", lambda: csv_bytes(result), "query.csv", "text/csv")
    parquet.download_button("Download Parquet", lambda: parquet_bytes(result), "query.parquet",
                            "application/vnd.apache.parquet")


def _without_vectors(table: pa.Table) -> pa.Table:
    """Embedding and blob columns shown as their size: 512 or 1280 floats per cell help nobody."""
    for name in table.column_names:
        t = table.schema.field(name).type
        if pa.types.is_binary(t) or (
            (pa.types.is_list(t) or pa.types.is_fixed_size_list(t)) and pa.types.is_floating(t.value_type)
        ):
            sizes = pa.array([None if v is None else f"<{len(v)} {'bytes' if pa.types.is_binary(t) else 'floats'}>"
                              for v in table.column(name).to_pylist()], pa.string())
            table = table.set_column(table.column_names.index(name), name, sizes)
    return table


def _data_uri(jpeg: bytes | None) -> str | None:
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


if __name__ == "__main__":  # run by Streamlit as a page of ui/app.py
    render()
