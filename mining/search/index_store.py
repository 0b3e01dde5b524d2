"""The vector index on the lake: saved, loaded in another process, versioned.

Layout under ``_index/<backbone>/<weights>/``::

    current.json                 {"version": ...}: the version readers load
    <version>/manifest.json      kind, counts, the embeddings table's version and data files covered
    <version>/ids.parquet        image_id per position
    <version>/vectors.npy        float32 (n, width): the embedding snapshot
    <version>/ivf.faiss          the trained FAISS index (IVF kinds only)

A save writes a new version folder, then swaps ``current.json`` (one atomic
write), so a reader sees the old index or the new one, never a mix. The two
newest versions are kept, so a reader that just read the pointer still finds
its files.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mining.core.lake import INDEX_DIR, Lake
from mining.search.backends import Backend
from mining.search.index import IndexSpec, VectorIndex

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

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        return cls(**(raw | {"spec": IndexSpec(**raw["spec"])}))


def save_index(lake: Lake, index: VectorIndex, manifest: Manifest) -> Manifest:
    root = lake.index_dir(manifest.backbone, manifest.weights)
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    manifest = Manifest(**(asdict(manifest) | {"spec": index.spec, "count": len(index), "version": version,
                                                "updated_at": datetime.now(UTC).isoformat()}))
    folder = posixpath.join(root, version)
    if lake.protocol == "file":
        lake.fs.makedirs(folder, exist_ok=True)
    lake.write_parquet(pa.table({"image_id": pa.array(index.ids, pa.string())}), posixpath.join(folder, "ids.parquet"))
    with lake.fs.open(posixpath.join(folder, "vectors.npy"), "wb") as f:
        np.save(f, index.vectors)
    if index.faiss_index is not None:
        lake.fs.pipe_file(posixpath.join(folder, "ivf.faiss"), faiss.serialize_index(index.faiss_index).tobytes())
    lake.fs.pipe_file(posixpath.join(folder, "manifest.json"), manifest.to_json())
    lake.write_atomic(posixpath.join(root, "current.json"), json.dumps({"version": version}).encode())
    _drop_old_versions(lake, root)
    return manifest


def load_manifest(lake: Lake, backbone: str, weights: str) -> Manifest | None:
    root = lake.index_dir(backbone, weights)
    try:
        version = json.loads(lake.fs.cat_file(posixpath.join(root, "current.json")))["version"]
        return Manifest.from_json(lake.fs.cat_file(posixpath.join(root, version, "manifest.json")))
    except FileNotFoundError:
        return None


def load_index(lake: Lake, manifest: Manifest, backend: Backend | None = None) -> VectorIndex:
    started = time.monotonic()
    folder = posixpath.join(lake.index_dir(manifest.backbone, manifest.weights), manifest.version)
    with lake.fs.open(posixpath.join(folder, "ids.parquet"), "rb") as f:
        # ParquetFile, not read_table: read_table goes through pyarrow.dataset (and pandas), half a second of start-up.
        ids = pq.ParquetFile(f).read(columns=["image_id"]).column("image_id").to_numpy(zero_copy_only=False)
    with lake.fs.open(posixpath.join(folder, "vectors.npy"), "rb") as f:
        vectors = np.load(io.BytesIO(f.read()) if lake.protocol != "file" else f)
    faiss_index = None
    if manifest.spec.kind != "flat":
        data = lake.fs.cat_file(posixpath.join(folder, "ivf.faiss"))
        faiss_index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    log.debug("index %s/%s loaded: %d vectors, %s (%.1fs)", manifest.backbone, manifest.weights, len(ids),
             manifest.spec.describe(), time.monotonic() - started)
    return VectorIndex(
        ids, vectors, manifest.spec, faiss_index, backend, backbone=manifest.backbone, weights=manifest.weights
    )


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
