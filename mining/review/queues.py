"""Review queues: named, ranked lists of images to review, each made by a sampler
(mining.review.samplers) and written to the ``queues`` table (`edgemine queue`, the UI's
Queues page, which opens one in Review).

``make_queue`` runs one sampler over a slice, leaves out what was reviewed or
exported (unless asked), optionally drops near-duplicates and keeps a diverse subset
(k-center greedy over a pool ten times the limit, so a queue of 100 is not 100
near-copies), and writes the result as a new version of the queue: a name made again
keeps its earlier versions, and ``queue_rows`` reads the latest.

The samplers are plug-ins: ``mining.review.samplers.SAMPLERS`` (name -> spec) describes each
and its options once, and ``make_queue`` checks the options and runs the spec; this
module knows no sampler by name.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from mining.core import tables
from mining.core.config import Config
from mining.core.errors import QueueError
from mining.core.schema import QUEUES, make_rows
from mining.core.sql import LakeDB
from mining.core.summary import Summary
from mining.review.samplers import SAMPLERS as SAMPLERS  # the registry, re-exported for callers of this module
from mining.review.samplers import Request, Sampler, Slice, sampler_for
from mining.search.coreset import k_center_greedy

if TYPE_CHECKING:
    from mining.search.index import VectorIndex

log = logging.getLogger(__name__)

JOB = "queue"
# The options of every sampler (make_queue's own), beside each sampler's.
COMMON = ("where", "model_version", "limit", "diverse", "include_reviewed", "drop_duplicates")


@dataclass
class QueueSummary(Summary):
    job: str = JOB
    queue: str = ""
    version: int = 0
    sampler: str = ""
    images: int = 0
    candidates: int = 0  # rows of the slice the sampler chose from (predictions, reports, or images)
    excluded: int = 0  # of those, left out as already reviewed or exported
    duplicates_dropped: int = 0
    diverse_from: int = 0  # --diverse: the sampler's pool the diverse subset came from
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)


def check_options(sampler: str, options: Mapping[str, Any]) -> Sampler:
    """The Sampler named ``sampler``, having checked ``options`` are its own.

    Raises QueueError listing the samplers, or the sampler's options."""
    spec = sampler_for(sampler)
    allowed = {o.name: o for o in spec.options}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        flags = ", ".join(o.flag for o in spec.options) or "none"
        raise QueueError(
            f"{sampler} has no option {', '.join('--' + u.replace('_', '-') for u in unknown)}; "
            f"its options: {flags} (and for every sampler: {', '.join('--' + c.replace('_', '-') for c in COMMON)})"
        )
    for name, value in options.items():
        option = allowed[name]
        if value is not None and option.choices and value not in option.choices:
            raise QueueError(f"{option.flag} {value!r}: allowed: {', '.join(option.choices)}")
    return spec


def resolved_options(spec: Sampler, options: Mapping[str, Any], config: Config) -> dict[str, Any]:
    """Every option of the sampler with a value: as given, else the config's, else its default."""
    values = {}
    for option in spec.options:
        value = options.get(option.name)
        if value is None and option.config_key:
            value = getattr(config.queues, option.config_key)
        if value is None and option.name == "seed":
            value = config.mining.seed
        values[option.name] = option.default if value is None else value
    return values


