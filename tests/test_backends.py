"""kNN and k-means backends against numpy brute force (the model: faiss's
tests/test_contrib.py). FAISS on the CPU and torch on the CPU run here; the GPU
backends share their code paths (faiss_gpu calls the same faiss_kmeans, torch
only changes device).

Tolerances: inner products within 1e-5 (float32 products of unit-ish vectors,
compared with float64), squared distances within 1e-5 + 1e-5 * distance,
inertia within 1e-5 relative, and within 2% of scikit-learn's best-of-10
k-means."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

import mining.search.backends.torch_backend as torch_backend
from mining.core import devices
from mining.core.errors import DeviceError
from mining.search.backends import KMeansResult, get_backend
from mining.search.backends.faiss_cpu import FaissCPU
from mining.search.backends.torch_backend import TorchBackend

SCORE_TOL = 1e-5


@pytest.fixture(params=["faiss-cpu", "torch"])
def backend(request):
    return FaissCPU() if request.param == "faiss-cpu" else TorchBackend("cpu")


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, d: int = 32, clusters: int = 20, spread: float = 0.5) -> np.ndarray:
    """Unit vectors from a Gaussian mixture: neighbour structure like embeddings have."""
    centres = unit_rows(rng.standard_normal((clusters, d)))
    labels = rng.integers(0, clusters, n)
    return unit_rows(centres[labels] + spread * rng.standard_normal((n, d)) / np.sqrt(d))


def blobs(rng: np.random.Generator, n: int, k: int, d: int = 16, scale: float = 5.0, noise: float = 0.1):
    """Gaussian blobs far from the origin; returns (points, true labels)."""
    centres = scale * rng.standard_normal((k, d))
    labels = rng.integers(0, k, n)
    return (centres[labels] + noise * rng.standard_normal((n, d))).astype(np.float32), labels


def assert_knn_matches_brute_force(database, queries, k, scores, indices, tol=SCORE_TOL):
    """Tie-aware check against numpy: the returned scores are the k best exact
    scores, each index really has its score, and the index set is the brute-force
    one wherever the k-th and (k+1)-th scores are not tied."""
    exact = queries.astype(np.float64) @ database.astype(np.float64).T
    n = len(database)
    kk = min(k, n)
    assert scores.shape == indices.shape == (len(queries), kk)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    ranked = np.sort(exact, axis=1)[:, ::-1]
    np.testing.assert_allclose(scores, ranked[:, :kk], atol=tol, rtol=0)
    assert ((indices >= 0) & (indices < n)).all()
    np.testing.assert_allclose(np.take_along_axis(exact, indices, 1), scores, atol=tol, rtol=0)
    assert all(len(set(row)) == kk for row in indices), "an index is returned twice"
    order = np.argsort(-exact, axis=1, kind="stable")
    for row in range(len(queries)):
        if kk < n and ranked[row, kk - 1] - ranked[row, kk] <= tol:
            continue  # tie at the boundary: either row is right
        assert set(indices[row]) == set(order[row, :kk]), f"query {row}"


# -- kNN -----------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 10, 57])
def test_knn_matches_brute_force(backend, k):
    rng = np.random.default_rng(0)
    x = clustered(rng, 1_030, d=32)
    database, queries = x[:1_000], x[1_000:]
    scores, indices = backend.knn(database, queries, k)
    assert_knn_matches_brute_force(database, queries, k, scores, indices)
    assert (np.diff(scores, axis=1) <= 0).all(), "best first"


def test_knn_unnormalised_and_float64_input(backend):
    """Plain inner product (not cosine) on any float input, converted to float32."""
    rng = np.random.default_rng(1)
    database = rng.standard_normal((300, 12))  # float64, norms ~3.5
    queries = rng.standard_normal((7, 12))
    scores, indices = backend.knn(database, queries, 5)
    assert_knn_matches_brute_force(database, queries, 5, scores, indices, tol=1e-4)


def test_knn_k_above_n_is_clamped_to_n(backend):
    rng = np.random.default_rng(2)
    database, queries = clustered(rng, 8, d=16), clustered(rng, 3, d=16)
    scores, indices = backend.knn(database, queries, 50)
    assert indices.shape == (3, 8)
    assert (np.sort(indices, axis=1) == np.arange(8)).all(), "every row exactly once"
    assert_knn_matches_brute_force(database, queries, 50, scores, indices)


def test_knn_ties_return_distinct_rows_with_the_tied_score(backend):
    rng = np.random.default_rng(3)
    base = clustered(rng, 20, d=8)
    database = np.concatenate([base, base, base])  # every score three times
    queries = clustered(rng, 4, d=8)
    scores, indices = backend.knn(database, queries, 6)
    assert_knn_matches_brute_force(database, queries, 6, scores, indices)
    # the two best distinct vectors, three copies each
    assert (indices % 20 == indices[:, :1] % 20).sum(1).min() == 3


@pytest.mark.parametrize("k", [0, -3])
def test_knn_k_below_one_raises(backend, k):
    x = clustered(np.random.default_rng(4), 10, d=8)
    with pytest.raises(ValueError, match=f"k must be at least 1, got {k}"):
        backend.knn(x, x[:2], k)


@pytest.mark.parametrize("queries_shape", [(2, 7), (8,), (1, 2, 8)])
def test_knn_shape_mismatch_raises(backend, queries_shape):
    database = clustered(np.random.default_rng(5), 10, d=8)
    with pytest.raises(ValueError, match=r"knn needs \(n, d\) and \(q, d\) arrays"):
        backend.knn(database, np.ones(queries_shape, np.float32), 3)


def test_knn_empty_database_raises(backend):
    with pytest.raises(ValueError, match="empty database"):
        backend.knn(np.zeros((0, 8), np.float32), np.ones((2, 8), np.float32), 3)


@pytest.mark.parametrize("name", ["faiss-cpu", "torch"])
def test_put_then_knn_equals_knn_on_the_array(name):
    backend = FaissCPU() if name == "faiss-cpu" else TorchBackend("cpu")
    rng = np.random.default_rng(6)
    database, queries = clustered(rng, 500, d=16), clustered(rng, 9, d=16)
    resident = backend.put(database)
    for k in (1, 10, 600):
        s1, i1 = backend.knn(database, queries, k)
        s2, i2 = backend.knn(resident, queries, k)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(s1, s2)
        assert_knn_matches_brute_force(database, queries, k, s2, i2)


def test_put_then_knn_top1_equals_knn_on_the_array(backend):
    """The part of put() + knn that works on both backends today (k = 1)."""
    rng = np.random.default_rng(6)
    database, queries = clustered(rng, 500, d=16), clustered(rng, 9, d=16)
    s1, i1 = backend.knn(database, queries, 1)
    s2, i2 = backend.knn(backend.put(database), queries, 1)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6, rtol=0)


def test_put_then_knn_checks_arguments(backend):
    resident = backend.put(clustered(np.random.default_rng(7), 10, d=8))
    with pytest.raises(ValueError, match="k must be at least 1"):
        backend.knn(resident, np.ones((1, 8), np.float32), 0)
    with pytest.raises(ValueError, match="knn needs"):
        backend.knn(resident, np.ones((1, 5), np.float32), 3)


@pytest.mark.parametrize("name", ["faiss-cpu", "torch"])
def test_put_empty_database_error_says_empty(name):
    backend = FaissCPU() if name == "faiss-cpu" else TorchBackend("cpu")
    resident = backend.put(np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="empty database"):
        backend.knn(resident, np.ones((2, 8), np.float32), 3)


@pytest.mark.parametrize("chunk_rows", [5, 64, 333, 499, 500])
def test_torch_knn_merges_chunks_exactly(monkeypatch, chunk_rows):
    """Chunked top-k merged across chunks is the same as one chunk (and as brute force)."""
    rng = np.random.default_rng(8)
    database, queries = clustered(rng, 500, d=16), clustered(rng, 11, d=16)
    backend = TorchBackend("cpu")
    whole_scores, whole_indices = backend.knn(database, queries, 10)
    monkeypatch.setattr(torch_backend, "CHUNK_ROWS", chunk_rows)
    scores, indices = backend.knn(database, queries, 10)
    np.testing.assert_allclose(scores, whole_scores, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(np.sort(indices, 1), np.sort(whole_indices, 1))
    assert_knn_matches_brute_force(database, queries, 10, scores, indices)


def test_torch_knn_merges_chunks_of_a_resident_database(monkeypatch):
    rng = np.random.default_rng(8)
    database, queries = clustered(rng, 500, d=16), clustered(rng, 11, d=16)
    backend = TorchBackend("cpu")
    monkeypatch.setattr(torch_backend, "CHUNK_ROWS", 64)
    scores, indices = backend.knn(backend.put(database), queries, 10)
    assert_knn_matches_brute_force(database, queries, 10, scores, indices)


def test_torch_knn_k_larger_than_two_chunks(monkeypatch):
    rng = np.random.default_rng(9)
    database, queries = clustered(rng, 100, d=8), clustered(rng, 3, d=8)
    monkeypatch.setattr(torch_backend, "CHUNK_ROWS", 3)
    scores, indices = TorchBackend("cpu").knn(database, queries, 10)
    assert_knn_matches_brute_force(database, queries, 10, scores, indices)


# -- k-means -------------------------------------------------------------------


def squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return ((x.astype(np.float64)[:, None, :] - centroids.astype(np.float64)[None]) ** 2).sum(-1)


def assert_consistent(x: np.ndarray, result: KMeansResult, k: int, niter: int):
    """The result describes its own centroids: assignment is the nearest
    centroid, distances the squared distances to it, inertia their sum."""
    n, d = x.shape
    assert isinstance(result, KMeansResult)
    assert result.centroids.shape == (k, d) and result.centroids.dtype == np.float32
    assert result.assignment.shape == (n,) and result.assignment.dtype == np.int64
    assert result.distances.shape == (n,) and result.distances.dtype == np.float32
    assert 1 <= result.iterations <= niter
    exact = squared_distances(x, result.centroids)
    nearest = exact.min(1)
    np.testing.assert_allclose(result.distances, nearest, atol=1e-5, rtol=1e-5)
    ranked = np.sort(exact, 1)
    clear = ranked[:, 1] - ranked[:, 0] > 1e-4  # not a near tie between two centroids
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(result.assignment[clear], exact.argmin(1)[clear])
    np.testing.assert_allclose(exact[np.arange(n), result.assignment], nearest, atol=1e-4)
    assert result.inertia == pytest.approx(float(result.distances.sum(dtype=np.float64)), rel=1e-5)
    assert result.inertia == pytest.approx(nearest.sum(), rel=1e-5)


def test_kmeans_result_is_consistent_on_unit_vectors(backend):
    x = clustered(np.random.default_rng(10), 600, d=16, clusters=12)
    result = backend.kmeans(x, 8, niter=15, seed=0)
    assert_consistent(x, result, 8, 15)
    assert len(np.unique(result.assignment)) == 8, "no empty cluster"


@pytest.mark.parametrize("name", ["faiss-cpu", "torch"])
def test_kmeans_distances_are_exact_far_from_the_origin(name):
    backend = FaissCPU() if name == "faiss-cpu" else TorchBackend("cpu")
    x, _ = blobs(np.random.default_rng(3), 2_000, 8)
    result = backend.kmeans(x, 8, seed=0)
    assert_consistent(x, result, 8, 20)


def test_kmeans_same_seed_same_result(backend):
    x = clustered(np.random.default_rng(11), 500, d=16)
    a, b = backend.kmeans(x, 6, seed=7), backend.kmeans(x, 6, seed=7)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.assignment, b.assignment)
    np.testing.assert_array_equal(a.distances, b.distances)
    assert a.inertia == b.inertia and a.iterations == b.iterations


def test_kmeans_seed_changes_the_start(backend):
    x = clustered(np.random.default_rng(12), 500, d=16, clusters=40, spread=1.0)
    starts = {backend.kmeans(x, 6, niter=1, seed=seed).centroids.tobytes() for seed in range(4)}
    assert len(starts) > 1


@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_recovers_separated_blobs(backend, seed):
    x, labels = blobs(np.random.default_rng(20 + seed), 1_200, 6)
    result = backend.kmeans(x, 6, seed=seed)
    assert adjusted_rand_score(labels, result.assignment) == 1.0  # same partition up to relabelling
    assert len(np.unique(result.assignment)) == 6


@functools.cache
def sklearn_case(data: str) -> tuple[np.ndarray, float]:
    """The data and scikit-learn's best-of-10 inertia on it (computed once)."""
    rng = np.random.default_rng(30)
    if data == "separated":
        x, _ = blobs(rng, 2_000, 8)
    else:
        x = rng.standard_normal((2_000, 16)).astype(np.float32)
    return x, KMeans(8, n_init=10, random_state=0).fit(x).inertia_


