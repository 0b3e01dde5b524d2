"""The vector index (mining/search/index.py) and its storage on the lake
(mining/search/index_store.py), against numpy brute force.

Data: unit vectors from a Gaussian mixture (40 clusters), since uniform random
vectors have no neighbours to find. Tolerances: scores within 1e-5 of the exact
float64 inner products; recall@10 of IVF >= 0.9 with the default nprobe (2 of 64
lists for 4,000 vectors), 1.0 with every list probed; IVF-PQ (re-scored
exactly) recall@10 >= 0.8."""

from __future__ import annotations

import json
import posixpath
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mining.core.config import IndexConfig
from mining.core.lake import Lake
from mining.search.backends.faiss_cpu import FaissCPU
from mining.search.backends.torch_backend import TorchBackend
from mining.search.index import IndexSpec, SearchError, VectorIndex, choose_spec
from mining.search.index_store import Manifest, list_indexes, load_index, load_manifest, save_index

REPO = Path(__file__).resolve().parents[1]
SCORE_TOL = 1e-5
N, N_QUERIES = 4_000, 60


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, d: int, clusters: int = 40, spread: float = 0.5) -> np.ndarray:
    centres = unit_rows(rng.standard_normal((clusters, d)))
    labels = rng.integers(0, clusters, n)
    return unit_rows(centres[labels] + spread * rng.standard_normal((n, d)) / np.sqrt(d))


def make_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """Image ids in no sorted order, so positions() must really look them up."""
    return np.array([f"img-{i:05d}" for i in rng.permutation(n)])


class Data:
    def __init__(self, seed: int, n: int, d: int):
        rng = np.random.default_rng(seed)
        x = clustered(rng, n + N_QUERIES, d)
        self.vectors, self.queries = x[:n], x[n:]
        self.ids = make_ids(n, rng)
        self.exact = self.queries.astype(np.float64) @ self.vectors.astype(np.float64).T


@pytest.fixture(scope="module")
def data() -> Data:
    return Data(0, N, 16)


@pytest.fixture(scope="module")
def flat(data) -> VectorIndex:
    return VectorIndex.build(data.ids, data.vectors, choose_spec(N, IndexConfig(kind="flat")))


@pytest.fixture(scope="module")
def ivf(data) -> VectorIndex:
    spec = choose_spec(N, IndexConfig(kind="ivf"))
    assert spec == IndexSpec("ivf", nlist=64, nprobe=2)  # the defaults the recall bound is stated for
    return VectorIndex.build(data.ids, data.vectors, spec, seed=0)


@pytest.fixture(scope="module")
def pq_data() -> Data:
    # 8 dimensions, PQ2: 4-dim sub-vectors. FAISS trains a polysemous code per
    # sub-quantizer (about 4 s each on 2 cores), so pq_m stays small here.
    return Data(1, N, 8)


@pytest.fixture(scope="module")
def ivfpq(pq_data) -> VectorIndex:
    spec = choose_spec(N, IndexConfig(kind="ivfpq", pq_m=2))
    assert spec == IndexSpec("ivfpq", nlist=64, nprobe=2, pq_m=2)
    return VectorIndex.build(pq_data.ids, pq_data.vectors, spec, seed=0)


