"""`edgemine similar`: the images like some seeds (and unlike some negatives).

A seed is an image id of the lake or an image file (local or s3://) from
outside, embedded on the fly with the model the index was built from. Results
can be saved as a named set, so SQL can join them with predictions.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from jobs.narrow import save_set
from mining.config import Config
from mining.index import SearchError, VectorIndex
from mining.lake import Lake, is_s3
from mining.search import Hit, rank, slice_positions
from mining.sql import LakeDB

IMAGE_ID = re.compile(r"^[0-9a-f]{20}$")


@dataclass
class Seeds:
    """What the user gave, as vectors: ``labels`` name them (image id, or the file's
    URI), ``vectors`` float32 (n, d), ``positions`` those in the index (excluded
    from results: a seed is not news)."""

    labels: list[str]
    vectors: np.ndarray
    positions: np.ndarray


def resolve_seeds(index: VectorIndex, seeds: list[str], config: Config) -> Seeds:
    ids = [s for s in seeds if IMAGE_ID.match(s) and not os.path.exists(s)]
    files = [s for s in seeds if s not in ids]
    for f in files:
        if not is_s3(f) and not os.path.exists(f):
            raise SearchError(f"{f!r} is neither an image id (20 hex digits) nor an image file")
    positions = index.positions(ids) if ids else np.zeros(0, np.int64)
    vectors = [index.vectors[positions]]
    if files:
        from embed.files import backbone_for_tag, embed_files

        backbone = backbone_for_tag(index.backbone, index.weights, config.embed, device=config.index.device)
        vectors.append(embed_files(files, backbone, config.embed, config.s3))
    return Seeds(labels=ids + files, vectors=np.concatenate(vectors), positions=positions)


def find_similar(lake: Lake, index: VectorIndex, config: Config, seeds: list[str], *, negatives: list[str] = (),
                 k: int | None = None, where: str | None = None, save: str | None = None) -> list[Hit]:
    """The ``k`` images most like ``seeds`` and unlike ``negatives``, within the
    ``where`` slice; saved as the set ``save`` when given."""
    k = k or config.mining.k
    positive = resolve_seeds(index, seeds, config)
    negative = resolve_seeds(index, list(negatives), config) if negatives else None
    subset = None
    if where:
        with LakeDB(lake) as db:
            subset = slice_positions(db, index, where)
        if len(subset) == 0:
            raise SearchError(f"no embedded image matches --where {where!r}")
    exclude = positive.positions if negative is None else np.concatenate([positive.positions, negative.positions])
    hits = rank(index, positive.vectors, None if negative is None else negative.vectors, k, subset=subset,
                exclude=exclude, seed=config.mining.seed)
    if save:
        save_set(lake, save, [h.image_id for h in hits], source=f"similar:{' '.join(seeds)}", user=config.mining.user,
                 scores=[h.score for h in hits])
    return hits
