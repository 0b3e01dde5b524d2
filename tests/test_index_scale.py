"""The index at scale (issue 25), at small sizes with the thresholds lowered: the kind
chosen by size and logged, the saved index opened memory-mapped (ids, order and
vectors as ``np.memmap``, FAISS's inverted lists on disk), resident memory bounded
when opening, building from a float16 memory-mapped source, and recall against
brute force over the same arrays (faiss.contrib's way of evaluating an index)."""

from __future__ import annotations

import json
import logging
import posixpath
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest

from mining.core.config import IndexConfig
from mining.core.lake import Lake
from mining.core.sql import LakeDB
from mining.search.index import IndexSpec, VectorIndex, choose_spec
from mining.search.index_store import (
    Manifest,
    build_and_save,
    extend_and_save,
    load_index,
    load_manifest,
    save_index,
)
from mining.search.index_sync import index_lake
from tests.helpers import clustered, image_ids, write_embeddings

REPO = Path(__file__).resolve().parents[1]
WIDTH = 32
LOWERED = IndexConfig(flat_max=300, ivfpq_min=1_500, pq_m=16, nprobe=8)  # flat <= 300 < ivf < 1,500 <= ivfpq


def recall_at(k: int, index: VectorIndex, vectors: np.ndarray, queries: np.ndarray) -> float:
    """Share of the exact top-k (brute force over the same array) the index returns."""
    _, exact = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    _, found = index.search(queries, k)
    return float(np.mean([len(np.intersect1d(f, e)) / k for f, e in zip(found, exact)]))


def on_disk_lists(index: VectorIndex) -> bool:
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index.faiss_index).invlists)
    return isinstance(lists, faiss.OnDiskInvertedLists)


def test_auto_kind_by_size_at_the_lowered_and_the_default_thresholds():
    assert [choose_spec(n, LOWERED).kind for n in (0, 300, 301, 1_499, 1_500, 10**8)] == [
        "flat", "flat", "ivf", "ivf", "ivfpq", "ivfpq"]
    assert choose_spec(1_500, LOWERED).pq_m == 16
    assert choose_spec(1_999_999, IndexConfig()).kind == "ivf"
    assert choose_spec(2_000_000, IndexConfig()).kind == "ivfpq"  # the default ivfpq_min
    assert choose_spec(10**8, IndexConfig(kind="ivf")).kind == "ivf"  # an explicit kind ignores the thresholds


@pytest.mark.parametrize("n, kind, min_recall", [(250, "flat", 1.0), (1_000, "ivf", 0.9), (2_000, "ivfpq", 0.8)])
def test_each_kind_is_chosen_logged_and_opens_memory_mapped(lake, caplog, n, kind, min_recall):
    vectors = clustered(n + 20, seed=n, width=WIDTH)
    vectors, queries = vectors[:n], vectors[n:]
    write_embeddings(lake, image_ids(n), vectors, "part-a")
    with LakeDB(lake) as db, caplog.at_level(logging.INFO, logger="mining.search"):
        built, summary = index_lake(db, LOWERED)
    assert built.spec.kind == kind and summary.action == "built"
    assert f"auto for {n:,} vectors: flat up to flat_max = 300, ivf below ivfpq_min = 1,500" in caplog.text
    assert f"as {built.spec.describe()}" in caplog.text

    opened = load_index(lake, load_manifest(lake, "resnet18", "random-seed0"))
    assert opened.spec.kind == kind
    for array in (opened.ids, opened.vectors, opened.order):
        assert isinstance(array, np.memmap) and array.mode == "r"
    assert (opened.faiss_index is None) if kind == "flat" else on_disk_lists(opened)
    np.testing.assert_array_equal(opened.vectors, vectors)  # image_ids(n) are already in id order
    assert recall_at(10, opened, vectors, queries) >= min_recall
    # the same answers as the index as it was built, in memory
    np.testing.assert_array_equal(opened.search(queries, 10)[1], built.search(queries, 10)[1])


