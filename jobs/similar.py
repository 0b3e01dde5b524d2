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

from jobs.sets import save_set
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


def resolve_query(lake: Lake, index: VectorIndex, config: Config, seeds: list[str], *, negatives: list[str] = (),
                  where: str | None = None) -> Query:
    """Seeds and negatives as vectors (ids or files), and the SQL slice as positions."""
    positive = resolve_seeds(index, seeds, config)
    negative = resolve_seeds(index, list(negatives), config) if negatives else None
    subset = None
    if where:
        with LakeDB(lake) as db:
            subset = slice_positions(db, index, where)
        if len(subset) == 0:
            raise SearchError(f"no embedded image matches --where {where!r}")
    return Query(positive, negative, subset)


def find_similar(lake: Lake, index: VectorIndex, config: Config, seeds: list[str], *, negatives: list[str] = (),
                 k: int | None = None, where: str | None = None, save: str | None = None) -> list[Hit]:
    """The ``k`` images most like ``seeds`` and unlike ``negatives``, within the
    ``where`` slice; saved as the set ``save`` when given."""
    query = resolve_query(lake, index, config, seeds, negatives=negatives, where=where)
    hits = rank(index, query.positive.vectors, None if query.negative is None else query.negative.vectors,
                k or config.mining.k, subset=query.subset, exclude=query.exclude, seed=config.mining.seed)
    if save:
        save_set(lake, save, [h.image_id for h in hits], source=f"similar:{' '.join(seeds)}", user=config.mining.user,
                 scores=[h.score for h in hits])
    return hits
