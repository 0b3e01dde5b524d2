"""Narrowing sessions and named sets, saved in the lake (`edgemine narrow ...`).

A session is a tree of steps. ``start`` takes the pool nearest the seeds and
clusters it (step 0); ``pick`` re-clusters inside chosen clusters of the
current step (a child step); ``back`` makes the parent step current again. Each
action is one row of ``narrow_steps`` (who, when, what was picked), and each
clustering step writes its pool to ``narrow_members``; both are published
together, one ShardWriter commit per action, so a session is resumed, shared and
audited from the lake alone. ``save`` turns the current step (or some of its
clusters) into a named set (``sets``) that review and export take as input.

The UI calls these same functions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from jobs.sets import save_set
from jobs.similar import resolve_query
from mining.backends import Backend
from mining.config import Config, MiningConfig
from mining.feedback import mean_direction
from mining.index import SearchError, VectorIndex
from mining.lake import Lake
from mining.narrow import Clustering, cluster_pool, take_pool
from mining.schema import NARROW_MEMBERS, NARROW_STEPS, UTC_TS
from mining.sql import LakeDB, view_where

JOB = "narrow"
NEAREST_SHOWN = 8
MIN_CLUSTER = 10  # images per cluster a pick aims for at least, unless told how many clusters


@dataclass
class ClusterReport:
    cluster: int
    size: int
    seed_distance: float  # 1 - mean cosine similarity of its images to the seeds' direction
    mean_confidence: float | None
    labels: dict[str, int] = field(default_factory=dict)  # latest predicted label -> images
    nearest: list[str] = field(default_factory=list)  # image ids nearest the centre, closest first


@dataclass
class StepReport:
    session: str
    step: int
    parent: int | None
    path: list[int]  # steps from the start to this one (the breadcrumb)
    seeds: list[str]
    pool_size: int
    clusters: list[ClusterReport]

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "clusters": [c.__dict__ for c in self.clusters]}


class SessionError(SearchError):
    """An unknown session or step, or an action the session's state does not allow."""


def start(lake: Lake, index: VectorIndex, backend: Backend, config: MiningConfig, *, seeds: list[str],
          seed_vectors: np.ndarray, negatives: list[str] = (), negative_vectors: np.ndarray | None = None,
          subset: np.ndarray | None = None, pool: int | None = None, clusters: int | None = None,
          session: str | None = None) -> StepReport:
    """Start a session: the ``pool`` images nearest the seeds, clustered into ``clusters``."""
    session = session or new_session_id()
    with LakeDB(lake) as db:
        exists = bool(_steps(db, session))
    if exists:
        raise SessionError(f"session {session!r} exists already; pick another name, or continue it with narrow pick")
    pool = config.pool if pool is None else pool
    clusters = config.clusters if clusters is None else clusters
    if clusters < 1:
        raise SearchError(f"clusters must be at least 1, got {clusters}")
    positions = take_pool(index, seed_vectors, negative_vectors, pool, subset=subset)
    similarity = index.vectors[positions] @ mean_direction(seed_vectors)
    clustering = cluster_pool(index, positions, similarity, clusters, backend, niter=config.niter, seed=config.seed)
    _write_step(lake, index, session, 0, "start", None, 0, [], seeds, list(negatives), clustering, config.user)
    return show(lake, session)


def start_query(lake: Lake, index: VectorIndex, backend: Backend, config: Config, seeds: list[str], *,
                negatives: list[str] = (), where: str | None = None, pool: int | None = None,
                clusters: int | None = None, session: str | None = None) -> StepReport:
    """``start`` from seeds and negatives as the user gives them (image ids or files)
    and a SQL slice: what `edgemine narrow start` and the UI call."""
    query = resolve_query(lake, index, config, seeds, negatives=negatives, where=where)
    negative = query.negative
    return start(lake, index, backend, config.mining, seeds=query.positive.labels, seed_vectors=query.positive.vectors,
                 negatives=negative.labels if negative else [], negative_vectors=negative.vectors if negative else None,
                 subset=query.subset, pool=pool, clusters=clusters, session=session)


