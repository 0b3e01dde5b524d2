"""The samplers of review queues: each picks images to review from a slice of the lake
and says why (mining.queues writes what they pick as a queue).

Every sampler takes a ``Slice`` (the ``--where`` predicate over ``images i JOIN
predictions p``, a model version, and whether reviewed images count) and returns
``Picked``: the images, best first, one row per image, each with the prediction that
put it there, a score and a reason. docs/QUEUES.md defines each measure:

- ``random_time``: k predictions per time window (and per value of a column), in a
  seeded pseudo-random order that depends only on the prediction id and the seed.
- ``every_nth``: every N-th prediction in ts order, per model version.
- ``uncertainty``: least confidence 1 - max p, margin p1 - p2, entropy -sum p ln p,
  from the per-class ``scores`` (normalised to sum to 1), pooled per image.
- ``from_feedback``: reported images, worst severity then newest first.
- ``label_suspects``: labels that disagree with the model or the neighbours (mining.label_errors).
- ``novelty``: images far from everything reviewed or labelled, through the index.
- ``diversity``: k-center greedy over the slice (or a queue), through the index's vectors.

What was reviewed (any decision in ``reviews``) or sent for labelling (``exports``)
is left out, unless the slice includes it. Everything is read
with SQL over the lake's views; user values are parameters, the ``--where``
predicate runs in the read-only sandbox like every user query.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from mining import tables
from mining.coreset import k_center_greedy
from mining.errors import QueueError
from mining.label_errors import confident_learning, has_labels_table, knn_disagreement, read_labels, read_pred_probs
from mining.sql import LakeDB, quote_ident

if TYPE_CHECKING:
    from mining.index import VectorIndex

log = logging.getLogger(__name__)

PICKS_SCHEMA = pa.schema([("image_id", pa.string()), ("prediction_id", pa.string()), ("score", pa.float32()),
                          ("reason", pa.string())])
MEASURES = ("least-confidence", "margin", "entropy")
POOLS = ("max", "mean")
QUERY_BLOCK = 65_536  # candidate vectors searched per index call (novelty)
_DURATION = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PARAM = re.compile(r"\$([A-Za-z_]\w*)")

# Per-class scores usable as a distribution: two classes or more, a positive sum.
_HAS_SCORES = "(scores IS NOT NULL AND cardinality(scores) >= 2 AND list_sum(map_values(scores)) > 0)"


@dataclass
class Picked:
    """What a sampler picked: ``table`` (PICKS_SCHEMA: image_id, prediction_id, score,
    reason), best first, one row per image; ``candidates``: rows of the slice it chose
    from (predictions, or images for image samplers); ``excluded``: those left out as
    reviewed or exported; ``notes``: what the user should know (a fallback used, images
    without embeddings)."""

    table: pa.Table
    candidates: int = 0
    excluded: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Slice:
    """Where a sampler picks from. ``where``: a SQL predicate over ``images i JOIN
    predictions p`` (as for `edgemine similar`); ``model_version``: only that model's
    predictions; ``include_reviewed``: keep images already reviewed or exported."""

    where: str | None = None
    model_version: str | None = None
    include_reviewed: bool = False

    def excluded_sql(self, db: LakeDB) -> str | None:
        """A query of the image ids to leave out, or None when nothing is."""
        if self.include_reviewed:
            return None
        # A table not written yet reads as an empty view.
        return "SELECT image_id FROM reviews UNION SELECT image_id FROM exports"

    def predictions_sql(self, db: LakeDB, *, exclude: bool = True) -> str:
        """The slice's predictions (every column of ``predictions``). Images are joined only
        for a ``where`` (every prediction's image is registered: the ingest checks it)."""
        conditions = []
        if self.where:
            source = "images i JOIN predictions p USING (image_id)"
            conditions.append(f"({self.where})")
        else:
            source = "predictions p"
        if self.model_version:
            conditions.append("p.model_version = $model_version")
        excluded = self.excluded_sql(db) if exclude else None
        if excluded:
            conditions.append(f"image_id NOT IN ({excluded})")
        return f"SELECT p.* FROM {source}" + (f" WHERE {' AND '.join(conditions)}" if conditions else "")

    def images_sql(self, db: LakeDB, *, exclude: bool = True) -> str:
        """The slice's image ids (one row each)."""
        conditions = []
        if self.where or self.model_version:
            source = "images i LEFT JOIN predictions p USING (image_id)"
            if self.where:
                conditions.append(f"({self.where})")
            if self.model_version:
                conditions.append("p.model_version = $model_version")
        else:
            source = "images i"
        excluded = self.excluded_sql(db) if exclude else None
        if excluded:
            conditions.append(f"image_id NOT IN ({excluded})")
        return f"SELECT DISTINCT image_id FROM {source}" + (f" WHERE {' AND '.join(conditions)}" if conditions else "")

    def query(self, db: LakeDB, sql: str, **params) -> pa.Table:
        """Run ``sql`` with the slice's parameters and ``params`` (only those it names)."""
        given = {"model_version": self.model_version, **params}
        named = set(_PARAM.findall(sql))
        return db.query(sql, {k: v for k, v in given.items() if k in named})

    def describe(self) -> str:
        parts = [f"where {self.where}" if self.where else "", f"model {self.model_version}" if self.model_version else ""]
        return ", ".join(p for p in parts if p) or "the whole lake"


def _empty(what: str, s: Slice, total: int, excluded: int) -> QueueError:
    if total and excluded == total:
        return QueueError(f"every one of the {total} {what} in {s.describe()} was already reviewed or exported; "
                          "pass --include-reviewed to take them again")
    return QueueError(f"no {what} in {s.describe()}: widen --where or --model-version")


def _picks(image_ids, prediction_ids, scores, reasons) -> pa.Table:
    return pa.table({"image_id": pa.array(list(image_ids), pa.string()),
                     "prediction_id": pa.array(list(prediction_ids), pa.string()),
                     "score": pa.array(list(scores), pa.float32()), "reason": pa.array(list(reasons), pa.string())},
                    schema=PICKS_SCHEMA)


def _first_per_image(rows: list[dict]) -> list[dict]:
    seen: set[str] = set()
    kept = []
    for row in rows:
        if row["image_id"] not in seen:
            seen.add(row["image_id"])
            kept.append(row)
    return kept


def _counts(db: LakeDB, s: Slice, sql: str, extra: str = "") -> dict:
    """count(*) of the slice's rows (``sql`` without exclusion), how many are excluded, and ``extra`` columns."""
    excluded = s.excluded_sql(db)
    excluded_count = f"count(*) FILTER (WHERE image_id IN ({excluded}))" if excluded else "0"
    return s.query(db, f"SELECT count(*) AS total, {excluded_count} AS excluded{extra} FROM ({sql})").to_pylist()[0]


# -- random checking ---------------------------------------------------------------
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
    counts = _counts(db, s, s.predictions_sql(db, exclude=False))
    if counts["total"] - counts["excluded"] == 0:
        raise _empty("predictions", s, counts["total"], counts["excluded"])
    sql = f"""
    WITH p AS ({s.predictions_sql(db)}), w AS (
        SELECT image_id, prediction_id, confidence, time_bucket($per::INTERVAL, ts) AS win, {stratum} AS stratum,
            row_number() OVER (PARTITION BY win, stratum ORDER BY hash(prediction_id, $seed), prediction_id) AS r,
            count(*) OVER (PARTITION BY win, stratum) AS n
        FROM p)
    SELECT image_id, prediction_id, confidence, strftime(win, '%Y-%m-%d %H:%M') AS win, stratum, r, n
    FROM w WHERE r <= $k ORDER BY r, win, stratum NULLS FIRST, prediction_id"""
    rows = _first_per_image(s.query(db, sql, per=interval, seed=seed, k=k).to_pylist())
    if limit is not None:
        rows = rows[:limit]
    where = f" {by}={{stratum}}" if by else ""
    reasons = [(f"random {r['r']} of {min(k, r['n'])} among {r['n']} in {per} from {r['win']}" +
                where.format(stratum=r["stratum"])) for r in rows]
    return Picked(_picks([r["image_id"] for r in rows], [r["prediction_id"] for r in rows],
                         [r["confidence"] for r in rows], reasons),
                  candidates=counts["total"], excluded=counts["excluded"])


def every_nth(db: LakeDB, s: Slice, *, every: int = 100, limit: int | None = None) -> Picked:
    """Every ``every``-th prediction (the N-th, 2N-th, ...) of each model version in ts order
    (ties by prediction id). Numbered over the whole slice, reviewed images included, so the
    picks do not shift as images are reviewed; those reviewed are then left out.

    Raises QueueError: ``every`` < 1, an empty slice."""
    if every < 1:
        raise QueueError(f"--every must be at least 1, got {every}")
    counts = _counts(db, s, s.predictions_sql(db, exclude=False))
    if counts["total"] == 0:
        raise _empty("predictions", s, 0, 0)
    excluded = s.excluded_sql(db)
    sql = f"""
    WITH p AS ({s.predictions_sql(db, exclude=False)}), numbered AS (
        SELECT image_id, prediction_id, model_version, ts, confidence,
            row_number() OVER (PARTITION BY model_version ORDER BY ts, prediction_id) AS n
        FROM p)
    SELECT image_id, prediction_id, model_version, n, confidence FROM numbered
    WHERE n % $every = 0 {f'AND image_id NOT IN ({excluded})' if excluded else ''}
    ORDER BY ts, prediction_id {'' if limit is None else 'LIMIT $limit'}"""
    rows = _first_per_image(s.query(db, sql, every=every, limit=limit).to_pylist())
    if not rows:
        raise QueueError(f"every {every}th prediction of {s.describe()} leaves nothing to review "
                         f"({counts['total']} predictions; the picks were reviewed, or --every is larger than the slice)")
    reasons = [f"prediction {r['n']} of model {r['model_version']} in ts order (every {every}th)" for r in rows]
    return Picked(_picks([r["image_id"] for r in rows], [r["prediction_id"] for r in rows],
                         [float(r["n"]) for r in rows], reasons),
                  candidates=counts["total"], excluded=counts["excluded"])


# -- uncertainty ----------------------------------------------------------------------
def _uncertainty_sql(measure: str) -> tuple[str, str]:
    """SQL over a row with ``scores`` (a map) and ``confidence``: (the uncertainty, higher
    first; the measure as defined). Rows without usable scores take the two-class
    distribution [confidence, 1 - confidence] (least confidence: 1 - confidence, which is
    the same measure for the predicted class)."""
    values = "map_values(scores)"
    total = f"list_sum({values})"
    c = "confidence::DOUBLE"
    if measure == "least-confidence":
        with_scores = f"1 - list_max({values}) / {total}"
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
        with_scores = f"ln({total}) - list_sum(list_transform({values}, x -> CASE WHEN x > 0 THEN x * ln(x) ELSE 0 END)) / {total}"
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
        units = ("SELECT d.image_id, d.prediction_id, d.score AS confidence, d.label, NULL::MAP(VARCHAR, FLOAT) AS scores "
                 "FROM detections d WHERE d.prediction_id IN (SELECT prediction_id FROM ({predictions}))")
        counts = _counts(db, s, units.format(predictions=s.predictions_sql(db, exclude=False)))
        unit_name = "detection boxes"
        missing = counts["total"] - counts["excluded"]
    else:
        units = "{predictions}"
        counts = _counts(db, s, s.predictions_sql(db, exclude=False),
                         extra=f", count(*) FILTER (WHERE NOT {_HAS_SCORES}) AS missing")
        unit_name = "predictions"
        missing = counts["missing"]
    if counts["total"] - counts["excluded"] == 0:
        raise _empty(unit_name, s, counts["total"], counts["excluded"])
    if measure != "least-confidence" and missing:
        what = ("detection boxes have a score but no per-class scores" if boxes else
                f"{missing:,} of the {counts['total']:,} predictions in {s.describe()} have no per-class scores "
                "(or only one class)")
        if not fallback:
            raise QueueError(f"{measure} needs per-class scores: {what}. Pass --fallback to take those as two classes "
                             f"[confidence, 1 - confidence], use least-confidence, or narrow --where to p.scores IS NOT NULL")
        notes.append(f"{missing:,} {unit_name} without per-class scores taken as [confidence, 1 - confidence] (--fallback)")
    elif measure == "least-confidence" and missing and not boxes:
        notes.append(f"{missing:,} predictions without per-class scores: their confidence is the top class's probability")
    source = units.format(predictions=s.predictions_sql(db))
    label = "label" if boxes else "label, scores"
    scored = f"SELECT image_id, prediction_id, confidence, {label}, {u} AS u, {score} AS measure FROM ({source})"
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
    return Picked(_picks([r["image_id"] for r in rows], [r["prediction_id"] for r in rows],
                         [r["measure"] for r in rows], reasons),
                  candidates=counts["total"], excluded=counts["excluded"], notes=notes)


def _top_per_image(db: LakeDB, s: Slice, scored: str, limit: int) -> list[dict]:
    """The ``limit`` images with the highest ``u`` of any of their rows (max pooling): the
    distinct images among the top rows, read with a top-N (no sort, no GROUP BY of every
    row), taking more rows only when images repeat among them."""
    fetch = max(4 * limit, 64)
    while True:
        rows = s.query(db, f"SELECT * FROM ({scored}) ORDER BY u DESC, prediction_id LIMIT $fetch", fetch=fetch).to_pylist()
        kept = _first_per_image(rows)
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
        text += f" · mean of {row['units']} {('box' if boxes else 'prediction') + ('' if row['units'] == 1 else ('es' if boxes else 's'))}"
    elif boxes:
        text += " · the image's most uncertain box"
    return text


# -- feedback -------------------------------------------------------------------------
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
    counts = _counts(db, s, base.replace("$min_severity", str(int(min_severity))))
    if counts["total"] - counts["excluded"] == 0:
        raise _empty("reports" + (f" of severity {min_severity} or more" if min_severity else ""), s,
                     counts["total"], counts["excluded"])
    excluded = s.excluded_sql(db)
    sql = f"""
    WITH f AS (
        SELECT *, coalesce(reported_at, ingested_at) AS reported,
            row_number() OVER (PARTITION BY image_id ORDER BY severity DESC, coalesce(reported_at, ingested_at) DESC, feedback_id) AS r,
            count(*) OVER (PARTITION BY image_id) AS reports
        FROM ({base}) {f'WHERE image_id NOT IN ({excluded})' if excluded else ''})
    SELECT image_id, prediction_id, severity, strftime(reported, '%Y-%m-%d %H:%M') AS reported, reporter, comment, reports
    FROM f WHERE r = 1 ORDER BY severity DESC, f.reported DESC, image_id LIMIT $limit"""
    rows = s.query(db, sql, min_severity=int(min_severity), limit=limit).to_pylist()
    reasons = [f"severity {r['severity']} · {r['reporter'] or 'someone'}, {r['reported']}: {r['comment'] or '(no comment)'}"
               + (f" (+{r['reports'] - 1} more report{'s' if r['reports'] > 2 else ''})" if r["reports"] > 1 else "")
               for r in rows]
    return Picked(_picks([r["image_id"] for r in rows], [r["prediction_id"] for r in rows],
                         [float(r["severity"]) for r in rows], reasons),
                  candidates=counts["total"], excluded=counts["excluded"])


# -- what a retrain forgot --------------------------------------------------------------
def forgotten(db: LakeDB, s: Slice, *, baseline: str | None = None, limit: int = 100) -> Picked:
    """Labelled images the slice's model version (default: the newest) gets wrong that
    ``baseline`` (default: the version before it, mining.metrics.previous_version) got right:
    what a retrain forgot. The most confidently wrong first; the truth is each image's
    newest labels, as metrics take it (mining.slices).

    Raises QueueError: no labels, fewer than two model versions, none forgotten in the slice."""
    from mining.metrics import model_versions, previous_version
    from mining.slices import frame_ctes

    if not tables.exists(db.lake, "labels"):
        raise QueueError("the lake has no labels yet: import some first (`edgemine labels import`)")
    versions = model_versions(db)
    version = s.model_version or (versions[-1] if versions else None)
    baseline = baseline or (previous_version(db, version) if version else None)
    if version not in versions or baseline not in versions or version == baseline:
        raise QueueError(f"forgotten compares two model versions with predictions: got --model-version {version!r} and "
                         f"--baseline {baseline!r}; versions: {', '.join(versions) or 'none'}")
    s = Slice(where=s.where, model_version=version, include_reviewed=s.include_reviewed)
    in_slice = f"AND n.image_id IN ({s.images_sql(db, exclude=False)})" if s.where else ""
    sql = f"""
    WITH {frame_ctes()}
    SELECT n.image_id, n.prediction_id, n.confidence, n.label AS now_label, o.label AS was_label, t.true_label
    FROM latest n JOIN latest o ON o.image_id = n.image_id AND o.model_version = $baseline
    JOIN truth t ON t.image_id = n.image_id
    WHERE n.model_version = $model_version AND n.label IS DISTINCT FROM t.true_label AND o.label = t.true_label {in_slice}"""
    rows = s.query(db, sql, baseline=baseline).to_pylist()
    excluded = s.excluded_sql(db)
    gone = set(s.query(db, excluded).column(0).to_pylist()) if excluded and rows else set()
    kept = [r for r in rows if r["image_id"] not in gone]
    if not kept:
        raise _empty(f"images {version} gets wrong that {baseline} got right", s, len(rows), len(rows))
    kept.sort(key=lambda r: (-(r["confidence"] or 0.0), r["image_id"]))  # the most confidently wrong first
    shown = kept[:limit] if limit else kept
    reasons = [f"{version} says {r['now_label']} ({r['confidence']:.2f}), {baseline} said {r['was_label']}; "
               f"labelled {r['true_label']}" for r in shown]
    return Picked(_picks([r["image_id"] for r in shown], [r["prediction_id"] for r in shown],
                         [float(r["confidence"] or 0.0) for r in shown], reasons),
                  candidates=len(rows), excluded=len(rows) - len(kept))


# -- label errors ----------------------------------------------------------------------
def label_suspects(db: LakeDB, s: Slice, index: Callable[[], VectorIndex], *, labels: str = "auto",
                   review: str | None = None, method: str = "auto", neighbours: int = 10, limit: int = 100) -> Picked:
    """Labelled images whose label is suspect (mining.label_errors), most suspect first.

    ``labels``/``review``: where labels come from (``read_labels``). ``method``:
    ``cleanlab`` (confident learning on the per-class scores of each image's latest
    prediction), ``knn`` (the ``neighbours`` nearest labelled images vote, through the
    index), or ``auto``: cleanlab when every labelled image has per-class scores
    covering its label, else knn (the summary says which and why). Labelled images are
    this sampler's input, so reviewed images are not left out here.

    Raises QueueError: no labels, an unknown method, cleanlab asked where scores are missing."""
    if method not in ("auto", "cleanlab", "knn"):
        raise QueueError(f"unknown --method {method!r}; allowed: auto, cleanlab, knn")
    image_ids, given, origin = read_labels(db, source=labels, review=review)
    if s.where or s.model_version:
        in_slice = set(s.query(db, s.images_sql(db, exclude=False)).column("image_id").to_pylist())
        keep = np.array([i in in_slice for i in image_ids.tolist()], bool)
        image_ids, given = image_ids[keep], given[keep]
        if len(image_ids) == 0:
            raise QueueError(f"no image labelled in the {origin} is in {s.describe()}")
    notes = [f"labels from the {origin}: {len(image_ids):,} images"]
    chosen = method
    probs, classes, has = (None, [], None)
    if method in ("auto", "cleanlab"):
        probs, classes, has = read_pred_probs(db, image_ids, model_version=s.model_version)
        covered = has & np.isin(given, classes)
        if not covered.all():
            why = f"{int((~covered).sum()):,} labelled images have no per-class score for their label"
            if method == "cleanlab":
                raise QueueError(f"cleanlab needs per-class scores: {why}; use --method knn")
            chosen = "knn"
            notes.append(f"method knn: {why}")
        else:
            chosen = "cleanlab"
    if chosen == "cleanlab":
        found = confident_learning(given, probs, classes)
        reasons = [f"labelled {str(given[r])!r}, model says {str(sugg)!r} · p(label) {1 - sc:.2f} (cleanlab)"
                   for r, sc, sugg in zip(found.rows, found.scores, found.suggested)]
    else:
        idx = index()
        positions = idx.positions(image_ids, skip_missing=True)
        if len(positions) < len(image_ids):
            notes.append(f"{len(image_ids) - len(positions):,} labelled images have no embedding (edgemine embed)")
            embedded = set(idx.ids[positions].tolist())
            keep = np.array([i in embedded for i in image_ids.tolist()], bool)
            image_ids, given = image_ids[keep], given[keep]
            positions = idx.positions(image_ids)
        found = knn_disagreement(None, given, k=neighbours, index=idx, positions=positions)
        reasons = [f"labelled {str(given[r])!r}, {sc:.0%} of its {neighbours} nearest labelled images say {str(sugg)!r} (kNN)"
                   for r, sc, sugg in zip(found.rows, found.scores, found.suggested)]
    rows = found.rows[:limit]
    return Picked(_picks(image_ids[rows].tolist(), [None] * len(rows), found.scores[:limit].tolist(), reasons[:limit]),
                  candidates=len(image_ids), excluded=0, notes=notes)


# -- embedding samplers ------------------------------------------------------------------
def _slice_positions(db: LakeDB, s: Slice, idx: VectorIndex, what: str) -> tuple[np.ndarray, int, int, list[str]]:
    """Index positions of the slice's images not excluded; (positions, total, excluded, notes)."""
    counts = _counts(db, s, s.images_sql(db, exclude=False))
    ids = s.query(db, s.images_sql(db)).column("image_id").to_numpy(zero_copy_only=False).astype(str)
    if len(ids) == 0:
        raise _empty("images", s, counts["total"], counts["excluded"])
    positions = idx.positions(ids, skip_missing=True)
    notes = []
    if len(positions) < len(ids):
        notes.append(f"{len(ids) - len(positions):,} images of the slice have no embedding and were left out (edgemine embed)")
    if len(positions) == 0:
        raise QueueError(f"no image of {s.describe()} has an embedding, which {what} needs: run edgemine embed first")
    return np.sort(positions), counts["total"], counts["excluded"], notes


def reference_ids(db: LakeDB) -> np.ndarray:
    """Images already seen: every reviewed image, and every labelled one when the lake has a labels table."""
    sql = "SELECT image_id FROM reviews"
    if has_labels_table(db):
        sql += " UNION SELECT image_id FROM labels"
    return db.query(sql).column("image_id").to_numpy(zero_copy_only=False).astype(str)


def novelty(db: LakeDB, s: Slice, index: Callable[[], VectorIndex], *, neighbours: int = 1, limit: int = 100) -> Picked:
    """The slice's images farthest from everything reviewed or labelled: cosine distance
    (1 - similarity) to the nearest seen image (the mean over the ``neighbours`` nearest),
    through the index; farthest first.

    Raises QueueError: nothing reviewed or labelled yet, no embeddings, an empty slice."""
    if neighbours < 1:
        raise QueueError(f"--neighbours must be at least 1, got {neighbours}")
    seen = reference_ids(db)
    if len(seen) == 0:
        raise QueueError("novelty measures distance to what was reviewed or labelled, and nothing is yet: review some "
                         "images first, or use the diversity sampler")
    idx = index()
    reference = idx.positions(seen, skip_missing=True)
    if len(reference) == 0:
        raise QueueError(f"none of the {len(seen):,} reviewed or labelled images has an embedding: run edgemine embed first")
    positions, total, excluded, notes = _slice_positions(db, s, idx, "novelty")
    positions = positions[~np.isin(positions, reference)]
    if len(positions) == 0:
        raise _empty("images not yet reviewed", s, total, total)
    k = min(neighbours, len(reference))
    distance = np.empty(len(positions), np.float32)
    nearest = np.empty(len(positions), np.int64)
    for start in range(0, len(positions), QUERY_BLOCK):
        block = positions[start:start + QUERY_BLOCK]
        sims, found = idx.search(idx.vectors[block], k, subset=reference, exact=True)
        distance[start:start + len(block)] = 1 - sims.mean(1)
        nearest[start:start + len(block)] = found[:, 0]
    order = np.lexsort((idx.ids[positions], -distance))[:limit]
    reasons = [f"cosine distance {distance[o]:.3f} to the {'nearest' if k == 1 else f'{k} nearest'} reviewed or labelled "
               f"image{'s' if k > 1 else ''} (nearest {idx.ids[nearest[o]]})" for o in order]
    return Picked(_picks(idx.ids[positions[order]].tolist(), [None] * len(order), distance[order].tolist(), reasons),
                  candidates=total, excluded=excluded, notes=notes)


def diversity(db: LakeDB, s: Slice, index: Callable[[], VectorIndex], *, queue_images: list[str] | None = None,
              away_from_reviewed: bool = True, seed: int = 0, device: str = "cpu", limit: int = 100) -> Picked:
    """``limit`` images of the slice (or of ``queue_images``, another queue's) that cover it:
    k-center greedy on their embeddings (mining.coreset), starting away from what was
    reviewed or labelled (``away_from_reviewed``), else from a seeded random image.
    Ranked in the order picked; the score is the distance to the nearest earlier pick.

    Raises QueueError: no embeddings, an empty slice."""
    idx = index()
    positions, total, excluded, notes = _slice_positions(db, s, idx, "diversity")
    if queue_images is not None:
        positions = positions[np.isin(idx.ids[positions], np.asarray(queue_images, str))]
        if len(positions) == 0:
            raise QueueError(f"no image of the queue is in {s.describe()} and unreviewed (or embedded)")
        total = len(queue_images)
    centers = None
    if away_from_reviewed:
        seen = idx.positions(reference_ids(db), skip_missing=True)
        if len(seen):
            centers = idx.vectors[seen]
            notes.append(f"picked away from {len(seen):,} reviewed or labelled images")
    first = int(np.random.default_rng(seed).integers(len(positions)))
    picks = k_center_greedy(idx.vectors[positions], limit, centers=centers, first=first, device=device)
    chosen = positions[picks.order]
    reasons = [("k-center pick 1" + (" (seeded random start)" if centers is None else f": {d:.3f} from the nearest reviewed image"))
               if i == 0 else f"k-center pick {i + 1}: {d:.3f} from the nearest earlier pick"
               for i, d in enumerate(picks.distances.tolist())]
    scores = np.where(np.isfinite(picks.distances), picks.distances, np.nan)
    return Picked(_picks(idx.ids[chosen].tolist(), [None] * len(chosen), scores.tolist(), reasons),
                  candidates=total, excluded=excluded, notes=notes)
