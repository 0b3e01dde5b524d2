"""Similarity search over the index: the images like one or more seeds, and
unlike any negatives, optionally within a SQL slice of the lake.

Seeds and negatives are vectors, so an image in the lake (its stored embedding)
and a file from outside (embedded on the fly by embed.files, with the model the
index was built from) are treated alike. ``find_similar`` is what `edgemine
similar` runs; ``rank`` is the same over vectors; ``browse`` lists seed candidates.

Over the object index (``index.objects``: one vector per detection box, `edgemine embed
--objects`) the same search takes detection ids as seeds and gives ``ObjectHit``s: the
detection, its image and its box; ``names_detections`` tells a detection id from the rest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mining.core.config import Config
from mining.core.errors import SearchError
from mining.core.lake import is_s3
from mining.core.sets import save_set
from mining.core.sql import LakeDB
from mining.search.feedback import LOOP, LoopSettings, classifier_query, loop_scores, mean_direction
from mining.search.index import VectorIndex

IMAGE_ID = re.compile(r"^[0-9a-f]{20}$")
# (file URIs, backbone, weights tag) -> float32 (n, d) vectors: embed.files.file_embedder(config)
FileEmbedder = Callable[[Sequence[str], str, str], np.ndarray]

# What --where filters: every image, with its predictions (one row per prediction).
SLICE_FROM = "images i LEFT JOIN predictions p USING (image_id)"
# ... and over objects: every detection box, with its image.
OBJECT_SLICE_FROM = "detections d JOIN images i USING (image_id)"


@dataclass(frozen=True)
class Hit:
    rank: int
    image_id: str
    score: float


@dataclass(frozen=True)
class ObjectHit:
    """A hit of the object index: the detection, its image, its box [x1, y1, x2, y2] as cropped."""

    rank: int
    detection_id: str
    image_id: str
    box: list[float]
    score: float


@dataclass
class Seeds:
    """What the user gave, as vectors: ``labels`` name them (image id, or the file's
    URI), ``vectors`` float32 (n, d), ``positions`` int64 (m,) those in the index
    (excluded from results: a seed is not news)."""

    labels: list[str]
    vectors: np.ndarray
    positions: np.ndarray


@dataclass
class Query:
    """A search as the user gave it, resolved against the index: seeds, negatives
    (None without any), and the ``--where`` slice as positions (None: everything)."""

    positive: Seeds
    negative: Seeds | None
    subset: np.ndarray | None

    @property
    def exclude(self) -> np.ndarray:
        """What was given is not news: never a result."""
        if self.negative is None:
            return self.positive.positions
        return np.concatenate([self.positive.positions, self.negative.positions])


def resolve_seeds(index: VectorIndex, seeds: Sequence[str], embed_files: FileEmbedder | None = None) -> Seeds:
    """Image ids (looked up in ``index``) and image files (embedded by ``embed_files``
    with the index's model) as one Seeds.

    Raises SearchError for an id the index lacks, a seed that is neither an id nor a
    file, or a file when no ``embed_files`` was given. Over the object index, ids are
    detection ids (a file seed is then best a crop of the object)."""
    if index.objects:
        ids = [s for s in seeds if not os.path.exists(s) and not is_s3(s)]
    else:
        ids = [s for s in seeds if IMAGE_ID.match(s) and not os.path.exists(s)]
    files = [s for s in seeds if s not in ids]
    for f in files:
        if not is_s3(f) and not os.path.exists(f):
            raise SearchError(f"{f!r} is neither an image id (20 hex digits) nor an image file")
    positions = index.positions(ids) if ids else np.zeros(0, np.int64)
    vectors = [index.vectors[positions]]
    if files:
        if embed_files is None:
            raise SearchError(f"{files[0]!r} is a file: pass embed_files=embed.files.file_embedder(config) to embed it")
        vectors.append(embed_files(files, index.backbone, index.weights))
    return Seeds(labels=ids + files, vectors=np.concatenate(vectors), positions=positions)


def resolve_query(db: LakeDB, index: VectorIndex, seeds: Sequence[str], *, negatives: Sequence[str] = (),
                  where: str | None = None, embed_files: FileEmbedder | None = None) -> Query:
    """Seeds and negatives as vectors (ids or files), and the SQL slice as positions.

    Raises SearchError (bad seeds, a slice no embedded image matches) or QueryError (bad SQL)."""
    positive = resolve_seeds(index, seeds, embed_files)
    negative = resolve_seeds(index, negatives, embed_files) if negatives else None
    subset = None
    if where:
        subset = slice_positions(db, index, where)
        if len(subset) == 0:
            raise SearchError(f"no embedded {'box' if index.objects else 'image'} matches --where {where!r}")
    return Query(positive, negative, subset)


def find_similar(db: LakeDB, index: VectorIndex, config: Config, seeds: Sequence[str], *,
                 negatives: Sequence[str] = (), k: int | None = None, where: str | None = None,
                 save: str | None = None, embed_files: FileEmbedder | None = None) -> list[Hit] | list[ObjectHit]:
    """The ``k`` images (default ``config.mining.k``) most like ``seeds`` and unlike
    ``negatives`` (image ids, or image files embedded by ``embed_files``), within the
    ``where`` slice; saved as the named set ``save`` when given. What `edgemine similar` runs.
    Over the object index: the ``k`` boxes (ObjectHit) like the seed boxes (detection ids),
    ``where`` over ``detections d JOIN images i``; ``save`` keeps their images, best first.

    Raises SearchError (unknown seed, empty slice, bad k) or QueryError (bad SQL)."""
    query = resolve_query(db, index, seeds, negatives=negatives, where=where, embed_files=embed_files)
    # The production model's doubt and class are per image: the reviewer loop's prior for image searches.
    with_prior = query.negative is not None and not index.objects
    hits = rank(index, query.positive.vectors, None if query.negative is None else query.negative.vectors,
                k or config.mining.k, subset=query.subset, exclude=query.exclude, seed=config.mining.seed,
                uncertainty=model_uncertainty(db, index) if with_prior else None,  # used with negatives
                predicted=predicted_classes(db, index) if with_prior else None,
                positive_positions=query.positive.positions,
                negative_positions=None if query.negative is None else query.negative.positions)
    if index.objects:
        hits = object_hits(db, index, hits)
    if save:
        images = list(dict.fromkeys(h.image_id for h in hits))  # an image once, at its best box's rank
        best = {}
        for h in hits:
            best.setdefault(h.image_id, h.score)
        save_set(db, save, images, source=f"similar{'-objects' if index.objects else ''}:{' '.join(seeds)}",
                 user=config.mining.user, scores=[best[i] for i in images])
    return hits


def names_detections(db: LakeDB, seeds: Sequence[str]) -> bool:
    """Whether ``seeds`` name detection boxes of the lake (so a search should run over objects):
    some seed, neither an image id nor a file, is a ``detection_id``."""
    candidates = [s for s in seeds if not IMAGE_ID.match(s) and not is_s3(s) and not os.path.exists(s)]
    if not candidates:
        return False
    found = db.query("SELECT count(*) AS n FROM detections WHERE list_contains($ids, detection_id)",
                     {"ids": candidates})
    return found.column("n")[0].as_py() > 0


def object_hits(db: LakeDB, index: VectorIndex, hits: list[Hit]) -> list[ObjectHit]:
    """``hits`` of the object index (their ``image_id`` a detection id) with each box's image and box."""
    rows = db.query(
        "SELECT detection_id, image_id, box FROM object_embeddings "
        "WHERE backbone = $backbone AND weights = $weights AND list_contains($ids, detection_id)",
        {"backbone": index.backbone, "weights": index.weights, "ids": [h.image_id for h in hits]},
    ).to_pylist()
    found = {r["detection_id"]: r for r in rows}
    return [ObjectHit(h.rank, h.image_id, found[h.image_id]["image_id"], list(found[h.image_id]["box"] or []), h.score)
            for h in hits if h.image_id in found]


def rank(index: VectorIndex, positives: np.ndarray, negatives: np.ndarray | None = None, k: int = 20, *,
         subset: np.ndarray | None = None, exclude: np.ndarray | None = None, seed: int = 0,
         uncertainty: np.ndarray | None = None, positive_positions: np.ndarray | None = None,
         negative_positions: np.ndarray | None = None, predicted: np.ndarray | None = None,
         settings: LoopSettings = LOOP) -> list[Hit]:
    """The ``k`` images most like ``positives`` (float32 (p, d) vectors) and unlike
    ``negatives`` (float32 (m, d)), among ``subset`` positions (None: all), never
    one of ``exclude``. Positives only: cosine similarity to their mean direction
    (the index's own search). With negatives: a linear classifier's score
    (mining.search.feedback), computed exactly over every candidate.

    ``uncertainty``: float32 (n, f) per index position, the production model's doubt
    (``model_uncertainty``): with negatives, it joins the classifier's score as the
    reviewer loop's prior (mining.search.feedback.loop_scores, docs/MINING.md); scores are
    then sums of weighted z-scores, not similarities. ``positive_positions`` /
    ``negative_positions``: index positions of the first rows of ``positives`` /
    ``negatives`` (the rest, files from outside, count as average doubt).
    ``predicted``: float32 (n, c) per index position, the one-hot of the production
    model's predicted class (``predicted_classes``): with negatives, it joins the
    classifier's features (docs/MINING.md). ``settings``: how the loop weighs these
    (mining.search.feedback.LoopSettings; the benchmark varies them)."""
    scores, positions = rank_positions(index, positives, negatives, k, subset=subset, exclude=exclude, seed=seed,
                                       uncertainty=uncertainty, positive_positions=positive_positions,
                                       negative_positions=negative_positions, predicted=predicted, settings=settings)
    return [
        Hit(rank=r + 1, image_id=str(index.ids[p]), score=float(s)) for r, (s, p) in enumerate(zip(scores, positions))
    ]


def rank_positions(index: VectorIndex, positives: np.ndarray, negatives: np.ndarray | None = None, k: int = 20, *,
                   subset: np.ndarray | None = None, exclude: np.ndarray | None = None, seed: int = 0,
                   uncertainty: np.ndarray | None = None, positive_positions: np.ndarray | None = None,
                   negative_positions: np.ndarray | None = None,
                   predicted: np.ndarray | None = None,
                   settings: LoopSettings = LOOP) -> tuple[np.ndarray, np.ndarray]:
    """``rank`` as arrays: float32 scores and int64 index positions (k',), best first."""
    positives = np.atleast_2d(np.asarray(positives, np.float32))
    if len(positives) == 0:
        raise SearchError("give at least one positive: an image id or an image file")
    negatives = (
        np.zeros((0, index.dim), np.float32) if negatives is None else np.atleast_2d(np.asarray(negatives, np.float32))
    )
    if (uncertainty is not None or predicted is not None) and negatives.size:
        return _rank_with_prior(index, positives, negatives, k, subset, exclude, seed, uncertainty,
                                positive_positions, negative_positions, predicted, settings)
    if negatives.size == 0:
        query, exact = mean_direction(positives), False
    else:
        query, exact = classifier_query(index, positives, negatives, exclude=exclude, seed=seed), True
    scores, positions = index.search(query[None], k, subset=subset, exclude=exclude, exact=exact)
    found = positions[0] >= 0  # an IVF search can come back short
    return scores[0][found], positions[0][found]


def _rank_with_prior(index, positives, negatives, k, subset, exclude, seed, uncertainty, positive_positions,
                     negative_positions, predicted=None, settings=LOOP) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate scored exactly by mining.search.feedback.loop_scores, the top ``k``."""
    def marks_rows(values: np.ndarray | None, rows: int, positions: np.ndarray | None) -> np.ndarray | None:
        """The marks' rows of a per-position array; rows past ``positions`` (files) get its mean."""
        if values is None:
            return None
        known = values[np.asarray(positions if positions is not None else [], np.int64)[:rows]]
        return np.concatenate([known, np.tile(values.mean(0), (rows - len(known), 1))]).astype(np.float32)

    scores = loop_scores(index, positives, negatives, prior=uncertainty,
                         positive_prior=marks_rows(uncertainty, len(positives), positive_positions),
                         negative_prior=marks_rows(uncertainty, len(negatives), negative_positions), exclude=exclude,
                         seed=seed, predicted=predicted, settings=settings,
                         positive_predicted=marks_rows(predicted, len(positives), positive_positions),
                         negative_predicted=marks_rows(predicted, len(negatives), negative_positions))
    candidates = np.arange(len(index)) if subset is None else np.asarray(subset, np.int64)
    if exclude is not None and len(exclude):
        candidates = candidates[~np.isin(candidates, exclude)]
    k = min(k, len(candidates))
    if k <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    top = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
    top = top[np.lexsort((top, -scores[top]))]  # best first, ties by position
    return scores[top], top.astype(np.int64)


# The production model's doubt per image, from its predictions (the least sure one
# when there are several): 1 - confidence, 1 - margin (top score minus the next), and
# the entropy of the class scores over log(classes). Images without predictions: 0.
UNCERTAINTY_SQL = """
WITH per_prediction AS (
    SELECT image_id, confidence,
           list_sort(map_values(scores), 'DESC') AS s
    FROM predictions
)
SELECT image_id,
       1 - min(confidence) AS doubt,
       1 - min(coalesce(s[1] - coalesce(s[2], 0), confidence)) AS low_margin,
       max(coalesce(list_sum(list_transform(s, x -> CASE WHEN x > 0 THEN -x * ln(x) ELSE 0 END))
                    / nullif(ln(len(s)), 0), 1 - confidence)) AS entropy
FROM per_prediction GROUP BY image_id
"""


def model_uncertainty(db: LakeDB, index: VectorIndex) -> np.ndarray:
    """float32 (n, 3) per index position: the production model's doubt (1 - confidence),
    low margin (1 - (top score - next)), and normalised entropy of its scores, each in
    [0, 1]; zeros for an image without predictions. The reviewer loop's prior."""
    rows = db.query(UNCERTAINTY_SQL)
    out = np.zeros((len(index), 3), np.float32)
    if rows.num_rows:
        positions = index.positions(rows.column("image_id").to_numpy(zero_copy_only=False), skip_missing=True)
        known = np.isin(rows.column("image_id").to_numpy(zero_copy_only=False), index.ids)
        for j, name in enumerate(("doubt", "low_margin", "entropy")):
            values = rows.column(name).to_numpy(zero_copy_only=False).astype(np.float32)
            out[positions, j] = np.nan_to_num(values[known], nan=0.0)
    return np.clip(out, 0, 1)


# The production model's predicted class per image, from the same prediction as the
# doubt above (its least sure one; ties by label, so the choice is stable).
PREDICTED_SQL = """
SELECT image_id, label FROM predictions
QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY confidence ASC NULLS LAST, label) = 1
"""


def predicted_classes(db: LakeDB, index: VectorIndex) -> np.ndarray:
    """float32 (n, c) per index position: the one-hot of the production model's
    predicted class (its least sure prediction; c: the labels the predictions use, in
    sorted order); a zero row for an image without predictions. The reviewer loop's
    classifier features beside the embedding (mining.search.feedback.loop_scores)."""
    rows = db.query(PREDICTED_SQL)
    ids = rows.column("image_id").to_numpy(zero_copy_only=False)
    labels = np.asarray(rows.column("label").to_pylist(), dtype=object)
    labels = np.where(labels == None, "", labels).astype(str)  # noqa: E711 (an unlabelled prediction is a class too)
    classes, column = np.unique(labels, return_inverse=True)
    out = np.zeros((len(index), len(classes)), np.float32)
    known = np.isin(ids, index.ids)
    out[index.positions(ids[known]), column[known]] = 1
    return out


def slice_positions(db: LakeDB, index: VectorIndex, where: str) -> np.ndarray:
    """Index positions of the images matching a SQL predicate over images joined with
    their predictions (``i.`` and ``p.`` qualify the columns the two share); over the
    object index, of the boxes matching it over detections joined with their images
    (``d.`` and ``i.``)."""
    if index.objects:
        ids = db.query(f"SELECT DISTINCT d.detection_id AS id FROM {OBJECT_SLICE_FROM} WHERE ({where})").column("id")
    else:
        ids = db.query(f"SELECT DISTINCT image_id FROM {SLICE_FROM} WHERE ({where})").column("image_id")
    return index.positions(ids.to_numpy(zero_copy_only=False), skip_missing=True) if len(ids) else np.zeros(0, np.int64)


def hit_rows(hits: list[Hit]) -> list[tuple[int, str, float]]:
    """``hits_table``'s rows as Python values, the same values (the score a float32's): printing a
    table from them skips pyarrow's conversion of Python values, which imports pandas (0.5 s)."""
    return [(h.rank, h.image_id, float(np.float32(h.score))) for h in hits]


def hits_table(hits: list[Hit] | list[ObjectHit], *, objects: bool = False) -> pa.Table:
    """The hits as the CLI prints them: rank, image_id, score; for objects (ObjectHits, or
    ``objects`` when there are none) rank, detection_id, image_id, box, score."""
    if objects or (hits and isinstance(hits[0], ObjectHit)):
        return pa.table({
            "rank": pa.array([h.rank for h in hits], pa.int32()),
            "detection_id": pa.array([h.detection_id for h in hits], pa.string()),
            "image_id": pa.array([h.image_id for h in hits], pa.string()),
            "box": pa.array([h.box for h in hits], pa.list_(pa.float32())),
            "score": pa.array([h.score for h in hits], pa.float32()),
        })
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
