"""Near-duplicate images (`edgemine duplicates`): groups of images whose embeddings
are almost the same (cosine similarity at least a threshold, 0.98 by default).

Found through the vector index, never as all pairs in memory: every image asks the
index for its ``k`` nearest neighbours, in blocks of queries; an image whose k-th
neighbour is still above the threshold asks again with twice the k, so the result is
a range search (every neighbour above the threshold), whatever the group's size.
Groups then form greedily in image id order: the first image not yet in a group
takes every neighbour above the threshold that is not in a group either. So each
member's similarity *to its group's first image* is at least the threshold (chains
of near-copies are not merged), and each image is in at most one group.

The ``duplicates`` table holds the groups of two or more, replaced by each run;
queues drop all but the first of a group with ``drop_duplicates``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from mining.core import tables
from mining.core.errors import QueueError
from mining.core.schema import DUPLICATES, make_rows
from mining.core.sql import LakeDB
from mining.core.summary import Summary
from mining.search.index import VectorIndex

log = logging.getLogger(__name__)

JOB = "duplicates"
QUERY_BLOCK = 4096  # queries per index search: bounds the (block x k) result arrays


@dataclass
class DuplicatesSummary(Summary):
    job: str = JOB
    images: int = 0  # images compared (the index's)
    groups: int = 0
    duplicates: int = 0  # images in a group other than its first: what dropping duplicates removes
    threshold: float = 0.0
    backbone: str = ""
    weights: str = ""


@dataclass(frozen=True)
class Groups:
    """``leaders``, ``members``: int64 (m,) index positions, each member with its group's
    first image (a group's first is also a member of itself, similarity 1);
    ``similarity``: float32 (m,) cosine similarity of each member to its first."""

    leaders: np.ndarray
    members: np.ndarray
    similarity: np.ndarray


def neighbours_above(
    index: VectorIndex, positions: np.ndarray, threshold: float, k: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each position, (neighbour positions int64, similarities float32) of every other
    indexed image with cosine similarity >= ``threshold``: the index's kNN search with
    ``k`` results, doubled for the queries whose k-th neighbour is still above it."""
    result: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.int64), np.zeros(0, np.float32))] * len(positions)
    pending = np.arange(len(positions))
    k = max(2, k)
    while len(pending):
        scores, found = index.search(index.vectors[positions[pending]], min(k, len(index)))
        again = []
        for row, at in enumerate(pending):
            keep = (scores[row] >= threshold) & (found[row] >= 0) & (found[row] != positions[at])
            result[at] = (found[row][keep], scores[row][keep])
            if scores.shape[1] < len(index) and scores[row, -1] >= threshold:
                again.append(at)
        pending = np.array(again, np.int64)
        k *= 2
    return result


def group_duplicates(index: VectorIndex, threshold: float, *, k: int = 16,
                     progress: Callable[[int], None] | None = None) -> Groups:
    """Near-duplicate groups of the indexed images (see the module docstring).

    Args:
        index: the vector index (unit vectors: inner product is cosine similarity).
        threshold: the least cosine similarity to the group's first image, in (0, 1].
        k: neighbours asked for first (doubled where more are above the threshold).
        progress: called with the number of images searched after each block.

    Raises:
        QueueError: a threshold outside (0, 1].
    """
    if not 0 < threshold <= 1:
        raise QueueError(f"--threshold must be in (0, 1] (a cosine similarity), got {threshold}")
    order = np.argsort(index.ids, kind="stable")  # groups are named by their first image in id order
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    near: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for start in range(0, len(order), QUERY_BLOCK):
        block = order[start:start + QUERY_BLOCK]
        for position, found in zip(block, neighbours_above(index, block, threshold, k)):
            if len(found[0]):
                near[int(position)] = found
        if progress:
            progress(len(block))
    taken = np.zeros(len(index), bool)
    leaders, members, similarity = [], [], []
    for position in sorted(near, key=lambda p: rank[p]):
        if taken[position]:
            continue
        others, sims = near[position]
        free = ~taken[others]
        if not free.any():
            continue
        group = others[free]
        taken[position] = True
        taken[group] = True
        leaders += [position] * (len(group) + 1)
        members += [position, *group.tolist()]
        similarity += [1.0, *sims[free].tolist()]
    return Groups(np.array(leaders, np.int64), np.array(members, np.int64), np.array(similarity, np.float32))


def find_duplicates(db: LakeDB, index: VectorIndex, *, threshold: float = 0.98, k: int = 16, user: str = "",
                    progress: Callable[[int], None] | None = None) -> DuplicatesSummary:
    """Group the indexed images' near-duplicates and write the groups as the ``duplicates``
    table (replacing the last run's); returns what was found."""
    started = time.monotonic()
    groups = group_duplicates(index, threshold, k=k, progress=progress)
    n = len(groups.members)
    rows = make_rows(DUPLICATES, n, group_id=index.ids[groups.leaders].tolist() if n else [],
                     image_id=index.ids[groups.members].tolist() if n else [], similarity=groups.similarity,
                     threshold=float(threshold), backbone=index.backbone, weights=index.weights,
                     computed_at=datetime.now(UTC))
    tables.overwrite(
        db.lake,
        DUPLICATES,
        rows,
        tables.commit_info(JOB, user, threshold=threshold, groups=len(set(groups.leaders.tolist()))),
    )
    leaders = len(np.unique(groups.leaders))
    return DuplicatesSummary(images=len(index), groups=leaders, duplicates=n - leaders, threshold=threshold,
                             backbone=index.backbone, weights=index.weights, seconds=time.monotonic() - started)


def first_of_each_group(db: LakeDB, image_ids: Sequence[str]) -> list[int] | None:
    """Positions in ``image_ids`` to keep so that each near-duplicate group of the
    ``duplicates`` table keeps only its first image in this order (images in no group
    all stay); None when no groups were computed yet (`edgemine duplicates`)."""
    if not tables.exists(db.lake, "duplicates"):
        return None
    found = db.query("SELECT image_id, group_id FROM duplicates WHERE image_id IN (SELECT unnest($ids))",
                     {"ids": list(image_ids)})
    groups = dict(zip(found.column("image_id").to_pylist(), found.column("group_id").to_pylist()))
    seen: set[str] = set()
    keep = []
    for row, image_id in enumerate(image_ids):
        group = groups.get(image_id)
        if group is not None:
            if group in seen:
                continue
            seen.add(group)
        keep.append(row)
    return keep


def largest_groups(db: LakeDB, limit: int = 5) -> list[dict]:
    """The ``limit`` largest near-duplicate groups: ``group_id``, ``images`` (how many),
    ``image_ids`` (the first image, then the others most similar first), ``threshold``."""
    return db.query(
        "SELECT group_id, count(*)::INTEGER AS images, "
        "list(image_id ORDER BY similarity DESC, image_id) AS image_ids, "
        "any_value(threshold) AS threshold FROM duplicates GROUP BY group_id "
        f"ORDER BY images DESC, group_id LIMIT {int(limit)}"
    ).to_pylist()
