"""Narrowing sessions, saved in the lake (`edgemine narrow ...`, the UI's Narrow page).

A session is a tree of steps. ``start`` takes the pool nearest the seeds and
clusters it (step 0); ``pick`` re-clusters inside chosen clusters of the
current step (a child step); ``back`` makes the parent step current again. Each
action is one row of ``narrow_steps`` (who, when, what was picked), and each
clustering step writes its pool to ``narrow_members`` first: the step's row is
the commit that makes it part of the session, so a session is resumed, shared
and audited from the lake alone, and a kill in between leaves nothing visible; two
reviewers acting on one session at once: one takes the step, the other is told to redo.
``save_session`` turns the current step (or some of its clusters) into a named
set (``sets``) that review and export take as input.

Over the object index (``index.objects``: detection boxes, `edgemine embed --objects`) a
session is the same tree of the same steps, over boxes: its seeds are detection ids, its pools
are in ``narrow_object_members`` (each box with its image), and its steps record that they
read ``object_embeddings`` (``table_versions``), which is how a session is known to be one
over objects (``session_objects``); saved as a set, it is the boxes' images, best box first.

The clustering itself is mining.search.clustering; every function here reads through
the caller's LakeDB (the UI's per-session cursor, or the CLI's one connection).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.core import tables
from mining.core.config import Config, MiningConfig
from mining.core.errors import SearchError, SessionError
from mining.core.schema import NARROW_MEMBERS, NARROW_OBJECT_MEMBERS, NARROW_STEPS, make_rows
from mining.core.sets import save_set
from mining.core.sql import LakeDB, quote_literal
from mining.search.backends import Backend
from mining.search.clustering import Clustering, cluster_pool, take_pool
from mining.search.feedback import mean_direction
from mining.search.index import VectorIndex
from mining.search.similar import FileEmbedder, resolve_query

JOB = "narrow"
NEAREST_SHOWN = 8
MIN_CLUSTER = 10  # images per cluster a pick aims for at least, unless told how many clusters


@dataclass
class ClusterReport:
    cluster: int
    size: int
    seed_distance: float  # 1 - mean cosine similarity of its images to the seeds' direction
    mean_confidence: float | None  # over objects: the boxes' mean detection score
    labels: dict[str, int] = field(default_factory=dict)  # latest predicted label -> images (objects: box label)
    nearest: list[str] = field(default_factory=list)  # image ids (detection ids) nearest the centre, closest first


@dataclass
class StepReport:
    session: str
    step: int
    parent: int | None
    path: list[int]  # steps from the start to this one (the breadcrumb)
    seeds: list[str]
    pool_size: int
    clusters: list[ClusterReport]
    objects: bool = False  # a session over detection boxes: seeds, nearest and pool are boxes

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "clusters": [c.__dict__ for c in self.clusters]}


def start(db: LakeDB, index: VectorIndex, backend: Backend, config: MiningConfig, *, seeds: Sequence[str],
          seed_vectors: np.ndarray, negatives: Sequence[str] = (), negative_vectors: np.ndarray | None = None,
          subset: np.ndarray | None = None, pool: int | None = None, clusters: int | None = None,
          session: str | None = None) -> StepReport:
    """Start a session: the ``pool`` images nearest the seeds (float32 (n, d)
    ``seed_vectors``, named by ``seeds``), clustered into ``clusters``; over the object
    index (``index.objects``), the ``pool`` boxes nearest the seed boxes.

    Raises SessionError for a session name in use, SearchError for an empty pool or bad sizes."""
    session = session or new_session_id()
    if _steps(db, session):
        raise SessionError(f"session {session!r} exists already; pick another name, or continue it with narrow pick")
    pool = config.pool if pool is None else pool
    clusters = config.clusters if clusters is None else clusters
    if clusters < 1:
        raise SearchError(f"clusters must be at least 1, got {clusters}")
    positions = take_pool(index, seed_vectors, negative_vectors, pool, subset=subset)
    similarity = index.vectors[positions] @ mean_direction(seed_vectors)
    clustering = cluster_pool(index, positions, similarity, clusters, backend, niter=config.niter, seed=config.seed)
    _write_step(db, index, session, 0, "start", None, 0, [], list(seeds), list(negatives), clustering, config.user)
    return show(db, session)


def start_query(db: LakeDB, index: VectorIndex, backend: Backend, config: Config, seeds: Sequence[str], *,
                negatives: Sequence[str] = (), where: str | None = None, pool: int | None = None,
                clusters: int | None = None, session: str | None = None,
                embed_files: FileEmbedder | None = None) -> StepReport:
    """``start`` from seeds and negatives as the user gives them (image ids, or files
    embedded by ``embed_files``) and a SQL slice: what `edgemine narrow start` and the UI call."""
    query = resolve_query(db, index, seeds, negatives=negatives, where=where, embed_files=embed_files)
    negative = query.negative
    return start(db, index, backend, config.mining, seeds=query.positive.labels, seed_vectors=query.positive.vectors,
                 negatives=negative.labels if negative else [], negative_vectors=negative.vectors if negative else None,
                 subset=query.subset, pool=pool, clusters=clusters, session=session)


def pick(db: LakeDB, index: VectorIndex, backend: Backend, config: MiningConfig, session: str, picked: Sequence[int], *,
         clusters: int | None = None) -> StepReport:
    """Re-cluster inside the ``picked`` clusters of the current step: a new child step.

    Raises SessionError for an unknown session, a cluster the step lacks, or nothing left to split."""
    steps = _steps(db, session)
    current = steps[_head(steps, session)]
    _check_index(index, steps, session)
    members = _members(db, session, current["current"], index.objects)
    chosen = members.filter(pc.is_in(members.column("cluster"), pa.array(list(picked), pa.int32())))
    known = set(members.column("cluster").to_pylist())
    unknown = sorted(set(picked) - known)
    if unknown or not picked:
        raise SessionError(
            f"step {current['current']} has clusters {sorted(known)}; cannot pick {unknown or 'nothing'}"
        )
    positions = index.positions(chosen.column(_id_column(index.objects)).to_numpy(zero_copy_only=False))
    if len(positions) < 2:
        raise SessionError("one image is left: nothing to split further; keep it with narrow save")
    # Similarity to the seeds does not change between steps: carried over, so seeds
    # from outside files (which have no stored vector) need nothing more.
    similarity = chosen.column("similarity").to_numpy()
    # As many clusters as the step had, but no cluster of a handful: one per MIN_CLUSTER images at most.
    k = clusters or min(steps[current["current"]]["clusters"], max(2, len(positions) // MIN_CLUSTER))
    clustering = cluster_pool(index, positions, similarity, k, backend, niter=config.niter, seed=config.seed)
    step = max(steps) + 1
    _write_step(db, index, session, step, "pick", current["current"], step, sorted(picked), steps[0]["seeds"],
                steps[0]["negatives"], clustering, config.user)
    return show(db, session)


def back(db: LakeDB, session: str, user: str) -> StepReport:
    """Make the parent of the current step current again (recorded, like every action).

    Raises SessionError for an unknown session or one at its first step."""
    steps = _steps(db, session)
    current = steps[_head(steps, session)]["current"]
    parent = steps[current]["parent"]
    if parent is None:
        raise SessionError(f"session {session} is at its first step: there is nothing to go back to")
    _write_step(db, None, session, max(steps) + 1, "back", current, parent, [], [], [], None, user,
                objects=_is_objects(steps))
    return show(db, session)


def show(db: LakeDB, session: str, step: int | None = None) -> StepReport:
    """The clusters of ``step`` (default: the current one), with their label and
    confidence mix and the images nearest each centre.

    Raises SessionError for an unknown session or step."""
    steps = _steps(db, session)
    step = steps[_head(steps, session)]["current"] if step is None else step
    if step not in steps or steps[step]["action"] == "back":
        clustering_steps = sorted(s for s in steps if steps[s]["action"] != "back")
        raise SessionError(f"session {session} has no clustering step {step}; steps: {clustering_steps}")
    objects = _is_objects(steps)
    rows = db.query(OBJECT_CLUSTERS_SQL if objects else CLUSTERS_SQL,
                    {"session": session, "step": step, "nearest": NEAREST_SHOWN}).to_pylist()
    clusters = [
        ClusterReport(
            cluster=r["cluster"],
            size=r["size"],
            seed_distance=r["seed_distance"],
            mean_confidence=r["mean_confidence"],
            labels=dict(r["labels"] or {}),
            nearest=r["nearest"],
        )
        for r in rows
    ]
    return StepReport(session=session, step=step, parent=steps[step]["parent"], path=_path(steps, step),
                      seeds=steps[0]["seeds"], pool_size=steps[step]["pool_size"], clusters=clusters, objects=objects)


def list_sessions(db: LakeDB) -> pa.Table:
    """One row per session: who started it and when, steps, current step, seeds; latest first."""
    return db.query(
        "SELECT session, min(created_at) AS started, arg_min(created_by, step) AS started_by, "
        "count(*) FILTER (action != 'back') AS steps, arg_max(current, step) AS current_step, "
        "max(created_at) AS last_action, arg_min(seeds, step) AS seeds "
        "FROM narrow_steps GROUP BY session ORDER BY last_action DESC"
    )


def save_session(db: LakeDB, session: str, name: str, user: str, clusters: Sequence[int] | None = None) -> int:
    """The current step of ``session`` (or only ``clusters`` of it) as the named set
    ``name``, most similar to the seeds first; returns the set's size. Over objects, the
    boxes' images, each once at its best box's similarity."""
    steps = _steps(db, session)
    step = steps[_head(steps, session)]["current"]
    members = _members(db, session, step, _is_objects(steps))
    if clusters:
        members = members.filter(pc.is_in(members.column("cluster"), pa.array(list(clusters), pa.int32())))
    members = members.sort_by([("similarity", "descending"), ("image_id", "ascending")])
    best: dict[str, float] = {}
    for image, similarity in zip(members.column("image_id").to_pylist(), members.column("similarity").to_pylist()):
        best.setdefault(image, similarity)  # an image once, at its best box (images: each is there once)
    return save_set(db, name, list(best), source=f"narrow:{session}/{step}", user=user, scores=list(best.values()))


def session_embedding_set(db: LakeDB, session: str) -> tuple[str, str]:
    """(backbone, weights) of the index a session was started on."""
    steps = _steps(db, session)
    first = steps[min(steps)] if steps else None
    if first is None:
        raise SessionError(f"no session {session!r}; see the sessions with: edgemine narrow list")
    return first["backbone"], first["weights"]


def session_objects(db: LakeDB, session: str) -> bool:
    """Whether ``session`` narrows detection boxes (started on the object index), not images."""
    steps = _steps(db, session)
    _head(steps, session)
    return _is_objects(steps)


def members_of(db: LakeDB, session: str, step: int) -> pa.Table:
    """The pool of a clustering step: image_id, cluster, similarity to the seeds; over objects,
    detection_id first (one row per box: an image with two boxes in the pool is there twice)."""
    return _members(db, session, step, session_objects(db, session))


def new_session_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"


# A step's members: those written with its row (stamped with its time; see _write_step).
MEMBERS_SQL = """
SELECT m.* FROM narrow_members m JOIN narrow_steps s USING (session, step, created_at)
WHERE m.session = $session AND m.step = $step
"""

OBJECT_MEMBERS_SQL = MEMBERS_SQL.replace("narrow_members", "narrow_object_members")

CLUSTERS_SQL = f"""
WITH m AS ({MEMBERS_SQL}),
latest AS (
    SELECT image_id, arg_max(label, ts) AS label, arg_max(confidence, ts) AS confidence
    FROM predictions WHERE image_id IN (SELECT image_id FROM m)
    GROUP BY image_id
)
SELECT cluster, count(*)::INTEGER AS size, 1 - avg(similarity) AS seed_distance,
       avg(latest.confidence) AS mean_confidence, histogram(latest.label) AS labels,
       list(image_id ORDER BY centre_distance)[1:$nearest] AS nearest
