"""Similarity search over the index: the images like one or more seeds, and
unlike any negatives, optionally within a SQL slice of the lake.

Seeds and negatives are vectors, so an image in the lake (its stored embedding)
and a file from outside (embedded on the fly, embed.files) are treated alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mining.feedback import classifier_query, mean_direction
from mining.index import SearchError, VectorIndex
from mining.sql import LakeDB

# What --where filters: every image, with its predictions (one row per prediction).
SLICE_FROM = "images i LEFT JOIN predictions p USING (image_id)"


@dataclass(frozen=True)
class Hit:
    rank: int
    image_id: str
    score: float


def rank(index: VectorIndex, positives: np.ndarray, negatives: np.ndarray | None = None, k: int = 20, *,
         subset: np.ndarray | None = None, exclude: np.ndarray | None = None, seed: int = 0) -> list[Hit]:
    """The ``k`` images most like ``positives`` (float32 (p, d) vectors) and unlike
    ``negatives`` (float32 (m, d)), among ``subset`` positions (None: all), never
    one of ``exclude``. Positives only: cosine similarity to their mean direction
    (the index's own search). With negatives: a linear classifier's score
    (mining.feedback), computed exactly over every candidate."""
    scores, positions = rank_positions(index, positives, negatives, k, subset=subset, exclude=exclude, seed=seed)
    return [Hit(rank=r + 1, image_id=str(index.ids[p]), score=float(s)) for r, (s, p) in enumerate(zip(scores, positions))]


def rank_positions(index: VectorIndex, positives: np.ndarray, negatives: np.ndarray | None = None, k: int = 20, *,
                   subset: np.ndarray | None = None, exclude: np.ndarray | None = None,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``rank`` as arrays: float32 scores and int64 index positions (k',), best first."""
    positives = np.atleast_2d(np.asarray(positives, np.float32))
    if len(positives) == 0:
        raise SearchError("give at least one positive: an image id or an image file")
    negatives = np.zeros((0, index.dim), np.float32) if negatives is None else np.atleast_2d(np.asarray(negatives, np.float32))
    if negatives.size == 0:
        query, exact = mean_direction(positives), False
    else:
        query, exact = classifier_query(index, positives, negatives, exclude=exclude, seed=seed), True
    scores, positions = index.search(query[None], k, subset=subset, exclude=exclude, exact=exact)
    found = positions[0] >= 0  # an IVF search can come back short
    return scores[0][found], positions[0][found]


def slice_positions(db: LakeDB, index: VectorIndex, where: str) -> np.ndarray:
    """Index positions of the images matching a SQL predicate over images joined with
    their predictions (``i.`` and ``p.`` qualify the columns the two share)."""
    ids = db.query(f"SELECT DISTINCT image_id FROM {SLICE_FROM} WHERE ({where})").column("image_id")
    return index.positions(ids.to_numpy(zero_copy_only=False), skip_missing=True) if len(ids) else np.zeros(0, np.int64)


def hits_table(hits: list[Hit]) -> pa.Table:
    return pa.table({
        "rank": pa.array([h.rank for h in hits], pa.int32()),
        "image_id": pa.array([h.image_id for h in hits], pa.string()),
        "score": pa.array([h.score for h in hits], pa.float32()),
    })


BROWSE_ORDERS = {
    "lowest confidence first": "min(p.confidence) ASC NULLS LAST",
    "newest first": "max(p.ts) DESC NULLS LAST",
    "most predictions first": "count(p.prediction_id) DESC",
}


def browse(db: LakeDB, index: VectorIndex, *, where: str | None = None, order: str = "lowest confidence first",
           limit: int = 24) -> list[str]:
    """Image ids to choose seeds from: embedded images (those in ``index``) matching the
    ``where`` slice (as for ``slice_positions``), in ``order`` (a key of BROWSE_ORDERS)."""
    if order not in BROWSE_ORDERS:
        raise SearchError(f"unknown order {order!r}; choose one of: {', '.join(BROWSE_ORDERS)}")
    sql = (f"SELECT image_id FROM {SLICE_FROM} {f'WHERE ({where})' if where else ''} "
           f"GROUP BY image_id ORDER BY {BROWSE_ORDERS[order]}, image_id")
    # Keep only what the index holds (a seed needs a vector), without a scan of the
    # embeddings: take a few times the limit, and everything only if too few are embedded.
    for fetch in (f" LIMIT {4 * limit}", ""):
        ids = db.query(sql + fetch).column("image_id").to_numpy(zero_copy_only=False)
        positions = index.positions(ids, skip_missing=True) if len(ids) else np.zeros(0, np.int64)  # keeps the order
        if len(positions) >= limit or len(ids) < 4 * limit:
            break
    return [str(index.ids[p]) for p in positions[:limit]]
