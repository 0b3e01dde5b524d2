"""mining.core.schema's ``conform``: rows from DuckDB or old files into a table's schema, the one
cast both the ingest jobs and `edgemine migrate` use."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mining.core.schema import ERRORS, PREDICTIONS, conform


def prediction_rows(**extra: list) -> pa.Table:
    columns = {f.name: pa.nulls(2, f.type) for f in PREDICTIONS.schema}
    columns["confidence"] = pa.array([0.5, 0.25], pa.float64())  # DuckDB's DOUBLE: cast to the schema's FLOAT
    return pa.table(dict(reversed(columns.items())) | extra)


def test_rows_are_cast_to_the_schema_in_its_order_and_extras_kept_where_the_table_allows():
    conformed = conform(prediction_rows(weather=["rain", "sun"]), PREDICTIONS)
    assert conformed.schema.names == [*PREDICTIONS.schema.names, "weather"]
    assert conformed.schema.field("confidence").type == PREDICTIONS.schema.field("confidence").type
    assert conformed.column("weather").to_pylist() == ["rain", "sun"]


def test_extras_are_dropped_where_the_table_has_none_and_a_missing_column_is_an_error():
    errors = pa.table({f.name: pa.nulls(1, f.type) for f in ERRORS.schema}
                      | {"job": ["ingest-feedback"], "reason": ["missing severity"], "stray": ["x"]})
    assert conform(errors, ERRORS).schema == ERRORS.schema
    with pytest.raises(ValueError, match=r"lack column\(s\) \['raw'\]"):
        conform(errors.drop_columns(["raw"]), ERRORS)


def test_fill_missing_makes_a_column_the_old_rows_lack_null():
    old = pa.table({"job": ["ingest-predictions"], "reason": ["bad ts"]})
    conformed = conform(old, ERRORS, fill_missing=True)
    assert conformed.schema == ERRORS.schema
    assert conformed.to_pylist()[0] == {f.name: None for f in ERRORS.schema} | {"job": "ingest-predictions",
                                                                                 "reason": "bad ts"}