def make_queue(
    db: LakeDB,
    sampler: str,
    name: str,
    *,
    where: str | None = None,
    model_version: str | None = None,
    limit: int | None = None,
    diverse: bool = False,
    include_reviewed: bool = False,
    drop_duplicates: bool = False,
    options: Mapping[str, Any] | None = None,
    user: str = "",
    config: Config | None = None,
    index: VectorIndex | Callable[[], VectorIndex] | None = None,
) -> QueueSummary:
    """Run ``sampler`` over the slice and write its picks as a new version of queue ``name``.

    Args:
        sampler: a key of SAMPLERS.
        name: the queue's name; made again, it gets a new version and the old ones stay.
        where, model_version: the slice (``where``: SQL over ``images i JOIN predictions p``).
        limit: the queue's size (ranked samplers: default ``[queues] limit``; random-time and
            every-nth: all their picks unless given).
        diverse: keep a diverse ``limit`` of the sampler's best ``[queues] diverse_pool`` x limit
            (k-center greedy on the embeddings, starting from the best), in the sampler's order.
        include_reviewed: keep images already reviewed or exported.
        drop_duplicates: keep only the first image of each near-duplicate group (`edgemine duplicates`).
        options: the sampler's own options (SAMPLERS[sampler].options), by name.
        index: the vector index, or a function that opens it (only samplers that need it call it).

    Returns:
        QueueSummary: the queue, its version and size, what was left out and why.

    Raises:
        QueueError: an unknown sampler or option, no name, an empty slice, nothing left to queue,
            missing scores, labels, feedback or embeddings (the message says what to run).
        QueryError: ``where`` is not valid SQL.
    """
    started = time.monotonic()
    options = {k: v for k, v in (options or {}).items() if v is not None}
    spec = check_options(sampler, options)
    if not name or not name.strip():
        raise QueueError("a queue needs a name (--name)")
    if config is None:
        from mining.core.config import load_config

        config = db.config or load_config(lake=db.lake.uri)
    values = resolved_options(spec, options, config)
    if limit is not None and limit < 1:
        raise QueueError(f"--limit must be at least 1, got {limit}")
    size = limit if limit is not None else (config.queues.limit if spec.ranked else None)
    if diverse and size is None:
        size = config.queues.limit
    want = size * config.queues.diverse_pool if diverse else size
    opened: list[VectorIndex] = []

    def get_index() -> VectorIndex:
        if not opened:
            if index is not None:
                opened.append(index() if callable(index) else index)
            else:
                from mining.search.index_sync import open_index

                opened.append(open_index(db, config.index))
        return opened[0]

    where_slice = Slice(where=where or None, model_version=model_version or None, include_reviewed=include_reviewed)
    ask = want
    while True:
        picked = spec.run(db, where_slice, Request(values, ask, get_index, config, partial(queue_image_ids, db)))
        table, dropped = _drop_duplicates(db, picked.table) if drop_duplicates else (picked.table, 0)
        # Duplicates dropped from a full answer: ask for more, so the queue still has its size.
        if not dropped or want is None or table.num_rows >= want or picked.table.num_rows < ask:
            break
        ask *= 4
    summary = QueueSummary(queue=name, sampler=sampler, candidates=picked.candidates, excluded=picked.excluded,
                           notes=list(picked.notes), duplicates_dropped=dropped)
    if diverse and table.num_rows > size:
        summary.diverse_from = table.num_rows
        table = _diverse(table, size, get_index(), config, summary.notes)
    elif size is not None:
        table = table.slice(0, size)
    if table.num_rows == 0:
        raise QueueError(f"{sampler} found nothing to queue in {where_slice.describe()} "
                         f"({picked.candidates:,} candidates, {picked.excluded:,} already reviewed or exported)")
    params = {"sampler": sampler, "where": where, "model_version": model_version, "limit": limit, "diverse": diverse,
              "include_reviewed": include_reviewed, "drop_duplicates": drop_duplicates, **values}
    summary.params = {k: v for k, v in params.items() if v is not None}
    summary.version = write_queue(db, name, table, sampler=sampler, params=summary.params, user=user)
    summary.images = table.num_rows
    summary.seconds = time.monotonic() - started
    return summary


def _device(config: Config) -> str:
    from mining.core.devices import resolve_device

    return resolve_device(config.index.device)


def _drop_duplicates(db: LakeDB, table: pa.Table) -> tuple[pa.Table, int]:
    """Keep the first (best-ranked) image of each near-duplicate group; the table's order stays."""
    from mining.search.duplicates import first_of_each_group

    keep = first_of_each_group(db, table.column("image_id").to_pylist())
    if keep is None:
        raise QueueError(
            "no near-duplicate groups yet: run `edgemine duplicates` first, or leave out --drop-duplicates"
        )
    return table.take(keep), table.num_rows - len(keep)


def _diverse(table: pa.Table, size: int, index: VectorIndex, config: Config, notes: list[str]) -> pa.Table:
    """A diverse ``size`` of the ranked ``table``: k-center greedy from its best row, kept in rank order."""
    ids = np.asarray(table.column("image_id").to_pylist(), str)
    positions = index.positions(ids, skip_missing=True)
    embedded = np.isin(ids, index.ids[positions])
    rows = np.flatnonzero(embedded)  # the table's rows with a vector, in rank order
    if len(rows) < len(ids):
        notes.append(
            f"{len(ids) - len(rows):,} picks without an embedding left out of the diverse choice (edgemine embed)"
        )
    if len(rows) == 0:
        raise QueueError("--diverse needs embeddings and none of the picks has one: run edgemine embed first")
    picks = k_center_greedy(index.vectors[index.positions(ids[rows])], size, first=0, device=_device(config))
    chosen = np.sort(rows[picks.order])
    notes.append(f"diverse: {len(chosen)} of the sampler's best {len(ids)} by k-center greedy")
    return table.take(chosen)


