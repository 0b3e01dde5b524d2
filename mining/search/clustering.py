"""Narrowing: take the images nearest the seeds, cluster them, and again inside
the clusters a person picks, until what is left is the edge case.

Plain functions over the index; sessions (who picked what, saved in the lake)
are mining.search.sessions' business.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mining.core.errors import SearchError
from mining.search.backends import Backend
from mining.search.index import VectorIndex
from mining.search.similar import rank_positions


@dataclass(frozen=True)
class Clustering:
    """One narrowing step. ``positions``: int64 (n,) index positions of the pool;
    ``cluster``: int32 (n,), 0 being the cluster closest to the seeds;
    ``similarity``: float32 (n,), cosine similarity to the seeds' direction;
    ``centre_distance``: float32 (n,), L2 distance to the cluster's centre."""

    positions: np.ndarray
    cluster: np.ndarray
    similarity: np.ndarray
    centre_distance: np.ndarray

    @property
    def k(self) -> int:
        return int(self.cluster.max()) + 1 if len(self.cluster) else 0


def take_pool(index: VectorIndex, seeds: np.ndarray, negatives: np.ndarray | None, size: int, *,
              subset: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``size`` images most like the seeds (see mining.search.similar.rank)."""
    if size < 1:
        raise SearchError(f"the pool must hold at least 1 image, got {size}")
    return rank_positions(index, seeds, negatives, k=size, subset=subset)[1]


def cluster_pool(index: VectorIndex, positions: np.ndarray, similarity: np.ndarray, k: int, backend: Backend, *,
                 niter: int = 20, seed: int = 0) -> Clustering:
    """k-means of the pool's vectors into ``min(k, pool size)`` clusters, numbered by
    distance to the seeds (mean ``similarity`` of their images, highest first).
    ``similarity``: float32 (n,), each pool image's cosine similarity to the seeds."""
    if len(positions) == 0:
        raise SearchError("the pool is empty: nothing to cluster (widen the slice or the pool)")
    vectors = index.vectors[positions]
    result = backend.kmeans(vectors, min(k, len(positions)), niter=niter, seed=seed)
    similarity = np.asarray(similarity, np.float32)
    k_found = len(result.centroids)
    mean_similarity = np.array([similarity[result.assignment == c].mean() if (result.assignment == c).any() else -np.inf
                                for c in range(k_found)])
    order = np.argsort(-mean_similarity, kind="stable")
    renumber = np.empty(k_found, np.int32)
    renumber[order] = np.arange(k_found, dtype=np.int32)
    # Empty clusters (k-means can leave some on tiny pools) vanish from the numbering's end.
    return Clustering(
        positions=np.asarray(positions, np.int64),
        cluster=renumber[result.assignment],
        similarity=similarity.astype(np.float32),
        centre_distance=np.sqrt(result.distances).astype(np.float32),
    )


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """float32 (n, 2): the vectors (float32 (n, d)) on their two principal axes, for a
    map of a pool. PCA, not UMAP: deterministic and a few ms for thousands of points."""
    centred = np.asarray(vectors, np.float32) - np.mean(vectors, axis=0, dtype=np.float32)
    if len(centred) < 2:
        return np.zeros((len(centred), 2), np.float32)
    # The principal axes are the top eigenvectors of the (d, d) covariance: one matmul
    # and a small eigh, 5-10x faster than an SVD of the (n, d) pool.
    _, eigenvectors = np.linalg.eigh(centred.T.astype(np.float64) @ centred)
    return (centred @ eigenvectors[:, ::-1][:, :2].astype(np.float32)).astype(np.float32)
