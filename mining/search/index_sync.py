"""The vector index in step with the embeddings (`edgemine index`): build it over the lake's embeddings, or bring
it up to date.

The index covers a snapshot of embedding files (listed in its manifest). A run
compares that list with the lake's files:

- no index, ``--rebuild``, a kind change (the lake grew past ``flat_max`` or ``ivfpq_min``), a
  covered file gone (``embed --overwrite``) or a new file re-embedding an indexed
  image: build from scratch;
- new files only: read just those and add their vectors (IVF cells kept);
- nothing new: nothing to do.

``open_index`` is what the search commands call: the current index, synced first.

With ``objects=True`` the same code keeps the index of the object embeddings (one vector per
detection box, `edgemine embed --objects`) in step with the ``object_embeddings`` table: its
ids are detection ids, it lives beside the images' index (``_index/_objects/``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from mining.core import tables
from mining.core.config import IndexConfig
from mining.core.errors import LakeError, SearchError
from mining.core.lake import Lake
from mining.core.schema import EMBEDDINGS, OBJECT_EMBEDDINGS, Table, embedding_matrix
from mining.core.sql import LakeDB
from mining.core.summary import Summary
from mining.search.backends import get_backend
from mining.search.index import VectorIndex, choose_spec, kind_rule
from mining.search.index_store import Manifest, build_and_save, extend_and_save, load_index, load_manifest, save_index

log = logging.getLogger(__name__)


@dataclass
class IndexSummary(Summary):
    job: str = "index"
    backbone: str = ""
    weights: str = ""
    action: str = ""  # built, rebuilt, extended, up to date
    reason: str = ""
    vectors: int = 0
    added: int = 0
    kind: str = ""
    files: int = 0
    objects: bool = False


def _source(objects: bool) -> tuple[Table, str]:
    """The table an index reads and its id column: images' embeddings, or the object embeddings."""
    return (OBJECT_EMBEDDINGS, "detection_id") if objects else (EMBEDDINGS, "image_id")


def index_lake(db: LakeDB, config: IndexConfig, *, backbone: str | None = None, weights: str | None = None,
               rebuild: bool = False, seed: int = 0, objects: bool = False) -> tuple[VectorIndex, IndexSummary]:
    """Sync the index of one embedding set with the lake (``objects``: of its object embeddings);
    returns it and what was done."""
    started = time.monotonic()
    lake = db.lake
    backbone, weights = choose_embedding_set(db, backbone, weights, objects=objects)
    manifest = load_manifest(lake, backbone, weights, objects)
    backend = get_backend(config.device)
    table = _source(objects)[0]
    if manifest is not None and manifest.embeddings_version == tables.version(lake, table) and not rebuild:
        # No commit since the index was saved: its files are the table's (one listing, no log replay).
        version, files = manifest.embeddings_version, manifest.files
    else:
        version, files = _embedding_files(lake, table)

    reason = _rebuild_reason(manifest, files, rebuild, config)
    index = None
    added = 0
    if reason is None:
        new_files = sorted(set(files) - set(manifest.files))
        index = load_index(lake, manifest, backend)
        if config.nprobe and index.spec.kind != "flat":
            index = index.with_nprobe(config.nprobe)
        action = "up to date"
        if new_files:
            ids, vectors = read_embeddings(lake, backbone, weights, new_files, objects=objects)
            grown_kind = choose_spec(len(index) + len(ids), config).kind
            if len(ids) and vectors.shape[1] != index.dim:
                raise LakeError(
                    f"new embeddings of {backbone}/{weights} are {vectors.shape[1]}-d, the index's "
                    f"{index.dim}-d: one backbone and weights, one width; rewrite them with embed --overwrite"
                )
            if np.isin(ids, index.ids).any():
                reason = "new files re-embed indexed images"
            elif grown_kind != index.spec.kind:
                reason = f"the lake grew to {len(index) + len(ids)} vectors: {index.spec.kind} -> {grown_kind}"
            elif len(ids):  # none: the new files hold other embedding sets only
                manifest.files, manifest.embeddings_version = sorted(files), version
                index, manifest = extend_and_save(lake, index, ids, vectors, manifest)
                added, action = len(ids), "extended"
        if reason is None and manifest.embeddings_version != version:
            manifest.files, manifest.embeddings_version = sorted(files), version
            manifest = save_index(lake, index, manifest)
    if reason is not None:
        ids, vectors = read_embeddings(lake, backbone, weights, files, objects=objects)
        if len(ids) == 0:
            raise SearchError(f"no {'object ' if objects else ''}embeddings for {backbone}/{weights} yet: run "
                              f"edgemine embed{' --objects' if objects else ''} first")
        spec = choose_spec(len(ids), config)
        log.info("indexing %d vectors as %s (%s): %s", len(ids), spec.describe(), kind_rule(len(ids), config), reason)
        now = datetime.now(UTC).isoformat()
        index, manifest = build_and_save(lake, ids, vectors, spec, Manifest(
            backbone, weights, spec, len(ids), sorted(files), built_at=now, embeddings_version=version,
            objects=objects), seed=seed, backend=backend)
        action, added = ("built" if reason == "no index yet" else "rebuilt"), len(ids)
    summary = IndexSummary(backbone=backbone, weights=weights, action=action, reason=reason or "",
                           vectors=len(index), added=added, kind=index.spec.describe(), files=len(files),
                           seconds=time.monotonic() - started, objects=objects)
    return index, summary