def brute_force(exact: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best k positions per query (float64 scores), optionally among ``rows`` only."""
    rows = np.arange(exact.shape[1]) if rows is None else rows
    order = np.argsort(-exact[:, rows], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(exact[:, rows], order, 1), rows[order]


def assert_exact(exact, k, scores, positions, rows=None, tol=SCORE_TOL):
    """Tie-aware equality with brute force over ``rows``: same scores, every
    position scores what is claimed, same position set where the k-th score is
    not tied with the next."""
    rows = np.arange(exact.shape[1]) if rows is None else rows
    kk = min(k, len(rows))
    assert scores.shape == positions.shape == (len(exact), kk)
    assert scores.dtype == np.float32 and positions.dtype == np.int64
    assert np.isin(positions, rows).all(), "a position outside the searched rows"
    ranked = -np.sort(-exact[:, rows], axis=1)
    np.testing.assert_allclose(scores, ranked[:, :kk], atol=tol, rtol=0)
    np.testing.assert_allclose(np.take_along_axis(exact, positions, 1), scores, atol=tol, rtol=0)
    _, expected = brute_force(exact, kk, rows)
    for q in range(len(exact)):
        assert len(set(positions[q])) == kk
        if kk < len(rows) and ranked[q, kk - 1] - ranked[q, kk] <= tol:
            continue
        assert set(positions[q]) == set(expected[q]), f"query {q}"


def recall(exact, positions, k, rows=None) -> float:
    _, expected = brute_force(exact, k, rows)
    return float(np.mean([len(set(p) & set(e)) / k for p, e in zip(positions, expected)]))


# -- choose_spec -----------------------------------------------------------------


def test_auto_is_flat_up_to_flat_max_and_ivf_above():
    config = IndexConfig(flat_max=1_000)
    assert choose_spec(1_000, config) == IndexSpec("flat")
    assert choose_spec(0, config) == IndexSpec("flat")
    above = choose_spec(1_001, config)
    assert above.kind == "ivf" and above.nlist >= 1 and above.pq_m == 0
    assert choose_spec(200_000, IndexConfig()).kind == "flat"  # the default flat_max
    assert choose_spec(200_001, IndexConfig()).kind == "ivf"


def test_explicit_kinds_ignore_flat_max():
    assert choose_spec(10_000_000, IndexConfig(kind="flat")) == IndexSpec("flat")
    assert choose_spec(5_000, IndexConfig(kind="ivf")).kind == "ivf"
    pq = choose_spec(5_000, IndexConfig(kind="ivfpq", pq_m=16))
    assert pq.kind == "ivfpq" and pq.pq_m == 16
    assert choose_spec(5_000, IndexConfig(kind="ivf", pq_m=16)).pq_m == 0


@pytest.mark.parametrize("kind", ["IVF", "hnsw", "", "flat "])
def test_unknown_kind_lists_the_allowed_kinds(kind):
    with pytest.raises(SearchError, match=f"unknown index kind {kind!r}; allowed: auto, flat, ivf, ivfpq"):
        choose_spec(1_000, IndexConfig(kind=kind))


@pytest.mark.parametrize("n, nlist, nprobe", [
    (1_000_000, 1024, 32), (100_000, 256, 8), (4_000, 64, 2), (1_000, 25, 1), (300, 7, 1),
])
def test_default_ivf_sizes(n, nlist, nprobe):
    """About sqrt(n) lists, a power of two, at least 16, capped at n // 39; 1/32 of them probed."""
    assert choose_spec(n, IndexConfig(kind="ivf")) == IndexSpec("ivf", nlist=nlist, nprobe=nprobe)


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
@pytest.mark.parametrize("config_nlist", [0, 100, 1 << 20])
def test_nlist_never_above_n_over_39(kind, config_nlist):
    for n in [39, 40, 77, 78, 100, 500, 624, 625, 1_000, 4_321, 65_536, 10**6, 10**8]:
        spec = choose_spec(n, IndexConfig(kind=kind, nlist=config_nlist, nprobe=1_000))
        assert 1 <= spec.nlist <= n // 39, (n, spec)
        assert 1 <= spec.nprobe <= spec.nlist, (n, spec)
    # below 39 vectors there is still one list
    assert choose_spec(10, IndexConfig(kind=kind)).nlist == 1


def test_explicit_nlist_and_nprobe_are_kept_when_they_fit():
    assert choose_spec(100_000, IndexConfig(kind="ivf", nlist=512, nprobe=20)) == IndexSpec("ivf", nlist=512, nprobe=20)


# -- VectorIndex: search -----------------------------------------------------------


def test_flat_search_equals_brute_force(data, flat):
    for k in (1, 10, 100):
        scores, positions = flat.search(data.queries, k)
        assert_exact(data.exact, k, scores, positions)


def test_search_k_above_n_clamps_and_k_below_one_raises(data):
    index = VectorIndex.build(data.ids[:7], data.vectors[:7], IndexSpec("flat"))
    scores, positions = index.search(data.queries[:3], 50)
    assert positions.shape == (3, 7)
    assert_exact(data.exact[:3, :7], 50, scores, positions)
    with pytest.raises(SearchError, match="k must be at least 1, got 0"):
        index.search(data.queries[:3], 0)


def test_search_takes_one_query_as_a_vector(data, flat):
    scores, positions = flat.search(data.queries[0], 5)
    assert positions.shape == (1, 5)
    assert_exact(data.exact[:1], 5, scores, positions)


def test_ivf_recall_with_default_nprobe_and_exact_with_every_list(data, ivf):
    scores, positions = ivf.search(data.queries, 10)
    assert recall(data.exact, positions, 10) >= 0.9
    np.testing.assert_allclose(np.take_along_axis(data.exact, positions, 1), scores, atol=SCORE_TOL)
    everything = ivf.with_nprobe(ivf.spec.nlist)
    scores, positions = everything.search(data.queries, 10)
    assert recall(data.exact, positions, 10) == 1.0
    assert_exact(data.exact, 10, scores, positions)


def test_a_large_k_probes_more_lists_and_past_a_quarter_of_them_scans_exactly(data, ivf):
    # A narrowing pool: 500 of 4,000 rows would need 128 of the 64 lists' worth of candidates.
    k = 500
    assert ivf._nprobe_for(k, N) is None
    scores, positions = ivf.search(data.queries, k)
    assert_exact(data.exact, k, scores, positions)
    # 30 results: more lists than the default 2, and most of the exact top 30 found.
    assert ivf.spec.nprobe < ivf._nprobe_for(30, N) <= ivf.spec.nlist // 4
    _, positions = ivf.search(data.queries, 30)
    assert (positions >= 0).all() and recall(data.exact, positions, 30) >= 0.95


def test_a_slice_the_probed_lists_barely_hold_is_still_answered_in_full(data, ivf):
    # The slice: the rows least like query 0, so the lists nearest it hold almost none of them.
    subset = np.argsort(data.exact[0])[: N // 4 + 1]  # just large enough to be searched through the index
    scores, positions = ivf.search(data.queries[:1], 10, subset=subset)
    assert_exact(data.exact[:1], 10, scores, positions, rows=np.sort(subset))


def test_ivf_exact_true_equals_brute_force(data, ivf):
    scores, positions = ivf.with_nprobe(1).search(data.queries, 20, exact=True)
    assert_exact(data.exact, 20, scores, positions)


def test_ivfpq_recall_and_exact_rescoring(pq_data, ivfpq):
    scores, positions = ivfpq.search(pq_data.queries, 10)
    assert (positions >= 0).all()
    assert recall(pq_data.exact, positions, 10) >= 0.8
    # re-scored from the stored vectors: exact inner products, best first
    np.testing.assert_allclose(np.take_along_axis(pq_data.exact, positions, 1), scores, atol=SCORE_TOL, rtol=0)
    assert (np.diff(scores, axis=1) <= 0).all()
    scores, positions = ivfpq.search(pq_data.queries, 10, exact=True)
    assert_exact(pq_data.exact, 10, scores, positions)


class CountingBackend:
    """FaissCPU that counts its knn calls: says which search path ran."""

    name = "faiss-cpu"

    def __init__(self):
        self.inner, self.calls = FaissCPU(), 0

    def put(self, database):
        return self.inner.put(database)

    def knn(self, database, queries, k):
        self.calls += 1
        return self.inner.knn(database, queries, k)

    def kmeans(self, x, k, **kwargs):
        return self.inner.kmeans(x, k, **kwargs)


def test_small_subset_is_searched_exactly(data, ivf):
    rng = np.random.default_rng(40)
    subset = rng.choice(N, N // 4, replace=False)  # the largest subset still searched exactly
    counting = CountingBackend()
    index = ivf.with_nprobe(1).with_backend(counting)
    scores, positions = index.search(data.queries, 10, subset=subset)
    assert counting.calls == 1
    assert_exact(data.exact, 10, scores, positions, rows=np.sort(subset))


def test_subset_with_duplicates_and_fewer_rows_than_k(data, flat):
    subset = np.array([5, 3, 5, 9, 3])
    scores, positions = flat.search(data.queries, 10, subset=subset)
    assert positions.shape == (N_QUERIES, 3)
    assert_exact(data.exact, 10, scores, positions, rows=np.array([3, 5, 9]))


def test_large_subset_on_ivf_uses_the_index_filtered_to_the_subset(data, ivf):
    rng = np.random.default_rng(41)
    subset = rng.choice(N, N // 4 + 1, replace=False)  # one row above the switch: IDSelector path
    rows = np.sort(subset)
    counting = CountingBackend()
    everything = ivf.with_nprobe(ivf.spec.nlist).with_backend(counting)
    scores, positions = everything.search(data.queries, 10, subset=subset)
    assert counting.calls == 0, "an IVF index searches a large subset itself"
    assert_exact(data.exact, 10, scores, positions, rows=rows)
    # default nprobe: approximate, but never outside the subset
    scores, positions = ivf.with_backend(counting).search(data.queries, 10, subset=subset)
    assert counting.calls == 0
    assert np.isin(positions[positions >= 0], subset).all()
    assert recall(data.exact, positions, 10, rows=rows) >= 0.9


def test_subset_on_flat_equals_brute_force_over_the_subset(data, flat):
    subset = np.random.default_rng(42).choice(N, 3_000, replace=False)
    scores, positions = flat.search(data.queries, 15, subset=subset)
    assert_exact(data.exact, 15, scores, positions, rows=np.sort(subset))


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_exclude_never_returns_excluded_positions(data, flat, ivf, kind):
    index = flat if kind == "flat" else ivf.with_nprobe(ivf.spec.nlist)
    _, best = brute_force(data.exact, 5)
    exclude = np.unique(best)  # each query's own 5 best, and others'
    scores, positions = index.search(data.queries, 10, exclude=exclude)
    assert not np.isin(positions, exclude).any()
    assert_exact(data.exact, 10, scores, positions, rows=np.setdiff1d(np.arange(N), exclude))


def test_subset_and_exclude_together(data, ivf):
    subset = np.arange(0, N, 3)
    exclude = np.arange(0, N, 2)
    scores, positions = ivf.search(data.queries, 10, subset=subset, exclude=exclude, exact=True)
    assert_exact(data.exact, 10, scores, positions, rows=np.arange(3, N, 6))


def test_exact_with_large_subset_on_ivf_equals_brute_force(data, ivf):
    subset = np.arange(N // 2)
    scores, positions = ivf.with_nprobe(1).search(data.queries, 10, subset=subset, exact=True)
    assert_exact(data.exact, 10, scores, positions, rows=subset)


def test_nothing_to_search_is_an_error(data, flat, ivf):
    for index in (flat, ivf):
        with pytest.raises(SearchError, match="nothing to search"):
            index.search(data.queries, 5, subset=np.array([], dtype=np.int64))
        with pytest.raises(SearchError, match="nothing to search"):
            index.search(data.queries, 5, subset=np.array([1, 2]), exclude=np.array([2, 1]))
    empty = VectorIndex(np.array([], dtype=str), np.zeros((0, 16), np.float32), IndexSpec("flat"))
    with pytest.raises(SearchError, match="the index is empty"):
        empty.search(data.queries, 5)


def test_empty_exclude_is_no_exclusion(data, ivf):
    a = ivf.search(data.queries, 10)
    b = ivf.search(data.queries, 10, exclude=np.array([], dtype=np.int64))
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_torch_backend_search_equals_brute_force(data, flat, ivf, kind):
    """The torch backend searches the exact vectors (CPU here), whatever the kind;
    a small subset works, a full search goes through put() + knn."""
    index = (flat if kind == "flat" else ivf).with_backend(TorchBackend("cpu"))
    subset = np.arange(0, N, 10)
    scores, positions = index.search(data.queries, 10, subset=subset)
    assert_exact(data.exact, 10, scores, positions, rows=subset)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_torch_backend_full_search_equals_brute_force(data, flat, ivf, kind):
    index = (flat if kind == "flat" else ivf).with_backend(TorchBackend("cpu"))
    scores, positions = index.search(data.queries, 10)
    assert_exact(data.exact, 10, scores, positions)


# -- VectorIndex: ids, extension, stats --------------------------------------------


def test_positions_of_ids(data, flat):
    picked = np.array([17, 3_999, 0, 17, 2_500])
    np.testing.assert_array_equal(flat.positions(data.ids[picked]), picked)
    np.testing.assert_array_equal(flat.positions(list(data.ids[picked])), picked)
    assert flat.positions([]).shape == (0,)


@pytest.mark.parametrize("unknown", ["img-99999", "img-", "zzz", "", "img-00001 "])
def test_unknown_id_is_an_error_naming_it(data, flat, unknown):
    with pytest.raises(SearchError, match="image id\\(s\\) not in the index: " + unknown.replace("-", "\\-")):
        flat.positions([data.ids[0], unknown])


def test_many_unknown_ids_are_named_up_to_five():
    index = VectorIndex(np.array(["b", "d"]), np.eye(2, dtype=np.float32), IndexSpec("flat"))
    with pytest.raises(SearchError, match=r"not in the index: a, c, e, f, g \.\.\."):
        index.positions(["a", "b", "c", "e", "f", "g", "h"])


def test_skip_missing_drops_unknown_ids_in_order(data, flat):
    wanted = [data.ids[5], "nope", data.ids[1], "zzzz", data.ids[5], "a"]
    np.testing.assert_array_equal(flat.positions(wanted, skip_missing=True), [5, 1, 5])
    assert flat.positions(["nope"], skip_missing=True).shape == (0,)


def test_positions_on_an_empty_index_is_an_error():
    empty = VectorIndex(np.array([], dtype=str), np.zeros((0, 4), np.float32), IndexSpec("flat"))
    with pytest.raises(SearchError, match="the index is empty"):
        empty.positions(["a"])


def test_ids_and_vectors_must_match():
    with pytest.raises(ValueError, match="3 ids for 2 vectors"):
        VectorIndex(np.array(["a", "b", "c"]), np.eye(2, dtype=np.float32), IndexSpec("flat"))


def test_flat_extended_equals_built_at_once(data, flat):
    part = VectorIndex.build(data.ids[:3_000], data.vectors[:3_000], IndexSpec("flat"), backbone="b", weights="w")
    extended = part.extended(data.ids[3_000:], data.vectors[3_000:])
    assert len(part) == 3_000, "the original is left alone"
    assert len(extended) == N and extended.backbone == "b" and extended.weights == "w"
    np.testing.assert_array_equal(extended.ids, data.ids)
    np.testing.assert_array_equal(extended.vectors, data.vectors)
    a, b = extended.search(data.queries, 10), flat.search(data.queries, 10)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(extended.positions(data.ids[3_990:]), np.arange(3_990, N))


def test_ivf_extended_keeps_the_trained_cells(data):
    spec = choose_spec(3_000, IndexConfig(kind="ivf"))
    part = VectorIndex.build(data.ids[:3_000], data.vectors[:3_000], spec, seed=0)
    centroids = part.faiss_index.quantizer.reconstruct_n(0, spec.nlist)
    extended = part.extended(data.ids[3_000:], data.vectors[3_000:])
    assert part.faiss_index.ntotal == 3_000, "the original index is left alone"
    assert extended.faiss_index.ntotal == N and extended.spec == spec
    np.testing.assert_array_equal(extended.faiss_index.quantizer.reconstruct_n(0, spec.nlist), centroids)
    scores, positions = extended.with_nprobe(spec.nlist).search(data.queries, 10)
    assert_exact(data.exact, 10, scores, positions)
    scores, positions = extended.search(data.queries, 10)
    assert recall(data.exact, positions, 10) >= 0.9
    assert (positions >= 3_000).any(), "new rows are found"


def test_stats_are_mean_and_std(data, flat):
    mean, std = flat.stats()
    assert mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (16,)
    np.testing.assert_allclose(mean, data.vectors.astype(np.float64).mean(0), atol=1e-6)
    np.testing.assert_allclose(std, data.vectors.astype(np.float64).std(0), atol=1e-6)
    assert flat.stats() is flat.stats()


def test_stats_floor_the_std_of_a_constant_dimension():
    vectors = np.zeros((5, 3), np.float32)
    vectors[:, 0] = 1.0
    vectors[:, 1] = np.arange(5)
    mean, std = VectorIndex(np.array(list("abcde")), vectors, IndexSpec("flat")).stats()
    np.testing.assert_allclose(mean, [1, 2, 0])
    np.testing.assert_allclose(std, [1e-6, np.sqrt(2), 1e-6], rtol=1e-6)


# -- index_store -----------------------------------------------------------------------


def version_folders(lake: Lake, backbone: str, weights: str) -> list[str]:
    root = lake.index_dir(backbone, weights)
    return sorted(posixpath.basename(p.rstrip("/")) for p in lake.fs.ls(root, detail=False) if not p.endswith(".json"))


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_save_then_load_gives_the_same_index(lake, data, flat, ivf, kind):
    index = flat if kind == "flat" else ivf
    given = Manifest("resnet18", "imagenet1k_v1", IndexSpec("flat"), 0, files=["embeddings/a.parquet"],
                     built_at="2026-01-01T00:00:00+00:00")
    saved = save_index(lake, index, given)  # spec and count are taken from the index
    assert saved.spec == index.spec and saved.count == N and saved.version
    assert saved.files == ["embeddings/a.parquet"] and saved.built_at == "2026-01-01T00:00:00+00:00"
    manifest = load_manifest(lake, "resnet18", "imagenet1k_v1")
    assert manifest == saved
    loaded = load_index(lake, manifest)
    assert loaded.spec == index.spec and (loaded.backbone, loaded.weights) == ("resnet18", "imagenet1k_v1")
    np.testing.assert_array_equal(loaded.ids, index.ids)
    assert loaded.vectors.dtype == np.float32 and np.array_equal(loaded.vectors, index.vectors)
    assert (loaded.faiss_index is None) == (kind == "flat")
    for kwargs in ({}, {"subset": np.arange(0, N, 2)}, {"exclude": np.arange(100)}):
        a, b = loaded.search(data.queries, 10, **kwargs), index.search(data.queries, 10, **kwargs)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(loaded.positions(data.ids[:50]), np.arange(50))
    assert list_indexes(lake) == [("resnet18", "imagenet1k_v1")]


def test_load_manifest_without_an_index_is_none(lake):
    assert load_manifest(lake, "resnet18", "imagenet1k_v1") is None
    assert list_indexes(lake) == []


def test_saves_keep_the_two_newest_versions(lake, data):
    manifest = Manifest("resnet18", "w", IndexSpec("flat"), 0)
    saved = []
    for n in (10, 20, 30):
        index = VectorIndex.build(data.ids[:n], data.vectors[:n], IndexSpec("flat"))
        saved.append(save_index(lake, index, manifest))
    versions = [m.version for m in saved]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert version_folders(lake, "resnet18", "w") == versions[1:]
    pointer = json.loads(lake.fs.cat_file(posixpath.join(lake.index_dir("resnet18", "w"), "current.json")))
    assert pointer == {"version": versions[-1]}
    current = load_manifest(lake, "resnet18", "w")
    assert current.version == versions[-1] and current.count == 30
    assert len(load_index(lake, current)) == 30
    previous = load_index(lake, saved[1])  # a reader that read the old pointer still finds its files
    np.testing.assert_array_equal(previous.ids, data.ids[:20])


def test_list_indexes_lists_every_embedding_set(lake, data):
    index = VectorIndex.build(data.ids[:10], data.vectors[:10], IndexSpec("flat"))
    for backbone, weights in [("resnet18", "random-seed0"), ("resnet18", "imagenet1k_v1"), ("resnet50", "ft@abc123")]:
        save_index(lake, index, Manifest(backbone, weights, IndexSpec("flat"), 0))
    assert list_indexes(lake) == [
        ("resnet18", "imagenet1k_v1"), ("resnet18", "random-seed0"), ("resnet50", "ft@abc123"),
    ]


CHILD = """
import json, sys
import numpy as np
from mining.search.index_store import load_index, load_manifest
from mining.core.lake import Lake
lake = Lake(sys.argv[1])
index = load_index(lake, load_manifest(lake, "resnet18", "imagenet1k_v1"))
scores, positions = index.search(np.load(sys.argv[2]), 5)
print(json.dumps({"kind": index.spec.kind, "ids": index.ids[positions].tolist(), "scores": scores.tolist()}))
"""


def test_a_new_process_loads_the_index(tmp_path, data, ivf):
    """IVF: ids, vectors and the serialised FAISS index all come back in a fresh interpreter."""
    index, kind = ivf, "ivf"
    lake = Lake(str(tmp_path / "lake"))
    save_index(lake, index, Manifest("resnet18", "imagenet1k_v1", index.spec, 0))
    np.save(tmp_path / "queries.npy", data.queries)
    done = subprocess.run([sys.executable, "-c", CHILD, lake.uri, str(tmp_path / "queries.npy")],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout.strip().splitlines()[-1])
    scores, positions = index.search(data.queries, 5)
    assert child["kind"] == kind
    assert child["ids"] == index.ids[positions].tolist()
    np.testing.assert_array_equal(np.array(child["scores"], np.float32), scores)