@pytest.mark.parametrize("data", ["separated", "one-gaussian"])
@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_inertia_within_2_percent_of_sklearn(backend, data, seed):
    """One k-means++ run against scikit-learn's best of 10: within 2% either way.
    On one Gaussian blob the local minima differ by < 1%, so this catches a weak
    start or a broken Lloyd step; on separated blobs the optimum is unique."""
    x, reference = sklearn_case(data)
    inertia = backend.kmeans(x, 8, seed=seed).inertia
    assert abs(inertia / reference - 1) <= 0.02, (inertia, reference)


def test_kmeans_lloyd_improves_on_the_start(backend):
    x = np.random.default_rng(31).standard_normal((1_000, 8)).astype(np.float32)
    one, many = backend.kmeans(x, 10, niter=1, seed=0), backend.kmeans(x, 10, niter=25, seed=0)
    assert many.inertia < 0.97 * one.inertia


def test_kmeans_fewer_distinct_points_than_k(backend):
    x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)
    result = backend.kmeans(x, 5, seed=0)
    assert result.inertia == pytest.approx(0, abs=1e-4)
    for i in range(3):  # copies of one point share a cluster
        assert len(set(result.assignment[i * 10 : (i + 1) * 10])) == 1
    assert len(set(result.assignment)) == 3