FROM m LEFT JOIN latest USING (image_id)
GROUP BY cluster ORDER BY cluster
"""

# Over objects: each box's own label and score (its detection), the boxes nearest the centre.
OBJECT_CLUSTERS_SQL = f"""
WITH m AS ({OBJECT_MEMBERS_SQL})
SELECT cluster, count(*)::INTEGER AS size, 1 - avg(m.similarity) AS seed_distance,
       avg(d.score) AS mean_confidence, histogram(d.label) AS labels,
       list(m.detection_id ORDER BY m.centre_distance, m.detection_id)[1:$nearest] AS nearest
FROM m LEFT JOIN detections d ON d.detection_id = m.detection_id
GROUP BY cluster ORDER BY cluster
"""


def _write_step(db: LakeDB, index: VectorIndex | None, session: str, step: int, action: str, parent: int | None,
                current: int, picked: list[int], seeds: list[str], negatives: list[str],
                clustering: Clustering | None, user: str, *, objects: bool = False) -> None:
    """Record one action: the step's members first (stamped with the step's time), then the step's
    row, the commit that makes them part of the session. Two reviewers acting on a session at once
    both write members for the same step number; one row wins it, and readers take the members
    stamped as the winning row is (``_members``); the loser's are removed and the loser told."""
    now = datetime.now(UTC)
    objects = index.objects if index is not None else objects
    members_table = NARROW_OBJECT_MEMBERS if objects else NARROW_MEMBERS
    info = tables.commit_info(JOB, user, session=session, step=step, action=action)
    this_step = f"session = {quote_literal(session)} AND step = {step}"
    stamp = quote_literal(now.isoformat())
    if clustering is not None and index is not None:
        n = len(clustering.positions)
        ids = index.ids[clustering.positions]
        columns = {"detection_id": ids, "image_id": _box_images(db, index, ids)} if objects else {"image_id": ids}
        members = make_rows(members_table, n, session=session, step=step, **columns, cluster=clustering.cluster,
                            similarity=clustering.similarity, centre_distance=clustering.centre_distance,
                            created_at=now)
        tables.append(db.lake, members_table, members, info)
    row = make_rows(NARROW_STEPS, 1, session=session, step=step, action=action, parent=parent, current=current,
                    picked=[picked], seeds=[seeds], negatives=[negatives],
                    pool_size=len(clustering.positions) if clustering else None,
                    clusters=clustering.k if clustering else None,
                    backbone=index.backbone if index else None, weights=index.weights if index else None,
                    table_versions=[list(_versions_read(db, objects).items())], created_by=user, created_at=now)
    won = tables.insert_new(db.lake, NARROW_STEPS, row, info)
    if clustering is not None:
        # The winner removes what lost or killed attempts at this step left; a loser its own members.
        tables.delete(db.lake, members_table, f"{this_step} AND created_at {'<>' if won else '='} {stamp}", info)
    if not won:
        raise SessionError(f"session {session}: another action was recorded as step {step} at the same time; "
                           "show the session again and redo yours")