def test_an_opened_index_is_extended_by_the_sync_and_stays_mapped(lake):
    """A memory-mapped FAISS index cannot take rows (read-only on-disk lists); the sync
    copies it into memory, adds, and saves a new version that opens mapped again."""
    config = IndexConfig(kind="ivf")
    first, more = clustered(800, seed=1, width=WIDTH), clustered(200, seed=2, width=WIDTH)
    write_embeddings(lake, image_ids(800), first, "part-a")
    with LakeDB(lake) as db:
        index_lake(db, config)
    write_embeddings(lake, image_ids(200, start=800), more, "part-b")
    with LakeDB(lake) as db:
        grown, summary = index_lake(db, config)
    assert (summary.action, summary.added, len(grown)) == ("extended", 200, 1_000)
    assert isinstance(grown.vectors, np.memmap)
    opened = load_index(lake, load_manifest(lake, "resnet18", "random-seed0"))
    assert on_disk_lists(opened) and opened.faiss_index.ntotal == 1_000
    np.testing.assert_array_equal(opened.vectors, np.concatenate([first, more]))
    np.testing.assert_array_equal(opened.positions(image_ids(3, start=900)), [900, 901, 902])


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
def test_build_and_save_from_a_float16_memmap(tmp_path, kind):
    """The benchmark's path: a float16 file on disk, never whole in memory, becomes the
    index's float32 snapshot (mapped) and gives the recall of an index built in memory."""
    rows = clustered(2_020, seed=3, width=WIDTH)
    source = np.lib.format.open_memmap(tmp_path / "data.npy", mode="w+", dtype=np.float16, shape=(2_000, WIDTH))
    source[:] = rows[:2_000]
    queries, exact = rows[2_000:], source.astype(np.float32)
    lake = Lake(str(tmp_path / "lake"))
    spec = choose_spec(2_000, IndexConfig(kind=kind, pq_m=8))
    index, manifest = build_and_save(lake, np.array(image_ids(2_000)), source, spec,
                                     Manifest("synthetic", kind, spec, 0))
    assert isinstance(index.vectors, np.memmap) and index.vectors.dtype == np.float32
    np.testing.assert_array_equal(index.vectors, exact)
    assert manifest.count == 2_000 and load_manifest(lake, "synthetic", kind) == manifest
    in_memory = VectorIndex.build(np.array(image_ids(2_000)), exact, spec)
    opened = load_index(lake, manifest)
    assert recall_at(10, opened, exact, queries) == pytest.approx(recall_at(10, in_memory, exact, queries), abs=0.02)


def test_extend_and_save_equals_a_build_at_once(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    vectors, ids = clustered(300, seed=4, width=WIDTH), np.array(image_ids(300))
    manifest = save_index(lake, VectorIndex.build(ids[:200], vectors[:200], IndexSpec("flat")),
                          Manifest("resnet18", "w", IndexSpec("flat"), 0))
    grown, saved = extend_and_save(lake, load_index(lake, manifest), ids[200:], vectors[200:], manifest)
    whole = VectorIndex.build(ids, vectors, IndexSpec("flat"))
    assert saved.count == 300 and load_manifest(lake, "resnet18", "w").version == saved.version
    for index in (grown, load_index(lake, saved)):
        np.testing.assert_array_equal(index.vectors, vectors)
        np.testing.assert_array_equal(index.search(vectors[:5], 7)[1], whole.search(vectors[:5], 7)[1])
        np.testing.assert_array_equal(index.positions(ids[::-1]), np.arange(300)[::-1])


def test_a_version_saved_before_ids_npy_still_opens(tmp_path):
    """Indexes saved by earlier releases hold ids.parquet and no order.npy."""
    lake = Lake(str(tmp_path / "lake"))
    ids, vectors = np.array(image_ids(50))[::-1], clustered(50, seed=5, width=WIDTH)
    manifest = save_index(lake, VectorIndex.build(ids, vectors, IndexSpec("flat")),
                          Manifest("resnet18", "w", IndexSpec("flat"), 0))
    folder = Path(posixpath.join(lake.index_dir("resnet18", "w"), manifest.version))
    (folder / "ids.npy").unlink()
    (folder / "order.npy").unlink()
    lake.write_parquet(pa.table({"image_id": pa.array(ids, pa.string())}), str(folder / "ids.parquet"))
    opened = load_index(lake, manifest)
    np.testing.assert_array_equal(opened.positions(ids[:3]), [0, 1, 2])
    assert isinstance(opened.vectors, np.memmap)


OPEN_CHILD = """
import json, sys
import numpy as np
from mining.core.lake import Lake
from mining.search.index_store import load_index, load_manifest

def anon_kib():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon"))

lake = Lake(sys.argv[1])
manifest = load_manifest(lake, "synthetic", "flat")
np.zeros(1) @ np.zeros(1)
before = anon_kib()
index = load_index(lake, manifest)
opened = anon_kib()
index.search(np.asarray(index.vectors[:4]), 10)  # an exact search reads every row
print(json.dumps({"open_kib": opened - before, "search_kib": anon_kib() - before}))
"""


def test_opening_a_large_index_does_not_copy_its_vectors_into_memory(tmp_path):
    """A 128 MiB flat index opens, and is searched in full, with its vectors in the page
    cache (file-backed, reclaimable), not in the process's own (anonymous) memory."""
    lake = Lake(str(tmp_path / "lake"))
    n, width = 250_000, 128
    vectors = np.random.default_rng(6).standard_normal((n, width), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(np.char.zfill(np.char.mod("%x", np.arange(n)), 20), vectors, IndexSpec("flat"))
    save_index(lake, index, Manifest("synthetic", "flat", IndexSpec("flat"), 0))
    del index, vectors
    done = subprocess.run([sys.executable, "-c", OPEN_CHILD, lake.uri], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    grown = json.loads(done.stdout.strip().splitlines()[-1])
    vector_kib = n * width * 4 // 1024  # 125,000 KiB
    assert grown["open_kib"] < vector_kib // 10, grown
    assert grown["search_kib"] < vector_kib // 4, grown
