"""Suspected label errors: labelled images whose label disagrees with the evidence.

Two ways, each a function over plain arrays (the readers below feed them):

- ``confident_learning``: where every labelled image has the model's per-class
  probabilities, cleanlab's ``find_label_issues`` (confident learning, Northcutt et
  al., 2021) flags the labels the model confidently contradicts; ranked by
  self-confidence (the probability of the given label, lowest first).
- ``knn_disagreement``: where only labels exist, the image's nearest labelled
  neighbours in the embedding space (through the vector index) vote: the score is
  the similarity-weighted share of the ``k`` neighbours whose label differs, and an
  image is suspect when most of the weight disagrees.

Labels come from the ``labels`` table when the lake has one (image_id, label,
annotator, batch, labelled_at; the latest label per image counts), else from one
review's decisions (accept or reject, the latest per image).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mining.core import tables
from mining.core.errors import QueueError
from mining.core.sql import LakeDB

if TYPE_CHECKING:
    from mining.search.index import VectorIndex

log = logging.getLogger(__name__)

LABELS_TABLE = "labels"


@dataclass(frozen=True)
class Suspects:
    """``rows``: int64 (s,), rows of the inputs whose label is suspect, most suspect first;
    ``scores``: float32 (s,), how suspect (higher: more; 1 - the given label's
    probability for confident learning, the disagreeing share for kNN);
    ``suggested``: (s,) str, the label the evidence favours."""

    rows: np.ndarray
    scores: np.ndarray
    suggested: np.ndarray


def confident_learning(labels: np.ndarray, pred_probs: np.ndarray, classes: list[str]) -> Suspects:
    """Label issues by confident learning (cleanlab.filter.find_label_issues).

    Args:
        labels: (n,) str, the given label of each image; each one of ``classes``.
        pred_probs: float (n, c) the model's per-class probabilities, columns in ``classes``
            order; rows are normalised to sum to 1.
        classes: the c class names.

    Returns:
        Suspects: the images cleanlab flags, lowest self-confidence first.

    Raises:
        QueueError: a label not among ``classes``, or fewer than two classes.
    """
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels, dtype=str)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({label for label in labels.tolist() if label not in index})
    if unknown:
        raise QueueError(f"label(s) {', '.join(unknown[:5])} have no per-class score in the predictions "
                         f"(classes: {', '.join(classes[:10])}); use the kNN method (method='knn')")
    if len(classes) < 2:
        raise QueueError("confident learning needs at least two classes")
    given = np.array([index[label] for label in labels.tolist()], np.int64)
    probs = np.asarray(pred_probs, np.float64)
    probs = probs / np.maximum(probs.sum(1, keepdims=True), 1e-12)
    issues = np.asarray(find_label_issues(given, probs, return_indices_ranked_by="self_confidence"), np.int64)
    self_confidence = probs[issues, given[issues]]
    suggested = np.asarray(classes, dtype=str)[probs[issues].argmax(1)] if len(issues) else np.array([], str)
    return Suspects(issues, (1 - self_confidence).astype(np.float32), suggested)


def knn_disagreement(vectors: np.ndarray, labels: np.ndarray, *, k: int = 10, index: VectorIndex | None = None,
                     positions: np.ndarray | None = None) -> Suspects:
    """Label issues by the vote of each image's ``k`` nearest labelled neighbours.

    Args:
        vectors: float32 (n, d) unit embeddings of the labelled images (ignored when
            ``index`` and ``positions`` are given: the index's rows are used).
        labels: (n,) str.
        k: neighbours that vote (at most n - 1).
        index, positions: search through the vector index, among these (n,) positions.

    Returns:
        Suspects: images whose disagreeing share is above 1/2, most disagreeing first
        (ties: the less similar neighbours first); ``suggested`` is the neighbours'
        weighted majority label.

    Raises:
        QueueError: fewer than two labelled images, or only one label.
    """
    labels = np.asarray(labels, dtype=str)
    n = len(labels)
    if n < 2 or len(np.unique(labels)) < 2:
        raise QueueError(f"kNN label disagreement needs at least two labelled images with two different labels; "
                         f"got {n} image(s), label(s): {', '.join(np.unique(labels)[:5])}")
    k = min(k, n - 1)
    if index is not None and positions is not None:
        sims, found = index.search(index.vectors[positions], k + 1, subset=positions)
        # Back from index positions to rows of the inputs.
        order = np.argsort(positions)
        rows = order[np.searchsorted(positions, found.clip(min=0), sorter=order)]
        self_row = np.arange(n)[:, None]
        valid = (found >= 0) & (rows != self_row)
    else:
        x = np.asarray(vectors, np.float32)
        full = x @ x.T
        np.fill_diagonal(full, -np.inf)
        rows = np.argsort(-full, axis=1)[:, :k]
        sims = np.take_along_axis(full, rows, 1)
        valid = np.ones_like(rows, bool)
    # Keep each row's k best other images (the search asked for one more: the image itself).
    keep = np.cumsum(valid, axis=1) <= k
    valid &= keep
    weights = np.where(valid, np.maximum(sims, 0) + 1e-6, 0.0)
    neighbour_labels = labels[rows]
    disagree = (weights * (neighbour_labels != labels[:, None])).sum(1) / np.maximum(weights.sum(1), 1e-12)
    similarity = (weights * valid).sum(1) / np.maximum(valid.sum(1), 1)
    suspect = np.flatnonzero(disagree > 0.5)
    order = suspect[np.lexsort((similarity[suspect], -disagree[suspect]))]
    suggested = []
    for row in order:
        votes: dict[str, float] = {}
        for label, w in zip(neighbour_labels[row], weights[row]):
            votes[label] = votes.get(label, 0.0) + float(w)
        suggested.append(max(votes, key=votes.get))
    return Suspects(order.astype(np.int64), disagree[order].astype(np.float32), np.array(suggested, dtype=str))


# -- readers: labels and probabilities from the lake --------------------------------
def has_labels_table(db: LakeDB) -> bool:
    """Whether this lake has a ``labels`` table (`edgemine labels import` made it)."""
    return tables.exists(db.lake, LABELS_TABLE)


def read_labels(db: LakeDB, *, source: str = "auto", review: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(image ids (n,) str, labels (n,) str, where they came from) of the labelled images.

    ``source``: ``table`` (the ``labels`` table, the latest label per image), ``review``
    (``review``'s decisions, ``accept``/``reject``, the latest per image), or ``auto``:
    the labels table when the lake has one, else the review (the only one when not named).

    Raises QueueError: no labels table when asked for, no review to take, or no labels."""
    if source not in ("auto", "table", "review"):
        raise QueueError(f"unknown labels source {source!r}; allowed: auto, table, review")
    if source == "table" or (source == "auto" and review is None and has_labels_table(db)):
        if not has_labels_table(db):
            raise QueueError(
                "this lake has no labels table yet; take labels from a review: --labels review --review NAME"
            )
        # Image-level labels only: a box's label says what one object is, not the image
        # (object-detection label issues are not ranked yet).
        rows = db.query(f"SELECT image_id, arg_max(label, labelled_at) AS label FROM {LABELS_TABLE} "
                        "WHERE label IS NOT NULL AND box IS NULL GROUP BY image_id ORDER BY image_id")
        origin = "labels table (image labels, not boxes)"
    else:
        if review is None:
            names = db.query("SELECT DISTINCT review FROM reviews ORDER BY review").column("review").to_pylist()
            if len(names) != 1:
                raise QueueError("no labels table, so labels come from review decisions: name the review with --review "
                                 f"({', '.join(names) if names else 'there is none yet: review some images first'})")
            review = names[0]
        rows = db.query("SELECT image_id, decision AS label FROM reviews WHERE review = $review ORDER BY image_id",
                        {"review": review})
        origin = f"review {review!r}"
    if rows.num_rows == 0:
        raise QueueError(f"no labelled images in the {origin}")
    return (rows.column("image_id").to_numpy(zero_copy_only=False).astype(str),
            rows.column("label").to_numpy(zero_copy_only=False).astype(str), origin)


def read_pred_probs(db: LakeDB, image_ids: np.ndarray, *, model_version: str | None = None
                    ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The model's per-class scores of each image's latest prediction (of ``model_version``
    when given): (float32 (n, c) scores, the c classes, bool (n,) whether the image has
    scores), rows in ``image_ids`` order; a class an image's scores lack counts 0."""
    sql = ("SELECT image_id, arg_max(scores, ts) AS scores FROM predictions WHERE image_id IN (SELECT unnest($ids)) "
           "AND scores IS NOT NULL" + (" AND model_version = $mv" if model_version else "") + " GROUP BY image_id")
    params: dict = {"ids": image_ids.tolist()}
    if model_version:
        params["mv"] = model_version
    found = {r["image_id"]: dict(r["scores"]) for r in db.query(sql, params).to_pylist()}
    classes = sorted({c for scores in found.values() for c in scores})
    column = {c: i for i, c in enumerate(classes)}
    probs = np.zeros((len(image_ids), len(classes)), np.float32)
    has = np.zeros(len(image_ids), bool)
    for row, image_id in enumerate(image_ids.tolist()):
        scores = found.get(image_id)
        if scores:
            has[row] = True
            for c, p in scores.items():
                probs[row, column[c]] = p or 0.0
    return probs, classes, has
