"""The ``object-novelty`` sampler: the images holding the detection box farthest from every
box of what was reviewed or labelled, by cosine distance through the object index (one
vector per box, `edgemine embed --objects`). Where ``novelty`` compares whole frames, this
finds the frame whose small object is new though the frame looks like many others."""

from __future__ import annotations

import numpy as np

from mining.core.config import Config
from mining.core.errors import QueueError
from mining.core.sql import LakeDB
from mining.review.samplers.novelty import distances_to
from mining.review.samplers.sampler_base import (
    Option,
    Picked,
    Sampler,
    Slice,
    empty_slice_error,
    make_picks,
    reference_ids,
    slice_counts,
)

# The boxes of the object index, with what a reason shows.
BOXES_SQL = """
SELECT o.detection_id, o.image_id, d.prediction_id, d.label, d.score
FROM object_embeddings o JOIN detections d USING (detection_id)
WHERE o.backbone = $backbone AND o.weights = $weights
"""


def object_novelty(db: LakeDB, s: Slice, config: Config, *, neighbours: int = 1, limit: int | None = 100) -> Picked:
    """The slice's images by their most novel box: per box, the cosine distance (1 - similarity)
    to the nearest box of a reviewed or labelled image (the mean over the ``neighbours``
    nearest), through the object index; an image scores its farthest box; farthest first.

    Raises QueueError: nothing reviewed or labelled yet, no object embeddings of a seen image,
    an empty slice. SearchError: no object embeddings at all (run ``edgemine embed --objects``)."""
    from mining.search.index_sync import open_index  # the index only when a queue needs it

    if neighbours < 1:
        raise QueueError(f"--neighbours must be at least 1, got {neighbours}")
    seen = reference_ids(db)
    if len(seen) == 0:
        raise QueueError("object-novelty measures distance to the boxes of what was reviewed or labelled, and "
                         "nothing is yet: review some images first")
    idx = open_index(db, config.index, objects=True)
    boxes = db.query(BOXES_SQL, {"backbone": idx.backbone, "weights": idx.weights})
    box_ids = boxes.column("detection_id").to_numpy(zero_copy_only=False).astype(str)
    box_images = boxes.column("image_id").to_numpy(zero_copy_only=False).astype(str)
    reference = idx.positions(box_ids[np.isin(box_images, seen)], skip_missing=True)
    if len(reference) == 0:
        raise QueueError(f"none of the {len(seen):,} reviewed or labelled images has an embedded box: "
                         "run edgemine embed --objects first")
    counts = slice_counts(db, s, s.images_sql(db, exclude=False))
    wanted = s.query(db, s.images_sql(db)).column("image_id").to_numpy(zero_copy_only=False).astype(str)
    candidates = np.isin(box_images, wanted) & ~np.isin(box_images, seen)
    if not candidates.any():
        raise empty_slice_error("images with embedded boxes not yet reviewed", s, counts["total"], counts["excluded"])
    positions = idx.positions(box_ids[candidates])
    distance, _ = distances_to(idx, positions, reference, min(neighbours, len(reference)))
    rows = boxes.filter(candidates).append_column("distance", [distance]).to_pylist()
    best = {}
    for row in sorted(rows, key=lambda r: (-r["distance"], r["detection_id"])):
        best.setdefault(row["image_id"], row)  # an image once, at its farthest box
    picked = list(best.values())[:limit]
    reasons = [f"box {r['detection_id']} ({r['label']} {r['score']:.2f}): cosine distance {r['distance']:.3f} to the "
               f"nearest box of a reviewed or labelled image" for r in picked]
    return Picked(make_picks([r["image_id"] for r in picked], [r["prediction_id"] for r in picked],
                             [r["distance"] for r in picked], reasons),
                  candidates=counts["total"], excluded=counts["excluded"])


OBJECT_NOVELTY = Sampler(
    "object-novelty", "images whose detection box is farthest from every box reviewed or labelled (the object "
    "index: embed --objects)", (
        Option("neighbours", int, "mean distance to this many nearest boxes of reviewed images", 1),
    ),
    run=lambda db, s, request: object_novelty(db, s, request.config, **request.options, limit=request.limit))
