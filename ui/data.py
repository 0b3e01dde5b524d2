"""The UI's access to the library: configuration, lake, index and the cached reads.

Everything the pages show comes through here, so caching lives in one place:
``st.cache_resource`` for what is expensive to build and shared by every
session (vector index, backend), ``st.cache_data`` for reads
whose answer only changes when the lake does (thumbnails never change for an
image id; lake statistics are kept a minute). Each browser session holds its own
cursor on the process's shared DuckDB database of the lake (``mining.core.sql``; a
cursor is not shared between threads), which follows that database when it is rebuilt.
"""

from __future__ import annotations

import dataclasses

import streamlit as st

import embed.files
from mining.core import media, statistics
from mining.core.config import Config, load_config
from mining.core.errors import EdgemineError
from mining.core.lake import Lake
from mining.core.sql import Head, LakeDB
from mining.search import index_sync, sessions
from mining.search import similar as search
from mining.search.backends import Backend, get_backend
from mining.search.clustering import project_2d
from mining.search.index import VectorIndex
from mining.search.similar import FileEmbedder


def config() -> Config:
    """From $EDGEMINE_CONFIG / $EDGEMINE_LAKE (what `edgemine ui` sets); cheap, so read
    per run rather than cached: a changed environment (tests) is seen at once."""
    return load_config()


def config_for(user: str) -> Config:
    """The configuration with ``user`` recorded as who acts (the sidebar's reviewer)."""
    return dataclasses.replace(config(), mining=dataclasses.replace(config().mining, user=user))


def lake() -> Lake:
    return Lake.from_config(config())


def db() -> LakeDB:
    """This session's read-only connection to the lake's views."""
    held = st.session_state.get("_lakedb")
    if held is None or held.lake.uri != lake().uri:
        if held is not None:
            held.close()  # only its cursor: the shared database stays for the others
        held = st.session_state["_lakedb"] = LakeDB(lake(), config=config())
    return held


def user_query(sql: str) -> Head:
    """A user's own query (the SQL page) on this session's read-only connection, not cached:
    its first ``[query] max_rows`` rows (never the whole of a huge result: the server is shared),
    stopped at ``[query] timeout_s``; QueryError (ReadOnlyError for a write) when DuckDB, the
    sandbox or a limit refuses it."""
    return db().head(sql)


def lake_changed() -> None:
    """Call after writing to the lake: the statistics are read afresh (the views
    follow by themselves, see ``db``)."""
    overview.clear()


def index(lake_uri: str, backbone: str | None = None, weights: str | None = None) -> VectorIndex:
    """The index of one embedding set (the lake's only one when not given), loaded once
    per process and brought up to date with its embeddings when first loaded."""
    if backbone is None or weights is None:
        # Resolved before the cache key: "the default set" and the same set named
        # explicitly (a session's) must share one index, not load it twice.
        backbone, weights = embedding_set(lake_uri, backbone, weights)
    return _index(lake_uri, backbone, weights)


@st.cache_data(ttl=60, show_spinner=False)
def embedding_set(lake_uri: str, backbone: str | None, weights: str | None) -> tuple[str, str]:
    """(backbone, weights) as given or the lake's only set; SearchError (not cached) when none fits."""
    return index_sync.choose_embedding_set(db(), backbone, weights)


@st.cache_resource(show_spinner="Loading the vector index…")
def _index(lake_uri: str, backbone: str, weights: str) -> VectorIndex:
    return index_sync.open_index(db(), config().index, backbone=backbone, weights=weights)


def reload_index() -> None:
    """Forget the loaded indexes and searches: the next use syncs with new embeddings."""
    _index.clear()
    embedding_set.clear()
    similar.clear()
    object_index.clear()
    similar_objects.clear()
    lake().mark_changed()  # and the views rebuilt, whatever other processes did to the lake
    lake_changed()


@st.cache_resource
def backend(device: str) -> Backend:
    return get_backend(device)


@st.cache_resource
def file_embedder() -> FileEmbedder:
    """Embeds uploaded seed images with the index's model: loaded on the first upload, then kept."""
    return embed.files.file_embedder(config())


@st.cache_data(max_entries=512, show_spinner=False)
def thumbnails(lake_uri: str, image_ids: tuple[str, ...]) -> dict[str, bytes]:
    """JPEG thumbnails by image id (content-addressed ids: safe to keep)."""
    return media.thumbnails(db(), list(image_ids))


