"""What is in the lake, as small tables ready to chart (the UI's Lake page, `edgemine tables`).

Plain functions over a LakeDB; each returns an Arrow table of a few rows
(per table, per day, per bin, per label), never the lake's rows themselves.
"""

from __future__ import annotations

import pyarrow as pa

from mining.core.schema import PREDICTIONS, TABLES
from mining.core.sql import LakeDB, quote_ident


def table_rows(db: LakeDB) -> pa.Table:
    """Per table: rows in its view, rows stored (every decision, for ``reviews``, whose
    view keeps the latest) and its Delta version (NULL: no data yet)."""
    from mining.core.tables import version

    counts = " UNION ALL ".join(
        f"SELECT '{name}' AS \"table\", (SELECT count(*) FROM {name}) AS rows, "
        f"(SELECT count(*) FROM {'raw.' if table.latest_by else ''}{name}) AS stored_rows"
        for name, table in TABLES.items()
    )
    rows = db.query(counts)
    versions = pa.array([version(db.lake, name) for name in rows.column("table").to_pylist()], pa.int64())
    return rows.append_column("version", versions)


def headline(db: LakeDB) -> dict[str, int]:
    """The numbers a reviewer looks at first."""
    return db.query(
        "SELECT (SELECT count(*) FROM images) AS images, "
        "(SELECT count(DISTINCT image_id) FROM embeddings) AS embedded, "
        "(SELECT count(*) FROM predictions) AS predictions, "
        "(SELECT count(DISTINCT model_version) FROM predictions) AS models, "
        "(SELECT count(*) FROM errors) AS errors, "
        "(SELECT count(*) FROM reviews) AS decisions"
    ).to_pylist()[0]


def predictions_per_day(db: LakeDB) -> pa.Table:
    """Predictions and mean confidence per day and model version."""
    return db.query(
        "SELECT date_trunc('day', ts)::DATE AS day, model_version, count(*) AS predictions, "
        "avg(confidence) AS mean_confidence FROM predictions GROUP BY ALL ORDER BY day, model_version"
    )


def confidence_histogram(db: LakeDB, bins: int = 20) -> pa.Table:
    """Predictions per confidence bin of width 1/bins (``low`` is the bin's lower edge)."""
    return db.query(
        "SELECT round(least(floor(confidence::DOUBLE * $bins), $bins - 1) / $bins, 4) AS low, count(*) AS predictions "
        "FROM predictions GROUP BY ALL ORDER BY low",
        {"bins": bins},
    )


def metadata_columns(db: LakeDB) -> list[str]:
    """Prediction columns that came from the input beyond the schema (camera, region, ...)."""
    known = set(PREDICTIONS.schema.names) | {PREDICTIONS.partition}
    described = db.query("DESCRIBE predictions").to_pylist()
    return [c["column_name"] for c in described if c["column_name"] not in known]


def breakdown(db: LakeDB, column: str) -> pa.Table:
    """Predictions per value of ``column`` (``label`` or a metadata column), with mean
    confidence and the share below 0.5, most frequent first."""
    allowed = ["label", "model_version", *metadata_columns(db)]
    if column not in allowed:
        raise ValueError(f"unknown column {column!r}; choose one of {', '.join(allowed)}")
    col = quote_ident(column)
    return db.query(
        f"SELECT {col}::VARCHAR AS value, count(*) AS predictions, avg(confidence) AS mean_confidence, "
        f"avg((confidence < 0.5)::INTEGER) AS low_confidence_share FROM predictions GROUP BY ALL "
        f"ORDER BY predictions DESC, value"
    )


def errors_by_reason(db: LakeDB) -> pa.Table:
    """Refused inputs per job and reason (the reason's first 80 characters)."""
    return db.query(
        "SELECT job, left(reason, 80) AS reason, count(*) AS items, max(\"at\") AS last_seen "
        "FROM errors GROUP BY ALL ORDER BY items DESC"
    )
