"""The vector index: image ids, their embeddings, and a FAISS index over them.

Inner product on L2-normalised vectors (cosine similarity). Kinds:

- ``flat``: exact search, no training. ``auto`` picks it up to
  ``IndexConfig.flat_max`` vectors (200,000 by default: about 2 ms per query per
  10,000 vectors on 2 cores, see BENCHMARKS.md).
- ``ivf``: an inverted file (``IVF<nlist>,Flat``): k-means cells, ``nprobe`` of
  them searched per query. Approximate; ``auto`` picks it above ``flat_max``
  and below ``ivfpq_min``.
- ``ivfpq``: IVF with product-quantised codes (``pq_m`` bytes per vector), the
  results re-scored exactly from the stored vectors. ``auto`` picks it from
  ``ivfpq_min`` vectors (2,000,000 by default): its codes take ``pq_m`` bytes a
  vector where IVF-flat's lists take another 4 x width (docs/SCALE.md).

The thresholds live in ``IndexConfig`` (``[index]`` in the config), and
``auto_kind`` is the one rule that applies them.

The exact vectors are always kept (``vectors``, float32): narrowing, classifiers
and re-scoring need them, and the torch GPU backend searches them directly
(exact matmul + top-k). They may be a read-only ``np.memmap`` (an index opened
from the lake, see index_store), which is kept as it is, never copied: at 10M
vectors of 512 floats they are 20 GB, and a search touches only the rows it
scores. Positions (row numbers) are the index's internal ids; ``ids[position]``
is the image_id.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import faiss
import numpy as np

from mining.core.config import IndexConfig
from mining.core.errors import SearchError
from mining.search.backends import Backend
from mining.search.backends.faiss_cpu import FaissCPU

log = logging.getLogger(__name__)

KINDS = ("auto", "flat", "ivf", "ivfpq")
TRAIN_PER_LIST = 64  # training points per IVF list: enough for stable cells, bounds training time
RESCORE_FACTOR = 4  # ivfpq: candidates re-scored exactly per result wanted
# An IVF search probes enough lists to hold about this many candidates per result wanted: a
# large k (a narrowing pool of 20,000) needs more lists than a query's top 100. Measured at 1M
# vectors (BENCHMARKS.md, kNN): 12.5 candidates per result (nprobe 256 of 1,024 for 20,000)
# found 88-94% of the exact pool; 16 asks for more than that.
CANDIDATES_PER_RESULT = 16
# When that means probing more than this share of the lists, one exact scan costs about the
# same and finds the whole exact pool.
EXACT_BEYOND_SHARE = 0.25
ADD_CHUNK = 65_536  # rows converted to float32 and added to a FAISS index at a time (16 MiB at 64 floats a row)


@dataclass(frozen=True)
class IndexSpec:
    kind: str  # flat, ivf or ivfpq (never auto)
    nlist: int = 0
    nprobe: int = 0
    pq_m: int = 0

    def describe(self) -> str:
        if self.kind == "flat":
            return "flat (exact)"
        pq = f",PQ{self.pq_m}" if self.kind == "ivfpq" else ",Flat"
        return f"IVF{self.nlist}{pq}, nprobe {self.nprobe}"


def auto_kind(n: int, config: IndexConfig) -> str:
    """The kind ``auto`` gives ``n`` vectors: flat up to ``flat_max``, IVF-flat below
    ``ivfpq_min``, IVF-PQ from it (the one place the thresholds are applied)."""
    if n <= config.flat_max:
        return "flat"
    return "ivf" if n < config.ivfpq_min else "ivfpq"


def kind_rule(n: int, config: IndexConfig) -> str:
    """Why ``n`` vectors get their kind, for the log: the rule and its thresholds."""
    if config.kind != "auto":
        return f"[index] kind = {config.kind}"
    return (f"auto for {n:,} vectors: flat up to flat_max = {config.flat_max:,}, ivf below "
            f"ivfpq_min = {config.ivfpq_min:,}, ivfpq from it")


def choose_spec(n: int, config: IndexConfig) -> IndexSpec:
    """The index kind for ``n`` vectors: ``config.kind``, or for ``auto`` the rule of
    ``auto_kind``. IVF sizes default to about sqrt(n) lists (a power of two) and 1/32
    of them probed, which measured recall@100 >= 0.95."""
    if config.kind not in KINDS:
        raise SearchError(f"unknown index kind {config.kind!r}; allowed: {', '.join(KINDS)}")
    kind = auto_kind(n, config) if config.kind == "auto" else config.kind
    if kind == "flat":
        return IndexSpec("flat")
    nlist = config.nlist or max(16, 2 ** round(math.log2(max(math.sqrt(n), 1))))
    nlist = min(nlist, max(1, n // 39))  # FAISS wants about 39 training points per list
    nprobe = config.nprobe or max(1, nlist // 32)
    pq_m = config.pq_m if kind == "ivfpq" else 0
    return IndexSpec(kind, nlist=nlist, nprobe=min(nprobe, nlist), pq_m=pq_m)


class VectorIndex:
    """``ids``: (n,) image ids (detection ids when ``objects``: an index over the object
    embeddings); ``vectors``: float32 (n, d), unit rows; ``faiss_index``:
    the trained IVF index over the same rows, or None for flat. ``order``: the
    positions in id order (``argsort(ids)``), when the caller has it saved.
    Memory-mapped ``ids``, ``vectors`` and ``order`` are kept mapped, not copied."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, spec: IndexSpec, faiss_index: faiss.Index | None = None,
                 backend: Backend | None = None, *, backbone: str = "", weights: str = "",
                 order: np.ndarray | None = None, objects: bool = False):
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        self.ids = ids if _mapped(ids, np.str_) else np.asarray(ids, dtype=str)
        self.vectors = vectors if _mapped(vectors, np.float32) else np.ascontiguousarray(vectors, dtype=np.float32)
        self.spec = spec
        self.backbone, self.weights = backbone, weights  # the embedding set it covers
        self.objects = objects  # its ids are detection ids (object_embeddings), not image ids
        self.faiss_index = faiss_index
        self.backend = backend or FaissCPU()
        self._order = order
        self._resident = None
        self._stats: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def order(self) -> np.ndarray:
        """Positions in image-id order (computed on first use unless given)."""
        if self._order is None:
            self._order = np.argsort(self.ids, kind="stable")
        return self._order

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, spec: IndexSpec, *, seed: int = 0,
              backend: Backend | None = None, backbone: str = "", weights: str = "",
              objects: bool = False) -> VectorIndex:
        """An index over ``vectors`` (float32 (n, d), in memory or a ``np.memmap``, kept
        as given). IVF kinds train on a sample and are filled ``ADD_CHUNK`` rows at a
        time, so a mapped array is read through once, never copied whole."""
        vectors = vectors if _mapped(vectors, np.float32) else np.ascontiguousarray(vectors, dtype=np.float32)
        faiss_index = None
        log.info("building a %s index over %d vectors", spec.describe(), len(vectors))
        if spec.kind != "flat":
            faiss_index = _train_ivf(vectors, spec, seed)
            add_in_chunks(faiss_index, vectors)
        return cls(ids, vectors, spec, faiss_index, backend, backbone=backbone, weights=weights, objects=objects)

    def extended(self, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        """A new index with these rows appended (IVF cells are kept: new vectors go
        to the trained cells, no retraining). The result is in memory: index_store's
        ``extend_and_save`` appends to a saved index in bounded memory."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        faiss_index = None
        if self.faiss_index is not None:
            faiss_index = in_memory_copy(self.faiss_index)
            faiss_index.add(vectors)
        return self._like(ids=np.concatenate([self.ids, np.asarray(ids, dtype=str)]),
                          vectors=np.concatenate([self.vectors, vectors]), faiss_index=faiss_index)

    def with_backend(self, backend: Backend) -> VectorIndex:
        return self._like(backend=backend)

    def with_nprobe(self, nprobe: int) -> VectorIndex:
        return self._like(spec=replace(self.spec, nprobe=nprobe))

    def _like(self, **changes) -> VectorIndex:
        fields = {"ids": self.ids, "vectors": self.vectors, "spec": self.spec, "faiss_index": self.faiss_index,
                  "backend": self.backend, "backbone": self.backbone, "weights": self.weights, "order": self._order,
                  "objects": self.objects}
        if "ids" in changes:
            fields["order"] = None
        return VectorIndex(**(fields | changes))

    # -- lookups -------------------------------------------------------------
    def positions(self, image_ids: list[str] | np.ndarray, *, skip_missing: bool = False) -> np.ndarray:
        """Positions of ``image_ids``. An id not in the index is an error naming it,
        or with ``skip_missing`` left out (a SQL slice may hold images not embedded)."""
        wanted = np.asarray(image_ids, dtype=str)
        if len(self) == 0:
            raise SearchError("the index is empty: embed images first (edgemine embed), then edgemine index")
        found = np.searchsorted(self.ids, wanted, sorter=self.order)
        found = self.order[np.minimum(found, len(self) - 1)]
        present = self.ids[found] == wanted
        if skip_missing:
            return found[present].astype(np.int64)
        missing = wanted[~present]
        if len(missing) and self.objects:
            raise SearchError(
                f"detection id(s) not in the object index: {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}. Check the id (edgemine sql \"SELECT detection_id FROM "
                "detections LIMIT 5\"), or embed the boxes first (edgemine embed --objects)"
            )
        if len(missing):
            raise SearchError(
                f"image id(s) not in the index: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. "
                'Check the id (edgemine sql "SELECT image_id FROM images LIMIT 5"), '
                "or embed and index new images first (edgemine embed, edgemine index)"
            )
        return found.astype(np.int64)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and standard deviation of the vectors (cached; summed
        ``ADD_CHUNK`` rows at a time, so a mapped index is not copied whole)."""
        if self._stats is None:
            total = np.zeros(self.dim, np.float64)
            squares = np.zeros(self.dim, np.float64)
            for start in range(0, len(self), ADD_CHUNK):
                block = np.asarray(self.vectors[start : start + ADD_CHUNK], dtype=np.float64)
                total += block.sum(0)
                squares += np.square(block).sum(0)
            n = max(len(self), 1)
            mean = total / n
            std = np.sqrt(np.maximum(squares / n - mean**2, 0))
            self._stats = (mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))
        return self._stats

    # -- search --------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, *, subset: np.ndarray | None = None,
               exclude: np.ndarray | None = None, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows by inner product for each query.

        ``queries``: float32 (q, d). ``subset``: positions to search among (a SQL
        slice), None for all. ``exclude``: positions never returned (already seen;
        meant to be few: each costs one more result fetched).
        ``exact``: scan every vector even when an IVF index exists (for queries
        that are not image vectors, such as a classifier's weights).
        Returns ``scores`` float32 (q, k') and ``positions`` int64 (q, k'), best
        first, k' = min(k, rows searchable); an empty search space is an error.
        An IVF search probes more lists for a large k (``_nprobe_for``), and answers a
        query whose probed lists hold fewer than k' by an exact scan: never fewer than k'."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if k < 1:
            raise SearchError(f"k must be at least 1, got {k}")
        if len(self) == 0:
            raise SearchError("the index is empty: embed images first (edgemine embed), then edgemine index")
        if subset is not None:
            subset = np.unique(np.asarray(subset, dtype=np.int64))
        excluded = np.zeros(0, np.int64) if exclude is None else np.unique(np.asarray(exclude, dtype=np.int64))
        # Only exclusions that could come back count against what is searchable.
        excluded = (
            excluded[np.isin(excluded, subset)]
            if subset is not None
            else excluded[(excluded >= 0) & (excluded < len(self))]
        )
        available = (len(self) if subset is None else len(subset)) - len(excluded)
        if available <= 0:
            raise SearchError("nothing to search: the slice (--where) and the exclusions leave no image")
        k = min(k, available)
        # Exclusions are few (what a reviewer has seen): ask for that many more and drop
        # them, rather than copying every other vector into a candidate set per query.
        scores, positions = self._search(queries, k + len(excluded), subset, exact)
        if len(excluded):
            scores, positions = _drop(scores, positions, excluded, k)
        return scores, positions

    def _search(
        self, queries: np.ndarray, k: int, subset: np.ndarray | None, exact: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        if subset is not None and (exact or self.spec.kind == "flat" or len(subset) <= len(self) // 4):
            # A small slice: exact search over just its rows beats filtering the index.
            scores, rows = self.backend.knn(self.vectors[subset], queries, k)
            return scores, subset[rows]
        if exact or self.spec.kind == "flat" or self.backend.name == "torch":
            if self._resident is None:
                self._resident = self.backend.put(self.vectors)
            return self.backend.knn(self._resident, queries, k)
        return self._search_ivf(queries, k, subset)

    def _search_ivf(self, queries: np.ndarray, k: int, subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        available = len(self) if subset is None else len(subset)
        nprobe = self._nprobe_for(k, available)
        if nprobe is None:
            log.debug("k=%d of %d: one exact scan instead of probing most of the lists", k, available)
            return self._search(queries, k, subset, exact=True)
        fetch = k * RESCORE_FACTOR if self.spec.kind == "ivfpq" else k
        selector = None if subset is None else faiss.IDSelectorBatch(subset)
        params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)
        scores, positions = self.faiss_index.search(queries, fetch, params=params)
        if self.spec.kind == "ivfpq":
            scores, positions = _rescore(self.vectors, queries, positions, k)
        positions = positions.astype(np.int64)
        short = (positions[:, :k] < 0).any(axis=1)
        if short.any():  # the probed lists held fewer than k: never return less than asked
            scores[short], positions[short] = self._search(queries[short], k, subset, exact=True)
        return scores, positions

    def _nprobe_for(self, k: int, available: int) -> int | None:
        """The lists to probe for ``k`` results among ``available`` rows: the index's nprobe, or
        more so that they hold ``CANDIDATES_PER_RESULT`` candidates per result; None: an exact
        scan, when that would probe more than ``EXACT_BEYOND_SHARE`` of the lists."""
        needed = math.ceil(CANDIDATES_PER_RESULT * k * self.spec.nlist / max(available, 1))
        if needed <= self.spec.nprobe:
            return self.spec.nprobe
        return needed if needed <= EXACT_BEYOND_SHARE * self.spec.nlist else None


def add_in_chunks(faiss_index: faiss.Index, vectors: np.ndarray) -> None:
    """Add rows of any float dtype (a memmap too), ``ADD_CHUNK`` at a time as float32."""
    for start in range(0, len(vectors), ADD_CHUNK):
        faiss_index.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))


def in_memory_copy(faiss_index: faiss.Index) -> faiss.Index:
    """A writable in-memory copy of an IVF index, its inverted lists memory-mapped or not.
    ``clone_index`` refuses on-disk lists, and their serialised form only names their
    file: copy all but the lists, then the lists' entries (``copy_subset_to``)."""
    ivf = faiss.extract_index_ivf(faiss_index)
    if not isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists):
        return faiss.clone_index(faiss_index)
    copy = faiss.deserialize_index(faiss.serialize_index(faiss_index), faiss.IO_FLAG_SKIP_IVF_DATA)
    copy_ivf = faiss.extract_index_ivf(copy)
    lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    copy_ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index frees them
    copy.ntotal = copy_ivf.ntotal = 0
    ivf.copy_subset_to(copy_ivf, faiss.InvertedLists.SUBSET_TYPE_ID_RANGE, 0, ivf.ntotal)
    return copy


