"""FAISS on the CPU: the backend of machines without a GPU."""

from __future__ import annotations

import faiss
import numpy as np

from mining.search.backends import KMeansResult, check_kmeans_args, check_knn_args


class FaissCPU:
    name = "faiss-cpu"

    def put(self, database: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(database, dtype=np.float32)

    def knn(self, database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        database, queries, k = check_knn_args(database, queries, k)
        scores, indices = faiss.knn(queries, database, k, metric=faiss.METRIC_INNER_PRODUCT)
        return scores, indices.astype(np.int64)

    def kmeans(self, x: np.ndarray, k: int, *, niter: int = 20, seed: int = 0) -> KMeansResult:
        x = check_kmeans_args(x, k)
        return faiss_kmeans(x, k, niter=niter, seed=seed, gpu=False)


def faiss_kmeans(x: np.ndarray, k: int, *, niter: int, seed: int, gpu: bool | int) -> KMeansResult:
    """faiss.Kmeans on every row (no subsampling: pools are small enough, and a
    sample would cost inertia), k-means++ start, then one exact assignment pass."""
    kmeans = faiss.Kmeans(
        x.shape[1], k, niter=niter, seed=seed, gpu=gpu,
        max_points_per_centroid=max(len(x) // k + 1, 256),
        min_points_per_centroid=1,  # small pools are normal here: do not warn
        init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
    )
    kmeans.train(x)
    distances, assignment = kmeans.index.search(x, 1)
    distances = np.maximum(distances[:, 0], 0)
    return KMeansResult(
        centroids=kmeans.centroids.copy(),
        assignment=assignment[:, 0].astype(np.int64),
        distances=distances,
        inertia=float(distances.sum(dtype=np.float64)),
        iterations=len(kmeans.iteration_stats),
    )
