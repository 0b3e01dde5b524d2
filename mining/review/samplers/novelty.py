"""The ``novelty`` sampler: the images farthest from everything reviewed or labelled,
by cosine distance through the vector index."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mining.core.errors import QueueError
from mining.core.sql import LakeDB
from mining.review.samplers.sampler_base import (
    Option,
    Picked,
    Sampler,
    Slice,
    embedded_positions,
    empty_slice_error,
    make_picks,
    reference_ids,
)

if TYPE_CHECKING:
    from mining.search.index import VectorIndex

QUERY_BLOCK = 65_536  # candidate vectors searched per index call


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
        raise QueueError(f"none of the {len(seen):,} reviewed or labelled images has an embedding: "
                         "run edgemine embed first")
    positions, total, excluded, notes = embedded_positions(db, s, idx, "novelty")
    positions = positions[~np.isin(positions, reference)]
    if len(positions) == 0:
        raise empty_slice_error("images not yet reviewed", s, total, total)
    k = min(neighbours, len(reference))
    distance, nearest = distances_to(idx, positions, reference, k)
    order = np.lexsort((idx.ids[positions], -distance))[:limit]
    nearest_ones = "nearest" if k == 1 else f"{k} nearest"
    reasons = [f"cosine distance {distance[o]:.3f} to the {nearest_ones} reviewed or labelled "
               f"image{'s' if k > 1 else ''} (nearest {idx.ids[nearest[o]]})" for o in order]
    return Picked(make_picks(idx.ids[positions[order]].tolist(), [None] * len(order), distance[order].tolist(),
                             reasons),
                  candidates=total, excluded=excluded, notes=notes)



def distances_to(idx: VectorIndex, positions: np.ndarray, reference: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``positions``: 1 - its mean similarity to its ``k`` nearest ``reference`` rows
    (float32), and the position of the nearest one (int64), searched ``QUERY_BLOCK`` at a time."""
    distance = np.empty(len(positions), np.float32)
    nearest = np.empty(len(positions), np.int64)
    for start in range(0, len(positions), QUERY_BLOCK):
        block = positions[start:start + QUERY_BLOCK]
        sims, found = idx.search(idx.vectors[block], k, subset=reference, exact=True)
        distance[start:start + len(block)] = 1 - sims.mean(1)
        nearest[start:start + len(block)] = found[:, 0]
    return distance, nearest


NOVELTY = Sampler(
    "novelty", "images farthest from everything reviewed or labelled (kNN distance through the index)", (
        Option("neighbours", int, "mean distance to this many nearest reviewed images", 1),
    ), embeddings=True,
    run=lambda db, s, request: novelty(db, s, request.index, **request.options, limit=request.limit))
