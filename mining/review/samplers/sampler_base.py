"""What every sampler shares: its spec (``Sampler``, ``Option``), what it is asked
(``Slice``: where to pick; ``Request``: its options, how many, the index) and what
it answers (``Picked``), and the SQL helpers the samplers count and exclude with.

What was reviewed (any decision in ``reviews``) or sent for labelling (``exports``)
is left out, unless the slice includes it. Everything is read with SQL over the
lake's views; user values are parameters, the ``--where`` predicate runs in the
read-only sandbox like every user query.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from mining.core.errors import QueueError
from mining.core.sql import LakeDB
from mining.review.label_errors import has_labels_table

if TYPE_CHECKING:
    from mining.core.config import Config
    from mining.search.index import VectorIndex

PICKS_SCHEMA = pa.schema([("image_id", pa.string()), ("prediction_id", pa.string()), ("score", pa.float32()),
                          ("reason", pa.string())])
_PARAM = re.compile(r"\$([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Option:
    """One option of a sampler: ``--name`` on the command line (underscores as dashes).
    ``default`` None: from the config's [queues] section (``config_key``), else unset."""

    name: str
    type: type
    help: str
    default: Any = None
    choices: tuple[str, ...] | None = None
    config_key: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Request:
    """What a queue asks of its sampler: ``options``, every option of the sampler with
    its value (given, else the config's, else the default); ``limit``, how many picks
    (None: every pick); ``index``, the vector index (opened on the first call);
    ``config``; ``queue_images``, the images of another queue (its latest version)."""

    options: dict[str, Any]
    limit: int | None
    index: Callable[[], VectorIndex]
    config: Config
    queue_images: Callable[[str], list[str]]


@dataclass
class Picked:
    """What a sampler picked: ``table`` (PICKS_SCHEMA: image_id, prediction_id, score,
    reason), best first, one row per image; ``candidates``: rows of the slice it chose
    from (predictions, or images for image samplers); ``excluded``: those left out as
    reviewed or exported; ``notes``: what the user should know (a fallback used, images
    without embeddings)."""

    table: pa.Table
    candidates: int = 0
    excluded: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Slice:
    """Where a sampler picks from. ``where``: a SQL predicate over ``images i JOIN
    predictions p`` (as for `edgemine similar`); ``model_version``: only that model's
    predictions; ``include_reviewed``: keep images already reviewed or exported."""

    where: str | None = None
    model_version: str | None = None
    include_reviewed: bool = False

    def excluded_sql(self, db: LakeDB) -> str | None:
        """A query of the image ids to leave out, or None when nothing is."""
        if self.include_reviewed:
            return None
        # A table not written yet reads as an empty view.
        return "SELECT image_id FROM reviews UNION SELECT image_id FROM exports"

    def predictions_sql(self, db: LakeDB, *, exclude: bool = True) -> str:
        """The slice's predictions (every column of ``predictions``). Images are joined only
        for a ``where`` (every prediction's image is registered: the ingest checks it)."""
        conditions = []
        if self.where:
            source = "images i JOIN predictions p USING (image_id)"
            conditions.append(f"({self.where})")
        else:
            source = "predictions p"
        if self.model_version:
            conditions.append("p.model_version = $model_version")
        excluded = self.excluded_sql(db) if exclude else None
        if excluded:
            conditions.append(f"image_id NOT IN ({excluded})")
        return f"SELECT p.* FROM {source}" + (f" WHERE {' AND '.join(conditions)}" if conditions else "")

    def images_sql(self, db: LakeDB, *, exclude: bool = True) -> str:
        """The slice's image ids (one row each)."""
        conditions = []
        if self.where or self.model_version:
            source = "images i LEFT JOIN predictions p USING (image_id)"
            if self.where:
                conditions.append(f"({self.where})")
            if self.model_version:
                conditions.append("p.model_version = $model_version")
        else:
            source = "images i"
        excluded = self.excluded_sql(db) if exclude else None
        if excluded:
            conditions.append(f"image_id NOT IN ({excluded})")
        return f"SELECT DISTINCT image_id FROM {source}" + (f" WHERE {' AND '.join(conditions)}" if conditions else "")

    def query(self, db: LakeDB, sql: str, **params) -> pa.Table:
        """Run ``sql`` with the slice's parameters and ``params`` (only those it names)."""
        given = {"model_version": self.model_version, **params}
        named = set(_PARAM.findall(sql))
        return db.query(sql, {k: v for k, v in given.items() if k in named})

    def describe(self) -> str:
        parts = [f"where {self.where}" if self.where else "",
                 f"model {self.model_version}" if self.model_version else ""]
        return ", ".join(p for p in parts if p) or "the whole lake"