def _train_ivf(vectors: np.ndarray, spec: IndexSpec, seed: int) -> faiss.Index:
    factory = f"IVF{spec.nlist},Flat" if spec.kind == "ivf" else f"IVF{spec.nlist},PQ{spec.pq_m}"
    if spec.kind == "ivfpq" and vectors.shape[1] % spec.pq_m:
        raise SearchError(f"ivfpq needs pq_m to divide the width: {spec.pq_m} does not divide {vectors.shape[1]}; "
                          "set [index] pq_m to a divisor (64 suits 512 and 1280)")
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    sample_size = min(len(vectors), spec.nlist * TRAIN_PER_LIST)
    sample = np.ascontiguousarray(vectors, dtype=np.float32) if sample_size == len(vectors) else None
    if sample is None:  # rows read in position order: one pass over a mapped file
        rows = np.sort(np.random.default_rng(seed).choice(len(vectors), sample_size, replace=False))
        sample = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    faiss.extract_index_ivf(index).cp.seed = seed
    if spec.kind == "ivfpq":
        # Polysemous codes serve Hamming pre-filtering, which search never uses; training them takes minutes.
        index.do_polysemous_training = False
    index.train(sample)
    return index


def _mapped(array: np.ndarray, dtype: type) -> bool:
    """Whether ``array`` is a C-ordered memmap of ``dtype``: kept as it is, never copied."""
    return isinstance(array, np.memmap) and array.dtype.type is dtype and array.flags.c_contiguous


def _drop(scores: np.ndarray, positions: np.ndarray, excluded: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` results of each row that are not ``excluded``, in order; a row
    left short (IVF padding) is padded with position -1, score -inf."""
    keep = ~np.isin(positions, excluded) & (positions >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(scores, order, 1).copy()
    positions = np.take_along_axis(positions, order, 1).copy()
    short = ~np.take_along_axis(keep, order, 1)
    scores[short], positions[short] = -np.inf, -1
    return scores, positions


def _rescore(vectors: np.ndarray, queries: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores for the PQ candidates, best ``k`` kept (-1 pads are dropped to the end)."""
    valid = positions >= 0
    exact = np.einsum("qkd,qd->qk", vectors[np.where(valid, positions, 0)], queries)
    exact = np.where(valid, exact, -np.inf).astype(np.float32)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(exact, order, 1), np.take_along_axis(positions, order, 1)
