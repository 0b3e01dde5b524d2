"""The vector index on the lake: saved, opened memory-mapped in another process, versioned.

Layout under ``_index/<backbone>/<weights>/`` (the object embeddings' index:
``_index/_objects/<backbone>/<weights>/``, its ids detection ids)::

    current.json                 {"version": ...}: the version readers load
    <version>/manifest.json      kind, counts, the embeddings table's version and data files covered
    <version>/ids.npy            image_id per position (fixed-width text)
    <version>/order.npy          positions in image_id order (the id lookup's sorter)
    <version>/vectors.npy        float32 (n, width): the embedding snapshot
    <version>/ivf.faiss          the trained FAISS index (IVF kinds only)

A save writes a new version folder, then swaps ``current.json`` (one atomic
write), so a reader sees the old index or the new one, never a mix. The two
newest versions are kept, so a reader that just read the pointer still finds
its files. (Versions saved before ``ids.npy`` hold ``ids.parquet``; they still open.)

Bounded memory: ``load_index`` maps ``ids.npy``, ``order.npy`` and ``vectors.npy``
(``np.load(mmap_mode="r")``) and reads ``ivf.faiss`` with ``faiss.IO_FLAG_MMAP``
(its inverted lists stay on disk), so opening a 10M-vector index costs the
coarse quantizer and page cache, not 20 GB (BENCHMARKS.md). On ``s3://`` the
version's files are first downloaded to a temporary folder, mapped, and the
folder removed (the maps stay valid). ``build_and_save`` and ``extend_and_save``
write the float32 snapshot in chunks straight into the new version, so building
from a memory-mapped source of any float dtype never holds the vectors in memory.
"""

from __future__ import annotations

import json
import logging
import posixpath
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq

from mining.core.lake import INDEX_DIR, Lake
from mining.search.backends import Backend
from mining.search.index import ADD_CHUNK, IndexSpec, VectorIndex, add_in_chunks, in_memory_copy

log = logging.getLogger(__name__)

KEEP_VERSIONS = 2


@dataclass
class Manifest:
    backbone: str
    weights: str
    spec: IndexSpec
    count: int
    files: list[str] = field(default_factory=list)  # data files of the embeddings table covered (relative to it)
    built_at: str = ""
    updated_at: str = ""
    version: str = ""
    embeddings_version: int | None = None  # the embeddings table's Delta version the index covers
    objects: bool = False  # over object_embeddings (ids are detection ids), not embeddings (image ids)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        return cls(**(raw | {"spec": IndexSpec(**raw["spec"])}))


def save_index(lake: Lake, index: VectorIndex, manifest: Manifest) -> Manifest:
    """Save ``index`` as a new version (spec and count taken from it) and point readers at it."""
    manifest = _stamped(manifest, index.spec, len(index))
    with _writable_folder(lake, manifest) as local:
        _write_rows(local / "vectors.npy", [index.vectors])
        _write_rest(local, index, manifest)
    _publish(lake, manifest)
    return manifest


def build_and_save(lake: Lake, ids: np.ndarray, vectors: np.ndarray, spec: IndexSpec, manifest: Manifest, *,
                   seed: int = 0, backend: Backend | None = None) -> tuple[VectorIndex, Manifest]:
    """Build an index over ``vectors`` ((n, d), any float dtype, in memory or memory-mapped)
    and save it: the float32 snapshot is written in chunks into the new version and the
    index built over its map, so memory holds the FAISS index, not the vectors."""
    manifest = _stamped(manifest, spec, len(ids))
    with _writable_folder(lake, manifest) as local:
        _write_rows(local / "vectors.npy", [vectors])
        index = VectorIndex.build(ids, _open_rows(local / "vectors.npy"), spec, seed=seed, backend=backend,
                                  backbone=manifest.backbone, weights=manifest.weights, objects=manifest.objects)
        _write_rest(local, index, manifest)
    _publish(lake, manifest)
    return index, manifest


def extend_and_save(lake: Lake, index: VectorIndex, ids: np.ndarray, vectors: np.ndarray,
                    manifest: Manifest) -> tuple[VectorIndex, Manifest]:
    """``index`` with rows appended (IVF cells kept), saved as a new version: the
    snapshot copied in chunks, the FAISS index read into memory to take the new rows."""
    faiss_index = None
    if index.faiss_index is not None:
        faiss_index = in_memory_copy(index.faiss_index)
        add_in_chunks(faiss_index, vectors)
    manifest = _stamped(manifest, index.spec, len(index) + len(ids))
    with _writable_folder(lake, manifest) as local:
        _write_rows(local / "vectors.npy", [index.vectors, vectors])
        grown = VectorIndex(np.concatenate([index.ids, np.asarray(ids, dtype=str)]), _open_rows(local / "vectors.npy"),
                            index.spec, faiss_index, index.backend, backbone=index.backbone, weights=index.weights,
                            objects=index.objects)
        _write_rest(local, grown, manifest)
    _publish(lake, manifest)
    return grown, manifest


def _stamped(manifest: Manifest, spec: IndexSpec, count: int) -> Manifest:
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return Manifest(**(asdict(manifest) | {"spec": spec, "count": count, "version": version,
                                           "updated_at": datetime.now(UTC).isoformat()}))


def _version_folder(lake: Lake, manifest: Manifest) -> str:
    return posixpath.join(lake.index_dir(manifest.backbone, manifest.weights, manifest.objects), manifest.version)