def _versions_read(db: LakeDB, objects: bool = False) -> dict[str, int]:
    """The versions of the tables a step reads (`edgemine sql --as-of` shows the lake as the step saw it):
    over objects, ``object_embeddings`` (the mark of a session over objects: ``_is_objects``) and detections."""
    read = ("object_embeddings", "detections", "images") if objects else ("embeddings", "predictions", "images")
    versions = {name: tables.version(db.lake, name) for name in read}
    return {name: v for name, v in versions.items() if v is not None}


def _is_objects(steps: dict[int, dict[str, Any]]) -> bool:
    """Whether a session's first step read the object embeddings (a session over detection boxes)."""
    if not steps:
        return False
    versions = steps[min(steps)]["table_versions"] or {}
    names = versions.keys() if isinstance(versions, dict) else [name for name, _ in versions]
    return "object_embeddings" in names


def _check_index(index: VectorIndex, steps: dict[int, dict[str, Any]], session: str) -> None:
    if index.objects != _is_objects(steps):
        kind = "detection boxes" if _is_objects(steps) else "images"
        raise SessionError(f"session {session} narrows {kind}: continue it on the "
                           f"{'object' if _is_objects(steps) else 'image'} index (mining.pick_clusters opens it)")


def _box_images(db: LakeDB, index: VectorIndex, detection_ids: np.ndarray) -> list[str]:
    """The image of each box (str (n,) detection ids of the object index), in their order."""
    found = db.query(
        "SELECT detection_id, image_id FROM object_embeddings WHERE backbone = $backbone AND weights = $weights "
        "AND detection_id IN (SELECT unnest($ids))",
        {"backbone": index.backbone, "weights": index.weights, "ids": [str(i) for i in detection_ids]},
    )
    images = dict(zip(found.column("detection_id").to_pylist(), found.column("image_id").to_pylist()))
    return [images[str(i)] for i in detection_ids]


