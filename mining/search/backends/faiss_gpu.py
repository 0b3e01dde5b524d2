"""FAISS on a GPU, for machines whose faiss build has GPU support (faiss-gpu).

Not exercised by CI (no GPU there); the torch backend covers CUDA machines
whose faiss has no GPU kernels, such as the PyPI faiss-gpu wheels on Hopper."""

from __future__ import annotations

import faiss
import numpy as np

from mining.search.backends import KMeansResult, check_kmeans_args, check_knn_args
from mining.search.backends.faiss_cpu import faiss_kmeans


def available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class FaissGPU:
    name = "faiss-gpu"

    def __init__(self, gpu: int = 0):
        self.gpu = gpu
        self.resources = faiss.StandardGpuResources()

    def put(self, database: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(database, dtype=np.float32)

    def knn(self, database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        database, queries, k = check_knn_args(database, queries, k)
        scores, indices = faiss.knn_gpu(
            self.resources, queries, database, k, metric=faiss.METRIC_INNER_PRODUCT, device=self.gpu
        )
        return scores, indices.astype(np.int64)

    def kmeans(self, x: np.ndarray, k: int, *, niter: int = 20, seed: int = 0) -> KMeansResult:
        return faiss_kmeans(check_kmeans_args(x, k), k, niter=niter, seed=seed, gpu=1)
