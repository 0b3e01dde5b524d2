"""The ``forgotten`` sampler: labelled images a retrained model gets wrong that the
version before it got right."""

from __future__ import annotations

from mining.core import tables
from mining.core.errors import QueueError
from mining.core.sql import LakeDB
from mining.review.samplers.sampler_base import Option, Picked, Sampler, Slice, empty_slice_error, make_picks


def forgotten(db: LakeDB, s: Slice, *, baseline: str | None = None, limit: int = 100) -> Picked:
    """Labelled images the slice's model version (default: the newest) gets wrong that
    ``baseline`` (default: the version before it, mining.evaluation.metrics.previous_version) got right:
    what a retrain forgot. The most confidently wrong first; the truth is each image's
    newest labels, as metrics take it (mining.evaluation.slices).

    Raises QueueError: no labels, fewer than two model versions, none forgotten in the slice."""
    from mining.evaluation.metrics import model_versions, previous_version
    from mining.evaluation.slices import frame_ctes

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
    WHERE n.model_version = $model_version AND n.label IS DISTINCT FROM t.true_label AND o.label = t.true_label
        {in_slice}"""
    rows = s.query(db, sql, baseline=baseline).to_pylist()
    excluded = s.excluded_sql(db)
    gone = set(s.query(db, excluded).column(0).to_pylist()) if excluded and rows else set()
    kept = [r for r in rows if r["image_id"] not in gone]
    if not kept:
        raise empty_slice_error(f"images {version} gets wrong that {baseline} got right", s, len(rows), len(rows))
    kept.sort(key=lambda r: (-(r["confidence"] or 0.0), r["image_id"]))  # the most confidently wrong first
    shown = kept[:limit] if limit else kept
    reasons = [f"{version} says {r['now_label']} ({r['confidence']:.2f}), {baseline} said {r['was_label']}; "
               f"labelled {r['true_label']}" for r in shown]
    return Picked(make_picks([r["image_id"] for r in shown], [r["prediction_id"] for r in shown],
                             [float(r["confidence"] or 0.0) for r in shown], reasons),
                  candidates=len(rows), excluded=len(rows) - len(kept))



FORGOTTEN = Sampler(
    "forgotten", "labelled images the --model-version (default: the newest) gets wrong that --baseline "
    "(default: the version before it) got right: what a retrain forgot, most confidently wrong first", (
        Option("baseline", str, "the model version to compare with (default: the one before, by first prediction)"),
    ),
    run=lambda db, s, request: forgotten(db, s, **request.options, limit=request.limit))
