"""Exact kNN and k-means over arrays, on the best device this machine has.

The backend is chosen once, by ``get_backend(device)``:

- ``cpu``: FAISS on the CPU (``faiss_cpu``).
- ``cuda[:N]``: FAISS on the GPU when faiss was built with GPU support and sees
  one (``faiss_gpu``), otherwise torch on the GPU: matmul + top-k, and Lloyd's
  k-means in torch (``torch_backend``).
- ``auto``: ``cuda`` when torch sees a GPU, else ``cpu`` (mining.core.devices, the one
  device policy). Said in the log, never silent; an explicit ``cuda`` with no GPU
  is an error.

Every backend takes and returns numpy arrays with the same shapes and dtypes,
and gives the same results within float32 tolerance (tests/test_backends.py
checks each against numpy brute force)::

    backend = get_backend("auto")
    scores, indices = backend.knn(database, queries, k=100)   # inner product, best first
    result = backend.kmeans(pool, k=16, niter=20, seed=0)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mining.core.devices import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KMeansResult:
    """``centroids``: float32 (k, d). ``assignment``: int64 (n,), the nearest
    centroid of each row. ``distances``: float32 (n,), squared L2 distance of each
    row to its centroid. ``inertia``: their sum (what k-means minimises)."""

    centroids: np.ndarray
    assignment: np.ndarray
    distances: np.ndarray
    inertia: float
    iterations: int


class Backend(Protocol):
    name: str

    def put(self, database: np.ndarray) -> object:
        """``database`` float32 (n, d) made ready for repeated ``knn`` calls (on the
        GPU for GPU backends); ``knn`` takes the result in place of the array."""
        ...

    def knn(self, database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact maximum-inner-product search.

        ``database``: float32 (n, d); ``queries``: float32 (q, d). Returns
        ``scores`` float32 (q, k') and ``indices`` int64 (q, k'), rows of
        ``database`` best first, with k' = min(k, n)."""
        ...

    def kmeans(self, x: np.ndarray, k: int, *, niter: int = 20, seed: int = 0) -> KMeansResult:
        """Lloyd's k-means (squared L2) of float32 (n, d) rows into ``k`` clusters,
        k-means++ initialisation seeded by ``seed``."""
        ...


def get_backend(device: str = "auto") -> Backend:
    """The backend for ``device`` (see the module docstring for the rule)."""
    resolved = resolve_device(device)
    if resolved == "cpu":
        from mining.search.backends.faiss_cpu import FaissCPU

        return FaissCPU()
    from mining.search.backends import faiss_gpu

    if faiss_gpu.available():
        log.info("kNN and k-means: FAISS on %s", resolved)
        return faiss_gpu.FaissGPU(int(resolved.partition(":")[2] or 0))
    from mining.search.backends.torch_backend import TorchBackend

    log.info("kNN and k-means: torch on %s (faiss has no GPU support here)", resolved)
    return TorchBackend(resolved)


def check_knn_args(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The arguments every backend validates the same way: 2-D float32, same width, k >= 1."""
    database = np.ascontiguousarray(database, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if database.ndim != 2 or queries.ndim != 2 or database.shape[1] != queries.shape[1]:
        raise ValueError(f"knn needs (n, d) and (q, d) arrays, got {database.shape} and {queries.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(database) == 0:
        raise ValueError("knn over an empty database: there is nothing to search")
    return database, queries, min(k, len(database))


def check_kmeans_args(x: np.ndarray, k: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"kmeans needs an (n, d) array, got shape {x.shape}")
    if not 1 <= k <= len(x):
        raise ValueError(f"cannot make {k} clusters of {len(x)} vectors: k must be between 1 and the number of vectors")
    return x