def next_version(db: LakeDB, name: str) -> int:
    rows = db.query("SELECT max(version) AS v FROM queues WHERE queue = $name", {"name": name}).column("v")
    return int(rows[0].as_py() or 0) + 1


def write_queue(db: LakeDB, name: str, picks: pa.Table, *, sampler: str, params: Mapping[str, Any], user: str) -> int:
    """Append ``picks`` (image_id, prediction_id, score, reason; best first) as the next
    version of queue ``name``; returns the version. Earlier versions stay.

    Two writers making the same name at the same moment can both take the same version
    number; their rows then share it and are told apart by ``created_at``."""
    version = next_version(db, name)
    n = picks.num_rows
    rows = make_rows(QUEUES, n, queue=name, version=version, image_id=picks.column("image_id"),
                     prediction_id=picks.column("prediction_id"), rank=pa.array(range(1, n + 1), pa.int32()),
                     score=picks.column("score"), reason=picks.column("reason"), sampler=sampler,
                     params=json.dumps(dict(params), sort_keys=True, default=str), created_at=datetime.now(UTC),
                     created_by=user or None)
    tables.append(db.lake, QUEUES, rows, tables.commit_info(JOB, user, queue=name, version=version, sampler=sampler))
    return version


def queue_rows(db: LakeDB, name: str, version: int | None = None) -> pa.Table:
    """A queue's rows (the latest version unless ``version``), by rank, with each image's
    current review decision (any review; NULL: not reviewed yet).

    Raises QueueError: no such queue or version (the message lists the queues)."""
    if version is None:
        version = next_version(db, name) - 1
    rows = db.query(
        "SELECT q.rank, q.image_id, q.prediction_id, q.score, q.reason, q.sampler, q.version, "
        "q.created_at, q.created_by, "
        "(SELECT arg_max(r.decision, r.decided_at) FROM reviews r WHERE r.image_id = q.image_id) AS decision "
        "FROM queues q WHERE q.queue = $name AND q.version = $version ORDER BY q.rank",
        {"name": name, "version": version},
    )
    if rows.num_rows == 0:
        names = db.query("SELECT DISTINCT queue FROM queues ORDER BY queue").column("queue").to_pylist()
        what = f"queue {name!r}" + (f" has no version {version}" if names and name in names else " does not exist")
        raise QueueError(
            f"{what}; queues: {', '.join(names) if names else 'none yet (edgemine queue SAMPLER --name Q)'}"
        )
    return rows


def queue_image_ids(db: LakeDB, name: str) -> list[str]:
    """The image ids of queue ``name``'s latest version, by rank (QueueError: no such queue)."""
    return queue_rows(db, name).column("image_id").to_pylist()


def list_queues(db: LakeDB) -> pa.Table:
    """One row per queue (its latest version): sampler, version, images, how many have a
    review decision, who made it and when; newest first."""
    return db.query(
        "WITH latest AS (SELECT * FROM queues QUALIFY version = max(version) OVER (PARTITION BY queue)), "
        "decided AS (SELECT DISTINCT image_id FROM reviews) "
        "SELECT queue, any_value(version) AS version, any_value(sampler) AS sampler, count(*) AS images, "
        "count(d.image_id) AS reviewed, max(created_at) AS created_at, any_value(created_by) AS created_by "
        "FROM latest LEFT JOIN decided d USING (image_id) GROUP BY queue ORDER BY created_at DESC, queue")


def confidence_cut(db: LakeDB, name: str, version: int | None = None, bins: int = 20) -> tuple[pa.Table, float | None]:
    """The confidence histogram of the lake's predictions beside the queue's, and the queue's cut.

    Returns:
        (a table with ``low`` (the bin's lower edge, width 1/bins), ``predictions`` (every
        prediction) and ``in_queue`` (the queue's predictions), and the cut: the highest
        confidence of a queued prediction, None when the queue names no predictions
        (novelty, diversity, label-errors)).
    """
    rows = queue_rows(db, name, version)
    ids = [p for p in rows.column("prediction_id").to_pylist() if p is not None]
    histogram = db.query(
        "SELECT round(least(floor(confidence::DOUBLE * $bins), $bins - 1) / $bins, 4) AS low, count(*) AS predictions, "
        "count(*) FILTER (WHERE prediction_id IN (SELECT unnest($ids))) AS in_queue "
        "FROM predictions GROUP BY ALL ORDER BY low", {"bins": bins, "ids": ids})
    cut = db.query("SELECT max(confidence) AS cut FROM predictions WHERE prediction_id IN (SELECT unnest($ids))",
                   {"ids": ids}).column("cut")[0].as_py() if ids else None
    return histogram, cut
