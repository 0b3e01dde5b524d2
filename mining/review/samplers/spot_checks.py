"""Spot checks: random checking of what the model does, by time or by count.

- ``random-time``: k predictions per time window (and per value of a column), in a
  seeded pseudo-random order that depends only on the prediction id and the seed.
- ``every-nth``: every N-th prediction in ts order, per model version.
"""

from __future__ import annotations

import re

from mining.core.errors import QueueError
from mining.core.sql import LakeDB, quote_ident
from mining.review.samplers.sampler_base import (
    Option,
    Picked,
    Sampler,
    Slice,
    empty_slice_error,
    first_per_image,
    make_picks,
    slice_counts,
)

_DURATION = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> str:
    """``30m``, ``1h``, ``2d``, ``1w`` as a SQL interval (``1 hours``); QueueError otherwise."""
    match = _DURATION.match(str(text))
    if not match or int(match[1]) < 1:
        raise QueueError(f"--per {text!r}: give a positive number and a unit: 30m, 1h, 1d or 1w")
    return f"{int(match[1])} {_UNITS[match[2]]}"


def random_time(db: LakeDB, s: Slice, *, per: str = "1h", k: int = 5, by: str | None = None, seed: int = 0,
                limit: int | None = None) -> Picked:
    """``k`` predictions per ``per`` window of ts (and per value of column ``by``), picked in
    a pseudo-random order seeded by ``seed`` (a hash of the prediction id and the seed: the
    same lake and seed give the same picks). Ordered so that, cut by ``limit``, every window
    gets its first pick before any gets a second. An image picked twice counts once.

    Raises QueueError: a bad ``per`` or ``k``, an unknown ``by`` column, an empty slice."""
    interval = parse_duration(per)
    if k < 1:
        raise QueueError(f"--k must be at least 1, got {k}")
    stratum = "NULL"
    if by:
        columns = db.query("SELECT * FROM predictions LIMIT 0").column_names
        if by not in columns:
            raise QueueError(f"--by {by!r} is not a column of predictions; columns: {', '.join(columns)}")
        stratum = f"p.{quote_ident(by)}::VARCHAR"
    counts = slice_counts(db, s, s.predictions_sql(db, exclude=False))
    if counts["total"] - counts["excluded"] == 0:
        raise empty_slice_error("predictions", s, counts["total"], counts["excluded"])
    sql = f"""
    WITH p AS ({s.predictions_sql(db)}), w AS (
        SELECT image_id, prediction_id, confidence, time_bucket($per::INTERVAL, ts) AS win, {stratum} AS stratum,
            row_number() OVER (PARTITION BY win, stratum ORDER BY hash(prediction_id, $seed), prediction_id) AS r,
            count(*) OVER (PARTITION BY win, stratum) AS n
        FROM p)
    SELECT image_id, prediction_id, confidence, strftime(win, '%Y-%m-%d %H:%M') AS win, stratum, r, n
    FROM w WHERE r <= $k ORDER BY r, win, stratum NULLS FIRST, prediction_id"""
    rows = first_per_image(s.query(db, sql, per=interval, seed=seed, k=k).to_pylist())
    if limit is not None:
        rows = rows[:limit]
    where = f" {by}={{stratum}}" if by else ""
    reasons = [(f"random {r['r']} of {min(k, r['n'])} among {r['n']} in {per} from {r['win']}" +
                where.format(stratum=r["stratum"])) for r in rows]
    return Picked(make_picks([r["image_id"] for r in rows], [r["prediction_id"] for r in rows],
                             [r["confidence"] for r in rows], reasons),
                  candidates=counts["total"], excluded=counts["excluded"])


def every_nth(db: LakeDB, s: Slice, *, every: int = 100, limit: int | None = None) -> Picked:
    """Every ``every``-th prediction (the N-th, 2N-th, ...) of each model version in ts order
    (ties by prediction id). Numbered over the whole slice, reviewed images included, so the
    picks do not shift as images are reviewed; those reviewed are then left out.

    Raises QueueError: ``every`` < 1, an empty slice."""
    if every < 1:
        raise QueueError(f"--every must be at least 1, got {every}")
    counts = slice_counts(db, s, s.predictions_sql(db, exclude=False))
    if counts["total"] == 0:
        raise empty_slice_error("predictions", s, 0, 0)
    excluded = s.excluded_sql(db)
    sql = f"""
    WITH p AS ({s.predictions_sql(db, exclude=False)}), numbered AS (
        SELECT image_id, prediction_id, model_version, ts, confidence,
            row_number() OVER (PARTITION BY model_version ORDER BY ts, prediction_id) AS n
        FROM p)
    SELECT image_id, prediction_id, model_version, n, confidence FROM numbered
    WHERE n % $every = 0 {f'AND image_id NOT IN ({excluded})' if excluded else ''}
    ORDER BY ts, prediction_id {'' if limit is None else 'LIMIT $limit'}"""
    rows = first_per_image(s.query(db, sql, every=every, limit=limit).to_pylist())
    if not rows:
        raise QueueError(f"every {every}th prediction of {s.describe()} leaves nothing to review "
                         f"({counts['total']} predictions; the picks were reviewed, "
                         "or --every is larger than the slice)")
    reasons = [f"prediction {r['n']} of model {r['model_version']} in ts order (every {every}th)" for r in rows]
    return Picked(make_picks([r["image_id"] for r in rows], [r["prediction_id"] for r in rows],
                             [float(r["n"]) for r in rows], reasons),
                  candidates=counts["total"], excluded=counts["excluded"])


RANDOM_TIME = Sampler(
    "random-time", "k predictions per time window, stratified by a column, seeded: random checking by time", (
        Option("per", str, "the window: 30m, 1h, 1d, 1w", config_key="per"),
        Option("k", int, "predictions per window (and per value of --by)", config_key="k"),
        Option("by", str, "also per value of this predictions column, e.g. camera"),
        Option("seed", int, "the random seed (default: config mining.seed)"),
    ), ranked=False,
    run=lambda db, s, request: random_time(db, s, **request.options, limit=request.limit))

EVERY_NTH = Sampler(
    "every-nth", "every N-th prediction in ts order, per model version: random checking by count", (
        Option("every", int, "N", config_key="every"),
    ), ranked=False,
    run=lambda db, s, request: every_nth(db, s, **request.options, limit=request.limit))