def test_kmeans_k_equal_to_n_puts_each_point_alone(backend):
    x = np.eye(4, dtype=np.float32)
    result = backend.kmeans(x, 4, seed=0)
    assert sorted(result.assignment) == [0, 1, 2, 3]
    assert result.inertia == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("k", [0, -1, 11])
def test_kmeans_bad_k_raises(backend, k):
    x = clustered(np.random.default_rng(13), 10, d=8)
    with pytest.raises(ValueError, match=f"cannot make {k} clusters of 10 vectors: k must be between 1 and the number"):
        backend.kmeans(x, k)


def test_kmeans_needs_a_2d_array(backend):
    with pytest.raises(ValueError, match=r"kmeans needs an \(n, d\) array"):
        backend.kmeans(np.ones(10, np.float32), 2)


# -- get_backend ---------------------------------------------------------------


def test_get_backend_cpu_is_faiss_cpu():
    backend = get_backend("cpu")
    assert isinstance(backend, FaissCPU) and backend.name == "faiss-cpu"


def test_get_backend_auto_without_gpu_is_faiss_cpu(monkeypatch):
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)
    assert isinstance(get_backend("auto"), FaissCPU)
    assert isinstance(get_backend(), FaissCPU)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_get_backend_cuda_without_gpu_raises(monkeypatch, device):
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)
    with pytest.raises(DeviceError, match=f"device '{device}' was asked for but torch sees no CUDA GPU"):
        get_backend(device)


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_get_backend_gpu_without_faiss_gpu_is_torch(monkeypatch, device):
    """A GPU that faiss cannot use: torch on it (only built here, nothing runs on it)."""
    from mining.search.backends import faiss_gpu

    monkeypatch.setattr(devices, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(faiss_gpu, "available", lambda: False)
    backend = get_backend(device)
    assert isinstance(backend, TorchBackend) and backend.name == "torch"
    assert backend.device == torch.device("cuda")


@pytest.mark.parametrize("device", ["tpu", "gpu", "CPU", ""])
def test_get_backend_unknown_device_lists_the_allowed_ones(device):
    with pytest.raises(DeviceError, match=f"unknown device '{device}'; allowed: auto, cpu, cuda, cuda:N"):
        get_backend(device)
