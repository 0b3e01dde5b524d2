"""The ``label-errors`` sampler: labelled images whose label disagrees with a confident
prediction (cleanlab's confident learning) or with their nearest labelled images (a
kNN vote through the index): mining.review.label_errors measures both."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mining.core.errors import QueueError
from mining.core.sql import LakeDB
from mining.review.label_errors import confident_learning, knn_disagreement, read_labels, read_pred_probs
from mining.review.samplers.sampler_base import Option, Picked, Sampler, Slice, make_picks

if TYPE_CHECKING:
    from mining.search.index import VectorIndex


def label_suspects(db: LakeDB, s: Slice, index: Callable[[], VectorIndex], *, labels: str = "auto",
                   review: str | None = None, method: str = "auto", neighbours: int = 10, limit: int = 100) -> Picked:
    """Labelled images whose label is suspect (mining.review.label_errors), most suspect first.

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
        reasons = [f"labelled {str(given[r])!r}, {sc:.0%} of its {neighbours} nearest labelled images "
                   f"say {str(sugg)!r} (kNN)"
                   for r, sc, sugg in zip(found.rows, found.scores, found.suggested)]
    rows = found.rows[:limit]
    return Picked(make_picks(image_ids[rows].tolist(), [None] * len(rows), found.scores[:limit].tolist(),
                             reasons[:limit]),
                  candidates=len(image_ids), excluded=0, notes=notes)



LABEL_ERRORS = Sampler(
    "label-errors", "labels that disagree with a confident prediction (cleanlab) or with the nearest labelled images", (
        Option("labels", str, "where labels come from: the labels table, a review's decisions, or auto", "auto",
               choices=("auto", "table", "review")),
        Option("review", str, "the review whose decisions are the labels (when there is no labels table)"),
        Option("method", str, "cleanlab (needs per-class scores), knn (embeddings), or auto", "auto",
               choices=("auto", "cleanlab", "knn")),
        Option("neighbours", int, "labelled neighbours that vote (knn)", config_key="neighbours"),
    ), embeddings=True,
    run=lambda db, s, request: label_suspects(db, s, request.index, **request.options, limit=request.limit))
