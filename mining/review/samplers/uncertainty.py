"""Uncertainty sampling: the images the model is least sure of, from the per-class
``scores`` of its predictions (normalised to sum to 1), pooled per image
(docs/QUEUES.md defines each measure):

- ``least-confidence``: 1 - max p;
- ``margin``: p1 - p2, the gap between the two most likely classes;
- ``entropy``: -sum p ln p.
"""

from __future__ import annotations

from mining.core.errors import QueueError
from mining.core.sql import LakeDB
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

MEASURES = ("least-confidence", "margin", "entropy")
POOLS = ("max", "mean")

# Per-class scores usable as a distribution: two classes or more, a positive sum. Over the columns
# that _with_score_columns adds: the map's values, their sum, max and count, computed once a row
# (written out in each expression, map_values(scores) was taken four times a row: 20% of a queue).
_HAS_SCORES = "(_values IS NOT NULL AND _classes >= 2 AND _total > 0)"


def _with_score_columns(source: str) -> str:
    """``source``'s rows with the columns the uncertainty expressions read: ``_values`` (the scores'
    values), ``_total``, ``_top`` (their sum and max) and ``_classes`` (how many)."""
    values = f"SELECT *, map_values(scores) AS _values FROM ({source})"
    return f"SELECT *, list_sum(_values) AS _total, list_max(_values) AS _top, len(_values) AS _classes FROM ({values})"


def _uncertainty_sql(measure: str) -> tuple[str, str]:
    """SQL over a row with ``scores`` (a map) and ``confidence``: (the uncertainty, higher
    first; the measure as defined). Rows without usable scores take the two-class
    distribution [confidence, 1 - confidence] (least confidence: 1 - confidence, which is
    the same measure for the predicted class). The row's columns come through _with_score_columns."""
    values, total = "_values", "_total"
    c = "confidence::DOUBLE"
    if measure == "least-confidence":
        with_scores = f"1 - _top / {total}"
        fallback = f"1 - {c}"
        u = f"CASE WHEN {_HAS_SCORES} THEN {with_scores} ELSE {fallback} END"
        return u, u
    if measure == "margin":
        ranked = f"list_reverse_sort({values})"
        with_scores = f"({ranked}[1] - {ranked}[2]) / {total}"
        fallback = f"abs(2 * {c} - 1)"
        m = f"CASE WHEN {_HAS_SCORES} THEN {with_scores} ELSE {fallback} END"
        return f"1 - ({m})", m
    if measure == "entropy":
        # -sum (x/T) ln(x/T) = ln T - (sum x ln x) / T: no outer column inside the lambda.
        x_ln_x = "x -> CASE WHEN x > 0 THEN x * ln(x) ELSE 0 END"
        with_scores = f"ln({total}) - list_sum(list_transform({values}, {x_ln_x})) / {total}"
        fallback = (f"-(CASE WHEN {c} > 0 THEN {c} * ln({c}) ELSE 0 END"
                    f" + CASE WHEN {c} < 1 THEN (1 - {c}) * ln(1 - {c}) ELSE 0 END)")
        e = f"CASE WHEN {_HAS_SCORES} THEN {with_scores} ELSE {fallback} END"
        return e, e
    raise QueueError(f"unknown measure {measure!r}; allowed: {', '.join(MEASURES)}")