def _id_column(objects: bool) -> str:
    return "detection_id" if objects else "image_id"


def _steps(db: LakeDB, session: str) -> dict[int, dict[str, Any]]:
    rows = db.query("SELECT * EXCLUDE (created_at) FROM narrow_steps WHERE session = $session ORDER BY step",
                    {"session": session}).to_pylist()
    return {r["step"]: r for r in rows}


def _head(steps: dict[int, dict[str, Any]], session: str) -> int:
    if not steps:
        raise SessionError(f"no session {session!r}; see the sessions with: edgemine narrow list")
    return max(steps)


def _members(db: LakeDB, session: str, step: int, objects: bool = False) -> pa.Table:
    if objects:
        return db.query(f"SELECT detection_id, image_id, cluster, similarity FROM ({OBJECT_MEMBERS_SQL})",
                        {"session": session, "step": step})
    return db.query(f"SELECT image_id, cluster, similarity FROM ({MEMBERS_SQL})", {"session": session, "step": step})


def _path(steps: dict[int, dict[str, Any]], step: int) -> list[int]:
    """The steps from the start to ``step``, following parents (at most one per step:
    a parent points back in time, so a longer walk would be a corrupt session)."""
    path = [step]
    for _ in range(len(steps)):
        parent = steps[path[-1]]["parent"]
        if parent is None:
            return path[::-1]
        path.append(parent)
    raise SessionError(f"the steps of this session do not lead back to a start: {path}")