@contextmanager
def _writable_folder(lake: Lake, manifest: Manifest) -> Iterator[Path]:
    """A local folder to write a version's files in: the version folder itself on a
    local lake; on S3 a temporary folder, uploaded when the block ends."""
    folder = _version_folder(lake, manifest)
    if lake.protocol == "file":
        lake.fs.makedirs(folder, exist_ok=True)
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="edgemine-index-") as tmp:
        yield Path(tmp)
        for file in sorted(Path(tmp).iterdir()):
            lake.fs.put_file(str(file), posixpath.join(folder, file.name))


def _write_rows(path: Path, parts: list[np.ndarray]) -> None:
    """``parts`` stacked into one float32 .npy, ``ADD_CHUNK`` rows at a time."""
    rows, width = sum(len(p) for p in parts), parts[0].shape[1]
    if rows == 0:  # an empty file cannot be mapped
        np.save(path, np.zeros((0, width), np.float32))
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, width))
    at = 0
    for part in parts:
        for start in range(0, len(part), ADD_CHUNK):
            block = part[start : start + ADD_CHUNK]
            out[at : at + len(block)] = block
            at += len(block)
    out.flush()
    del out


def _write_rest(local: Path, index: VectorIndex, manifest: Manifest) -> None:
    np.save(local / "ids.npy", np.asarray(index.ids, dtype=str))
    np.save(local / "order.npy", np.asarray(index.order, dtype=np.int64))
    if index.faiss_index is not None:
        faiss.write_index(index.faiss_index, str(local / "ivf.faiss"))
    (local / "manifest.json").write_bytes(manifest.to_json())


def _publish(lake: Lake, manifest: Manifest) -> None:
    root = lake.index_dir(manifest.backbone, manifest.weights, manifest.objects)
    lake.write_atomic(posixpath.join(root, "current.json"), json.dumps({"version": manifest.version}).encode())
    _drop_old_versions(lake, root)


def load_manifest(lake: Lake, backbone: str, weights: str, objects: bool = False) -> Manifest | None:
    root = lake.index_dir(backbone, weights, objects)
    try:
        version = json.loads(lake.fs.cat_file(posixpath.join(root, "current.json")))["version"]
        return Manifest.from_json(lake.fs.cat_file(posixpath.join(root, version, "manifest.json")))
    except FileNotFoundError:
        return None


def load_index(lake: Lake, manifest: Manifest, backend: Backend | None = None) -> VectorIndex:
    """The saved index, memory-mapped (see the module docstring): ids, order and vectors as
    read-only ``np.memmap``, the FAISS index's inverted lists on disk (``IO_FLAG_MMAP``)."""
    started = time.monotonic()
    with _readable_folder(lake, _version_folder(lake, manifest)) as local:
        ids = _open_ids(local)
        order = _open_rows(local / "order.npy") if (local / "order.npy").exists() else None
        vectors = _open_rows(local / "vectors.npy")
        faiss_index = None
        if manifest.spec.kind != "flat":
            faiss_index = faiss.read_index(str(local / "ivf.faiss"), faiss.IO_FLAG_MMAP)
    log.debug("index %s/%s opened: %d vectors, %s, memory-mapped (%.1fs)", manifest.backbone, manifest.weights,
              len(ids), manifest.spec.describe(), time.monotonic() - started)
    return VectorIndex(ids, vectors, manifest.spec, faiss_index, backend, backbone=manifest.backbone,
                       weights=manifest.weights, order=order, objects=manifest.objects)


@contextmanager
def _readable_folder(lake: Lake, folder: str) -> Iterator[Path]:
    """A local folder holding a version's files: the version folder on a local lake; on
    S3 a temporary copy, removed when the block ends (what was mapped stays mapped)."""
    if lake.protocol == "file":
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="edgemine-index-") as tmp:
        for remote in lake.fs.ls(folder, detail=False):
            lake.fs.get_file(remote, str(Path(tmp) / posixpath.basename(remote)))
        yield Path(tmp)


def _open_rows(path: Path) -> np.ndarray:
    """A saved .npy, memory-mapped read-only (an empty one, which cannot be mapped, read)."""
    try:
        return np.load(path, mmap_mode="r")
    except ValueError:  # mmap of length 0
        return np.load(path)


def _open_ids(local: Path) -> np.ndarray:
    if (local / "ids.npy").exists():
        return _open_rows(local / "ids.npy")
    # ParquetFile, not read_table: read_table goes through pyarrow.dataset (and pandas), half a second of start-up.
    ids = pq.ParquetFile(local / "ids.parquet").read(columns=["image_id"]).column("image_id")
    return ids.to_numpy(zero_copy_only=False)


def list_indexes(lake: Lake) -> list[tuple[str, str]]:
    """(backbone, weights) of every index in the lake."""
    pointers = lake.fs.glob(lake.path(INDEX_DIR, "*", "*", "current.json"))
    return sorted(tuple(p.split("/")[-3:-1]) for p in pointers)


def _drop_old_versions(lake: Lake, root: str) -> None:
    versions = sorted(p for p in lake.fs.ls(root, detail=False) if not p.endswith(".json"))
    for old in versions[:-KEEP_VERSIONS]:
        try:
            lake.fs.rm(old, recursive=True)
        except FileNotFoundError:  # another sync saving at the same time removed it first
            pass