def open_index(
    db: LakeDB, config: IndexConfig, *, backbone: str | None = None, weights: str | None = None,
    objects: bool = False,
) -> VectorIndex:
    """The index for searching, synced with the lake first (see the module docstring). It names
    the embedding set it covers (``index.backbone``, ``index.weights``, ``index.objects``); so does the log."""
    index, summary = index_lake(db, config, backbone=backbone, weights=weights, objects=objects)
    if summary.action != "up to date":
        log.info("index %s: %d vectors (%s)", summary.action, summary.vectors, summary.reason or "new embeddings")
    log.info("searching %s/%s: %d vectors of %d floats (%s)", index.backbone, index.weights, len(index), index.dim,
             summary.kind)
    return index


def choose_embedding_set(db: LakeDB, backbone: str | None, weights: str | None, *,
                         objects: bool = False) -> tuple[str, str]:
    """The (backbone, weights) to index: as given, or the lake's only one (``objects``: of the
    object embeddings)."""
    table = _source(objects)[0].name
    sets = db.query(f"SELECT backbone, weights, count(*) AS n FROM {table} GROUP BY ALL ORDER BY n DESC").to_pylist()
    matching = [
        s
        for s in sets
        if (backbone is None or s["backbone"] == backbone) and (weights is None or s["weights"] == weights)
    ]
    if not sets and objects:
        raise SearchError("the lake has no object embeddings yet: run edgemine embed --objects first")
    if not sets:
        raise SearchError("the lake has no embeddings yet: run edgemine embed (or edgemine demo) first")
    if not matching:
        have = ", ".join(f"{s['backbone']}/{s['weights']} ({s['n']})" for s in sets)
        raise SearchError(f"no embeddings for {backbone or '*'}/{weights or '*'}; the lake has: {have}")
    if len(matching) > 1:
        have = ", ".join(f"--weights {s['weights']} ({s['backbone']}, {s['n']} images)" for s in matching)
        raise SearchError(f"the lake holds several embedding sets; choose one: {have}")
    return matching[0]["backbone"], matching[0]["weights"]


def read_embeddings(lake: Lake, backbone: str, weights: str, files: list[str], *,
                    objects: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, float32 (n, width) vectors) of one embedding set in ``files`` (data files
    of the embeddings table, relative to its folder), in image_id order. The embed job
    writes each (image, backbone, weights) once, so there is one row per image; the width
    is the set's (the backbone's). ``objects``: (detection ids, vectors) of object_embeddings."""
    if not files:
        return np.array([], dtype=str), np.zeros((0, 0), np.float32)
    # Here, not at the top: pyarrow.dataset costs half a second of start-up, and a
    # search on an index that is up to date reads no embeddings.
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    started = time.monotonic()
    table_def, id_column = _source(objects)
    folder = lake.table_dir(table_def)
    paths = [f"{folder}/{f}" for f in files]
    # The schema is the first file's, but files written before widths varied hold fixed-size
    # lists of 512, later ones lists of any width: read every file's vectors as plain lists.
    schema = ds.dataset(paths[:1], format="parquet", filesystem=lake.fs).schema
    schema = schema.set(schema.get_field_index("embedding"), pa.field("embedding", pa.list_(pa.float32())))
    dataset = ds.dataset(paths, schema=schema, format="parquet", filesystem=lake.fs)
    table = dataset.to_table(columns=[id_column, "backbone", "weights", "embedding"])
    # delta-rs writes strings as string_view, which pyarrow's filters do not compare yet: plain strings first.
    text = {name: table.column(name).cast(pa.string()) for name in (id_column, "backbone", "weights")}
    wanted = pc.and_(pc.equal(text["backbone"], backbone), pc.equal(text["weights"], weights))
    table = (
        pa.table({"id": text[id_column], "embedding": table.column("embedding")})
        .filter(wanted)
        .sort_by("id")
    )
    ids = table.column("id").to_numpy(zero_copy_only=False).astype(str)
    vectors = embedding_matrix(table.column("embedding"))
    log.info("read %d embeddings from %d file(s) in %.1fs", len(ids), len(files), time.monotonic() - started)
    return ids, vectors


def _embedding_files(lake: Lake, table: Table = EMBEDDINGS) -> tuple[int | None, list[str]]:
    """The embeddings (or object_embeddings) table's latest version and its data files (relative to its folder)."""
    if not tables.exists(lake, table):
        return None, []
    delta = tables.open_table(lake, table)
    return delta.version(), sorted(delta.get_add_actions(flatten=True).column("path").to_pylist())


def _rebuild_reason(manifest: Manifest | None, files: list[str], rebuild: bool, config: IndexConfig) -> str | None:
    if manifest is None:
        return "no index yet"
    if rebuild:
        return "--rebuild"
    wanted = choose_spec(manifest.count, config).kind
    if wanted != manifest.spec.kind:
        return f"index kind {manifest.spec.kind} -> {wanted}"
    gone = set(manifest.files) - set(files)
    if gone:
        return f"{len(gone)} indexed embedding file(s) replaced or removed"
    return None
