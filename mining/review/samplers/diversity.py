"""The ``diversity`` sampler: images that cover the slice (or another queue), picked by
k-center greedy on their embeddings (mining.search.coreset), away from what was reviewed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mining.core.errors import QueueError
from mining.core.sql import LakeDB
from mining.review.samplers.sampler_base import (
    Option,
    Picked,
    Request,
    Sampler,
    Slice,
    embedded_positions,
    make_picks,
    reference_ids,
)
from mining.search.coreset import k_center_greedy

if TYPE_CHECKING:
    from mining.search.index import VectorIndex


def diversity(db: LakeDB, s: Slice, index: Callable[[], VectorIndex], *, queue_images: list[str] | None = None,
              away_from_reviewed: bool = True, seed: int = 0, device: str = "cpu", limit: int = 100) -> Picked:
    """``limit`` images of the slice (or of ``queue_images``, another queue's) that cover it:
    k-center greedy on their embeddings (mining.search.coreset), starting away from what was
    reviewed or labelled (``away_from_reviewed``), else from a seeded random image.
    Ranked in the order picked; the score is the distance to the nearest earlier pick.

    Raises QueueError: no embeddings, an empty slice."""
    idx = index()
    positions, total, excluded, notes = embedded_positions(db, s, idx, "diversity")
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
    reasons = [("k-center pick 1" + (" (seeded random start)" if centers is None
                                     else f": {d:.3f} from the nearest reviewed image"))
               if i == 0 else f"k-center pick {i + 1}: {d:.3f} from the nearest earlier pick"
               for i, d in enumerate(picks.distances.tolist())]
    scores = np.where(np.isfinite(picks.distances), picks.distances, np.nan)
    return Picked(make_picks(idx.ids[chosen].tolist(), [None] * len(chosen), scores.tolist(), reasons),
                  candidates=total, excluded=excluded, notes=notes)


def _run(db: LakeDB, s: Slice, request: Request) -> Picked:
    from mining.core.devices import resolve_device

    queue = request.options["queue"]
    return diversity(db, s, request.index, queue_images=request.queue_images(queue) if queue else None,
                     seed=request.options["seed"], device=resolve_device(request.config.index.device),
                     limit=request.limit)


DIVERSITY = Sampler(
    "diversity", "images that cover the slice (or another queue): k-center greedy on the embeddings", (
        Option("queue", str, "pick among this queue's images (its latest version) rather than the slice"),
        Option("seed", int, "the random first pick when nothing is reviewed (default: config mining.seed)"),
    ), embeddings=True, run=_run)