def uncertainty(db: LakeDB, s: Slice, *, measure: str, pool: str = "max", boxes: bool = False, fallback: bool = False,
                limit: int = 100) -> Picked:
    """The ``limit`` images the model is least sure of, by ``measure`` (least-confidence,
    margin or entropy; docs/QUEUES.md), most uncertain first.

    Each prediction's per-class ``scores`` (normalised to sum to 1) give the measure.
    margin and entropy need them: a slice with predictions lacking them (or with one
    class only) is an error, unless ``fallback``, which takes those as the two-class
    distribution [confidence, 1 - confidence] (and says how many). least-confidence uses
    ``confidence`` (the top class's probability) where scores are missing.
    ``boxes``: the units are the detection boxes of the slice's predictions (their score
    is the confidence; they have no per-class scores, so margin and entropy need ``fallback``).
    ``pool``: an image's uncertainty over its units (predictions, or boxes): ``max``
    (its most uncertain one) or ``mean``.

    Raises QueueError: an unknown measure or pool, an empty slice, missing scores."""
    if measure not in MEASURES:
        raise QueueError(f"unknown measure {measure!r}; allowed: {', '.join(MEASURES)}")
    if pool not in POOLS:
        raise QueueError(f"--pool {pool!r}: allowed: {', '.join(POOLS)}")
    u, score = _uncertainty_sql(measure)
    notes = []
    if boxes:
        units = ("SELECT d.image_id, d.prediction_id, d.score AS confidence, d.label, "
                 "NULL::MAP(VARCHAR, FLOAT) AS scores "
                 "FROM detections d WHERE d.prediction_id IN (SELECT prediction_id FROM ({predictions}))")
        counts = slice_counts(db, s, units.format(predictions=s.predictions_sql(db, exclude=False)))
        unit_name = "detection boxes"
        missing = counts["total"] - counts["excluded"]
    else:
        units = "{predictions}"
        counts = slice_counts(db, s, _with_score_columns(s.predictions_sql(db, exclude=False)),
                         extra=f", count(*) FILTER (WHERE NOT {_HAS_SCORES}) AS missing")
        unit_name = "predictions"
        missing = counts["missing"]
    if counts["total"] - counts["excluded"] == 0:
        raise empty_slice_error(unit_name, s, counts["total"], counts["excluded"])
    if measure != "least-confidence" and missing:
        what = ("detection boxes have a score but no per-class scores" if boxes else
                f"{missing:,} of the {counts['total']:,} predictions in {s.describe()} have no per-class scores "
                "(or only one class)")
        if not fallback:
            raise QueueError(f"{measure} needs per-class scores: {what}. Pass --fallback to take those as two classes "
                             "[confidence, 1 - confidence], use least-confidence, "
                             "or narrow --where to p.scores IS NOT NULL")
        notes.append(f"{missing:,} {unit_name} without per-class scores taken as [confidence, 1 - confidence] "
                     "(--fallback)")
    elif measure == "least-confidence" and missing and not boxes:
        notes.append(f"{missing:,} predictions without per-class scores: "
                     "their confidence is the top class's probability")
    source = units.format(predictions=s.predictions_sql(db))
    label = "label" if boxes else "label, scores"
    scored = (f"SELECT image_id, prediction_id, confidence, {label}, {u} AS u, {score} AS measure "
              f"FROM ({_with_score_columns(source)})")
    if pool == "max":
        rows = _top_per_image(db, s, scored, limit)
    else:
        rows = s.query(db, f"""
        WITH scored AS ({scored})
        SELECT image_id, arg_max(prediction_id, u) AS prediction_id, arg_max(confidence, u) AS confidence,
            arg_max({'label' if boxes else 'label'}, u) AS label, {'NULL' if boxes else 'arg_max(scores, u)'} AS scores,
            avg(u) AS u, avg(measure) AS measure, count(*) AS units
        FROM scored GROUP BY image_id ORDER BY u DESC, image_id LIMIT $limit""", limit=limit).to_pylist()
    reasons = [_uncertainty_reason(measure, r, pool, boxes) for r in rows]
    return Picked(make_picks([r["image_id"] for r in rows], [r["prediction_id"] for r in rows],
                             [r["measure"] for r in rows], reasons),
                  candidates=counts["total"], excluded=counts["excluded"], notes=notes)


def _top_per_image(db: LakeDB, s: Slice, scored: str, limit: int) -> list[dict]:
    """The ``limit`` images with the highest ``u`` of any of their rows (max pooling): the
    distinct images among the top rows, read with a top-N (no sort, no GROUP BY of every
    row), taking more rows only when images repeat among them."""
    fetch = max(4 * limit, 64)
    while True:
        sql = f"SELECT * FROM ({scored}) ORDER BY u DESC, prediction_id LIMIT $fetch"
        rows = s.query(db, sql, fetch=fetch).to_pylist()
        kept = first_per_image(rows)
        if len(kept) >= limit or len(rows) < fetch:
            return kept[:limit]
        fetch *= 4


def _uncertainty_reason(measure: str, row: dict, pool: str, boxes: bool) -> str:
    name = {"least-confidence": "1 - max p", "margin": "margin p1 - p2", "entropy": "entropy"}[measure]
    text = f"{name} {row['measure']:.3f}"
    if row.get("scores"):
        scores = sorted(((k, v) for k, v in row["scores"] if v is not None), key=lambda kv: -kv[1])
        total = sum(v for _, v in scores) or 1.0
        text += " · " + ", ".join(f"{k} {v / total:.2f}" for k, v in scores[:3])
    elif row.get("label") is not None:
        text += f" · {'box ' if boxes else ''}{row['label']} {row['confidence']:.2f}"
    if pool == "mean" and "units" in row:
        unit = ("box" if boxes else "prediction") + ("" if row["units"] == 1 else ("es" if boxes else "s"))
        text += f" · mean of {row['units']} {unit}"
    elif boxes:
        text += " · the image's most uncertain box"
    return text



_POOL = Option("pool", str, "an image's uncertainty over its predictions or boxes: max (its most uncertain) or mean",
               "max", choices=POOLS)
_BOXES = Option("boxes", bool, "measure the detection boxes of the predictions, not the predictions", False)
_FALLBACK = Option("fallback", bool, "take predictions without per-class scores as [confidence, 1 - confidence] "
                   "rather than refuse", False)


def _measured_by(measure: str):
    """The sampler's ``run``: uncertainty by ``measure`` (its options are the function's keywords)."""
    return lambda db, s, request: uncertainty(db, s, measure=measure, **request.options, limit=request.limit)


LEAST_CONFIDENCE = Sampler("least-confidence", "lowest top-class probability first: 1 - max p", (_POOL, _BOXES),
                           run=_measured_by("least-confidence"))
MARGIN = Sampler("margin", "smallest gap between the two most likely classes first: p1 - p2",
                 (_POOL, _BOXES, _FALLBACK), run=_measured_by("margin"))
ENTROPY = Sampler("entropy", "highest entropy of the class probabilities first: -sum p ln p",
                  (_POOL, _BOXES, _FALLBACK), run=_measured_by("entropy"))