@st.cache_data(ttl=60, show_spinner=False)
def overview(lake_uri: str) -> dict:
    """Everything the Lake page charts, in one cached read."""
    o = statistics
    con = db()
    columns = ["label", "model_version", *o.metadata_columns(con)]
    return {
        "headline": o.headline(con),
        "tables": o.table_rows(con),
        "per_day": o.predictions_per_day(con),
        "histogram": o.confidence_histogram(con),
        "breakdowns": {c: o.breakdown(con, c) for c in columns},
        "errors": o.errors_by_reason(con),
    }


@st.cache_data(ttl=60, max_entries=512, show_spinner=False)
def facts(lake_uri: str, image_ids: tuple[str, ...]) -> dict[str, dict]:
    """Latest label and confidence, and the configured caption columns, per image id."""
    return {r["image_id"]: r for r in media.image_facts(db(), list(image_ids), config().ui.caption_columns).to_pylist()}


@st.cache_data(max_entries=64, show_spinner="Searching…")
def similar(lake_uri: str, positives: tuple[str, ...], negatives: tuple[str, ...], k: int,
            where: str | None) -> list[tuple[str, float]]:
    """(image id, score) of the ``k`` images most like ``positives`` and unlike ``negatives``."""
    hits = search.find_similar(db(), index(lake_uri), config(), list(positives), negatives=list(negatives), k=k,
                               where=where, embed_files=file_embedder())
    return [(h.image_id, h.score) for h in hits]


@st.cache_data(max_entries=64, show_spinner=False)
def pool_map(lake_uri: str, session: str, step: int) -> dict[str, list]:
    """A clustering step's pool on its two principal axes (a step never changes once written)."""
    members = sessions.members_of(db(), session, step)
    ids = members.column("image_id").to_numpy(zero_copy_only=False)
    vectors_index = index(lake_uri, *sessions.session_embedding_set(db(), session))
    xy = project_2d(vectors_index.vectors[vectors_index.positions(ids)])
    return {"image_id": ids.tolist(), "cluster": [str(c) for c in members.column("cluster").to_pylist()],
            "x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(), "similarity": members.column("similarity").to_pylist()}


@st.cache_data(max_entries=64, show_spinner=False)
def mosaics(lake_uri: str, groups: tuple[tuple[str, ...], ...]) -> list[bytes]:
    """JPEG mosaics of each group of image ids (the cluster cards), from one thumbnail read."""
    thumbs = thumbnails(lake_uri, tuple(i for group in groups for i in group))
    return [media.to_jpeg(media.mosaic([thumbs[i] for i in group if i in thumbs])) for group in groups]


# -- objects (detection boxes: `edgemine embed --objects`) ------------------------------------------

@st.cache_data(ttl=60, max_entries=256, show_spinner=False)
def names_detections(lake_uri: str, seeds: tuple[str, ...]) -> bool:
    """Whether the seeds are detection ids (so the search runs over the object index)."""
    return search.names_detections(db(), list(seeds))


@st.cache_resource(show_spinner="Loading the object index…")
def object_index(lake_uri: str) -> VectorIndex:
    """The object index (one vector per detection box), synced when first loaded; SearchError
    (not cached) when the lake has no object embeddings (run edgemine embed --objects)."""
    return index_sync.open_index(db(), config().index, objects=True)


@st.cache_data(max_entries=64, show_spinner="Searching the boxes…")
def similar_objects(lake_uri: str, positives: tuple[str, ...], negatives: tuple[str, ...], k: int,
                    where: str | None) -> list[dict]:
    """The ``k`` boxes most like the seed boxes: detection_id, image_id, box, score, best first."""
    hits = search.find_similar(db(), object_index(lake_uri), config(), list(positives), negatives=list(negatives),
                               k=k, where=where)
    return [dataclasses.asdict(h) for h in hits]


@st.cache_data(max_entries=512, show_spinner=False)
def crops(lake_uri: str, boxes: tuple[tuple[str, tuple[float, ...]], ...]) -> list[bytes | None]:
    """PNG crops of (image id, box) pairs, from the originals (None where one cannot be read)."""
    out = []
    for image_id, box in boxes:
        try:
            original = media.read_image(media.image_details(db(), image_id).uri, config().s3)
            out.append(media.crop_box(original, box))
        except (OSError, ValueError, EdgemineError):
            out.append(None)
    return out