@dataclass(frozen=True)
class Sampler:
    """A sampler's spec, from which the CLI's flags, the UI's form and the checks of
    mining.review.queues.make_queue are made. ``ranked``: takes ``--limit`` (default ``[queues]
    limit``); the others pick by their own options. ``embeddings``: needs the vector
    index. ``run(db, slice, request)`` picks."""

    name: str
    help: str
    options: tuple[Option, ...] = ()
    ranked: bool = True
    embeddings: bool = False
    run: Callable[[LakeDB, Slice, Request], Picked] = field(kw_only=True)


def empty_slice_error(what: str, s: Slice, total: int, excluded: int) -> QueueError:
    """The error of a slice with nothing to pick: everything excluded, or nothing there."""
    if total and excluded == total:
        return QueueError(f"every one of the {total} {what} in {s.describe()} was already reviewed or exported; "
                          "pass --include-reviewed to take them again")
    return QueueError(f"no {what} in {s.describe()}: widen --where or --model-version")


def make_picks(image_ids, prediction_ids, scores, reasons) -> pa.Table:
    """The PICKS_SCHEMA table of four parallel sequences, in their order."""
    return pa.table({"image_id": pa.array(list(image_ids), pa.string()),
                     "prediction_id": pa.array(list(prediction_ids), pa.string()),
                     "score": pa.array(list(scores), pa.float32()), "reason": pa.array(list(reasons), pa.string())},
                    schema=PICKS_SCHEMA)


def first_per_image(rows: list[dict]) -> list[dict]:
    """The rows whose image is not in an earlier row, in their order."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        if row["image_id"] not in seen:
            seen.add(row["image_id"])
            kept.append(row)
    return kept


def slice_counts(db: LakeDB, s: Slice, sql: str, extra: str = "") -> dict:
    """count(*) of the slice's rows (``sql`` without exclusion), how many are excluded, and ``extra`` columns."""
    excluded = s.excluded_sql(db)
    excluded_count = f"count(*) FILTER (WHERE image_id IN ({excluded}))" if excluded else "0"
    return s.query(db, f"SELECT count(*) AS total, {excluded_count} AS excluded{extra} FROM ({sql})").to_pylist()[0]


def embedded_positions(db: LakeDB, s: Slice, idx: VectorIndex, what: str) -> tuple[np.ndarray, int, int, list[str]]:
    """Index positions of the slice's images not excluded; (positions, total, excluded, notes)."""
    counts = slice_counts(db, s, s.images_sql(db, exclude=False))
    ids = s.query(db, s.images_sql(db)).column("image_id").to_numpy(zero_copy_only=False).astype(str)
    if len(ids) == 0:
        raise empty_slice_error("images", s, counts["total"], counts["excluded"])
    positions = idx.positions(ids, skip_missing=True)
    notes = []
    if len(positions) < len(ids):
        notes.append(f"{len(ids) - len(positions):,} images of the slice have no embedding and were left out "
                     "(edgemine embed)")
    if len(positions) == 0:
        raise QueueError(f"no image of {s.describe()} has an embedding, which {what} needs: run edgemine embed first")
    return np.sort(positions), counts["total"], counts["excluded"], notes


def reference_ids(db: LakeDB) -> np.ndarray:
    """Images already seen: every reviewed image, and every labelled one when the lake has a labels table."""
    sql = "SELECT image_id FROM reviews"
    if has_labels_table(db):
        sql += " UNION SELECT image_id FROM labels"
    return db.query(sql).column("image_id").to_numpy(zero_copy_only=False).astype(str)
