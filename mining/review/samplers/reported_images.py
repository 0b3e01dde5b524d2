"""The ``feedback`` sampler: images people reported (`edgemine ingest feedback`, the
``feedback`` table), worst severity first, then the newest report."""

from __future__ import annotations

from mining.core import tables
from mining.core.errors import QueueError
from mining.core.sql import LakeDB
from mining.review.samplers.sampler_base import (
    Option,
    Picked,
    Sampler,
    Slice,
    empty_slice_error,
    make_picks,
    slice_counts,
)


def from_feedback(db: LakeDB, s: Slice, *, min_severity: int = 0, limit: int = 100) -> Picked:
    """Images people reported (the ``feedback`` table), worst severity first, then the newest
    report; one row per image, its worst and newest report's comment as the reason.

    Raises QueueError: no feedback yet, or none in the slice."""
    if not tables.exists(db.lake, "feedback"):
        raise QueueError("the lake has no feedback yet: load reports with `edgemine ingest feedback FILE`")
    in_slice = ""
    if s.where or s.model_version:
        in_slice = f"AND image_id IN ({s.images_sql(db, exclude=False)})"
    base = f"SELECT * FROM feedback WHERE severity >= $min_severity {in_slice}"
    counts = slice_counts(db, s, base.replace("$min_severity", str(int(min_severity))))
    if counts["total"] - counts["excluded"] == 0:
        raise empty_slice_error("reports" + (f" of severity {min_severity} or more" if min_severity else ""), s,
                     counts["total"], counts["excluded"])
    excluded = s.excluded_sql(db)
    sql = f"""
    WITH f AS (
        SELECT *, coalesce(reported_at, ingested_at) AS reported,
            row_number() OVER (PARTITION BY image_id
                ORDER BY severity DESC, coalesce(reported_at, ingested_at) DESC, feedback_id) AS r,
            count(*) OVER (PARTITION BY image_id) AS reports
        FROM ({base}) {f'WHERE image_id NOT IN ({excluded})' if excluded else ''})
    SELECT image_id, prediction_id, severity, strftime(reported, '%Y-%m-%d %H:%M') AS reported, reporter, comment,
        reports
    FROM f WHERE r = 1 ORDER BY severity DESC, f.reported DESC, image_id LIMIT $limit"""
    rows = s.query(db, sql, min_severity=int(min_severity), limit=limit).to_pylist()
    reasons = [f"severity {r['severity']} · {r['reporter'] or 'someone'}, {r['reported']}: "
               f"{r['comment'] or '(no comment)'}"
               + (f" (+{r['reports'] - 1} more report{'s' if r['reports'] > 2 else ''})" if r["reports"] > 1 else "")
               for r in rows]
    return Picked(make_picks([r["image_id"] for r in rows], [r["prediction_id"] for r in rows],
                             [float(r["severity"]) for r in rows], reasons),
                  candidates=counts["total"], excluded=counts["excluded"])



FEEDBACK = Sampler(
    "feedback", "images people reported (edgemine ingest feedback), worst severity then newest first", (
        Option("min_severity", int, "only reports of at least this severity", 0),
    ),
    run=lambda db, s, request: from_feedback(db, s, **request.options, limit=request.limit))