def pick(lake: Lake, index: VectorIndex, backend: Backend, config: MiningConfig, session: str, picked: list[int], *,
         clusters: int | None = None) -> StepReport:
    """Re-cluster inside ``picked`` clusters of the current step: a new child step."""
    with LakeDB(lake) as db:
        steps = _steps(db, session)
        current = steps[_head(steps, session)]
        members = _members(db, session, current["current"])
    chosen = members.filter(pa.compute.is_in(members.column("cluster"), pa.array(picked, pa.int32())))
    known = set(members.column("cluster").to_pylist())
    unknown = sorted(set(picked) - known)
    if unknown or not picked:
        raise SessionError(f"step {current['current']} has clusters {sorted(known)}; cannot pick {unknown or 'nothing'}")
    positions = index.positions(chosen.column("image_id").to_numpy(zero_copy_only=False))
    if len(positions) < 2:
        raise SessionError("one image is left: nothing to split further; keep it with narrow save")
    # Similarity to the seeds does not change between steps: carried over, so seeds
    # from outside files (which have no stored vector) need nothing more.
    similarity = chosen.column("similarity").to_numpy()
    # As many clusters as the step had, but no cluster of a handful: one per MIN_CLUSTER images at most.
    k = clusters or min(steps[current["current"]]["clusters"], max(2, len(positions) // MIN_CLUSTER))
    clustering = cluster_pool(index, positions, similarity, k, backend, niter=config.niter, seed=config.seed)
    step = max(steps) + 1
    _write_step(lake, index, session, step, "pick", current["current"], step, sorted(picked), steps[0]["seeds"],
                steps[0]["negatives"], clustering, config.user)
    return show(lake, session)


def back(lake: Lake, session: str, user: str) -> StepReport:
    """Make the parent of the current step current again (recorded, like every action)."""
    with LakeDB(lake) as db:
        steps = _steps(db, session)
    current = steps[_head(steps, session)]["current"]
    parent = steps[current]["parent"]
    if parent is None:
        raise SessionError(f"session {session} is at its first step: there is nothing to go back to")
    _write_step(lake, None, session, max(steps) + 1, "back", current, parent, [], [], [], None, user)
    return show(lake, session)


def show(lake: Lake, session: str, step: int | None = None) -> StepReport:
    """The clusters of ``step`` (default: the current one), with their label and
    confidence mix and the images nearest each centre."""
    with LakeDB(lake) as db:
        steps = _steps(db, session)
        step = steps[_head(steps, session)]["current"] if step is None else step
        if step not in steps or steps[step]["action"] == "back":
            raise SessionError(f"session {session} has no clustering step {step}; steps: {sorted(s for s in steps if steps[s]['action'] != 'back')}")
        rows = db.query(CLUSTERS_SQL, {"session": session, "step": step, "nearest": NEAREST_SHOWN}).to_pylist()
    clusters = [ClusterReport(cluster=r["cluster"], size=r["size"], seed_distance=r["seed_distance"],
                              mean_confidence=r["mean_confidence"], labels=dict(r["labels"] or {}), nearest=r["nearest"])
                for r in rows]
    return StepReport(session=session, step=step, parent=steps[step]["parent"], path=_path(steps, step),
                      seeds=steps[0]["seeds"], pool_size=steps[step]["pool_size"], clusters=clusters)


def list_sessions(lake: Lake) -> pa.Table:
    with LakeDB(lake) as db:
        return db.query(
            "SELECT session, min(created_at) AS started, arg_min(created_by, step) AS started_by, "
            "count(*) FILTER (action != 'back') AS steps, arg_max(current, step) AS current_step, "
            "max(created_at) AS last_action, arg_min(seeds, step) AS seeds "
            "FROM narrow_steps GROUP BY session ORDER BY last_action DESC"
        )


def save_session(lake: Lake, session: str, name: str, user: str, clusters: list[int] | None = None) -> int:
    """The current step of ``session`` (or only ``clusters`` of it) as the named set ``name``."""
    with LakeDB(lake) as db:
        steps = _steps(db, session)
        step = steps[_head(steps, session)]["current"]
        members = _members(db, session, step)
    if clusters:
        members = members.filter(pa.compute.is_in(members.column("cluster"), pa.array(clusters, pa.int32())))
    members = members.sort_by([("similarity", "descending")])
    return save_set(lake, name, members.column("image_id").to_pylist(), source=f"narrow:{session}/{step}", user=user,
                    scores=members.column("similarity").to_pylist())


def session_embedding_set(lake: Lake, session: str) -> tuple[str, str]:
    """(backbone, weights) of the index a session was started on."""
    with LakeDB(lake) as db:
        steps = _steps(db, session)
    first = steps[min(steps)] if steps else None
    if first is None:
        raise SessionError(f"no session {session!r}; see the sessions with: edgemine narrow list")
    return first["backbone"], first["weights"]


def new_session_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"


MEMBERS_OF_STEP = "session = $session AND step = $step"
CLUSTERS_SQL = f"""
WITH m AS ({view_where("narrow_members", MEMBERS_OF_STEP)}),
latest AS (
    SELECT image_id, arg_max(label, ts) AS label, arg_max(confidence, ts) AS confidence
    FROM ({view_where("predictions", "image_id IN (SELECT image_id FROM m)")})
    GROUP BY image_id
)
SELECT cluster, count(*)::INTEGER AS size, 1 - avg(similarity) AS seed_distance,
       avg(latest.confidence) AS mean_confidence, histogram(latest.label) AS labels,
       list(image_id ORDER BY centre_distance)[1:$nearest] AS nearest
FROM m LEFT JOIN latest USING (image_id)
GROUP BY cluster ORDER BY cluster
"""


def _write_step(lake: Lake, index: VectorIndex | None, session: str, step: int, action: str, parent: int | None,
                current: int, picked: list[int], seeds: list[str], negatives: list[str],
                clustering: Clustering | None, user: str) -> None:
    now = datetime.now(UTC)
    row = {
        "session": session, "step": step, "action": action, "parent": parent, "current": current,
        "picked": picked, "seeds": seeds, "negatives": negatives,
        "pool_size": len(clustering.positions) if clustering else None,
        "clusters": clustering.k if clustering else None,
        "backbone": index.backbone if index else None, "weights": index.weights if index else None, "created_by": user, "created_at": now,
    }
    writer = lake.shard_writer(JOB, f"{session}-{step:05d}")
    writer.write(NARROW_STEPS, pa.Table.from_pylist([row], schema=NARROW_STEPS.schema))
    if clustering is not None and index is not None:
        n = len(clustering.positions)
        writer.write(NARROW_MEMBERS, pa.table({
            "session": pa.array([session] * n, pa.string()),
            "step": pa.array([step] * n, pa.int32()),
            "image_id": pa.array(index.ids[clustering.positions], pa.string()),
            "cluster": pa.array(clustering.cluster, pa.int32()),
            "similarity": pa.array(clustering.similarity, pa.float32()),
            "centre_distance": pa.array(clustering.centre_distance, pa.float32()),
            "created_at": pa.array([now] * n, UTC_TS),
        }, schema=NARROW_MEMBERS.schema))
    writer.commit({"session": session, "step": step, "action": action})


def _steps(db: LakeDB, session: str) -> dict[int, dict[str, Any]]:
    # view_where: filtered by session (part of the dedup key) before deduplication, so a
    # lake with many sessions costs no more per action.
    rows = db.query(f"SELECT * EXCLUDE (created_at) FROM ({view_where('narrow_steps', 'session = $session')}) ORDER BY step",
                    {"session": session}).to_pylist()
    return {r["step"]: r for r in rows}


def _head(steps: dict[int, dict[str, Any]], session: str) -> int:
    if not steps:
        raise SessionError(f"no session {session!r}; see the sessions with: edgemine narrow list")
    return max(steps)


def members_of(lake: Lake, session: str, step: int) -> pa.Table:
    """The pool of a clustering step: image_id, cluster, similarity to the seeds."""
    with LakeDB(lake) as db:
        return _members(db, session, step)


def _members(db: LakeDB, session: str, step: int) -> pa.Table:
    return db.query(f"SELECT image_id, cluster, similarity FROM ({view_where('narrow_members', MEMBERS_OF_STEP)})",
                    {"session": session, "step": step})


def _path(steps: dict[int, dict[str, Any]], step: int) -> list[int]:
    path = [step]
    while steps[path[-1]]["parent"] is not None:
        path.append(steps[path[-1]]["parent"])
    return path[::-1]

