"""Slices: named SQL predicates over the lake's labelled predictions (docs/METRICS.md).

A slice's SQL is a predicate over one row per image and model version (its newest
prediction) in ``FRAME_FROM``: ``p`` the prediction (with its metadata columns:
camera, region, ...), ``i`` the image, ``t`` the image's truth. Slices come from
four places, in this order (a later one of the same name is refused):

- ``all`` (the whole lake) and the automatic ones: one per value of each metadata
  column with few values (``camera=cam-07``), one per COCO object-size range of the
  labelled boxes (``size=small``: an area below 32², ``medium`` below 96², ``large``; a
  label's instance mask's pixels where it has one, as COCOeval's ``segm`` counts),
  one per label batch (``batch=NAME``: the images that batch labelled, so each
  addition of data is tracked apart);
- ``[slices]`` of the config;
- ``edgemine slice add NAME SQL`` (the ``slices`` table);
- named sets and queues, as ``set:NAME`` and ``queue:NAME`` (its latest version).

**One truth per image.** Several annotators (or rounds) may label one image. The truth
is the labels of the image's newest labelling (its latest ``labelled_at``, as the
``labelled`` view takes them), and of those the most frequent class, ties going to
the first in alphabetical order (DuckDB's ``mode`` ordered by label).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from mining.core import tables
from mining.core.config import Config
from mining.core.errors import QueryError, QueryLimitError, SliceError
from mining.core.schema import SLICES, make_rows
from mining.core.sql import LakeDB, quote_ident, quote_literal

JOB = "slices"
# COCO's area ranges (pycocotools COCOeval.Params.areaRng), in pixels.
SIZE_RANGES = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}

# Each image's truth: its newest labels (a QUALIFY cannot sit beside GROUP BY, hence two steps), the
# batches that ever labelled it, its objects' areas in pixels (a label's mask's pixels where it has
# an instance mask, else its box's) and the smallest one's share of the image.
BOX_AREA = "coalesce(mk.area, (n.box[3] - n.box[1]) * (n.box[4] - n.box[2]))"
TRUTH_SQL = f"""
newest AS (
    SELECT * FROM labels QUALIFY labelled_at = max(labelled_at) OVER (PARTITION BY image_id)
), label_batches AS (
    SELECT image_id, list(DISTINCT batch ORDER BY batch) AS batches FROM labels GROUP BY image_id
), truth AS (
    SELECT n.image_id, mode(n.label ORDER BY n.label) AS true_label,
           list(DISTINCT n.label ORDER BY n.label) AS true_labels,
           list({BOX_AREA}) FILTER (n.box IS NOT NULL OR mk.area IS NOT NULL) AS box_areas,
           min({BOX_AREA}) / nullif(any_value(i.width * i.height), 0) AS box_area,
           max(n.labelled_at) AS labelled_at, any_value(b.batches) AS batches
    FROM newest n JOIN label_batches b USING (image_id) LEFT JOIN images i USING (image_id)
    LEFT JOIN masks mk ON mk.label_id = n.label_id AND mk.kind = 'instance' GROUP BY n.image_id
)"""
LATEST_SQL = """
latest AS (
    SELECT * FROM predictions QUALIFY row_number() OVER (PARTITION BY image_id, model_version ORDER BY ts DESC) = 1
)"""
# The rows a slice's predicate sees: each image's newest prediction per model version.
FRAME_FROM = "latest p LEFT JOIN images i USING (image_id) LEFT JOIN truth t USING (image_id)"


def frame_ctes() -> str:
    """The CTEs ``FRAME_FROM`` reads (truth, latest), for a query's WITH."""
    return f"{TRUTH_SQL.strip()}, {LATEST_SQL.strip()}"


@dataclass(frozen=True)
class Slice:
    name: str
    sql: str
    kind: str  # all, auto, config, saved, set, queue


def all_slices(db: LakeDB, config_slices: dict | None = None, *, max_values: int = 50) -> list[Slice]:
    """Every slice, ``all`` first: automatic, the config's, saved ones, sets and queues."""
    found = [Slice("all", "TRUE", "all"), *auto_slices(db, max_values)]
    for name, sql in (config_slices or {}).items():
        if not isinstance(sql, str):
            raise SliceError(f"[slices] {name} must be a SQL predicate in quotes, got {sql!r}")
        found.append(Slice(name, sql, "config"))
    found += [
        Slice(r["name"], r["sql"], "saved") for r in db.query("SELECT name, sql FROM slices ORDER BY name").to_pylist()
    ]
    found += [
        Slice(
            f"set:{r['name']}",
            f"p.image_id IN (SELECT image_id FROM sets WHERE name = {quote_literal(r['name'])})",
            "set",
        )
        for r in db.query("SELECT DISTINCT name FROM sets ORDER BY name").to_pylist()
    ]
    found += [
        Slice(
            f"queue:{r['queue']}",
            f"p.image_id IN (SELECT image_id FROM queues WHERE queue = {quote_literal(r['queue'])} AND version = "
            f"(SELECT max(version) FROM queues WHERE queue = {quote_literal(r['queue'])}))",
            "queue",
        )
        for r in db.query("SELECT DISTINCT queue FROM queues ORDER BY queue").to_pylist()
    ]
    seen: dict[str, Slice] = {}
    for s in found:
        if s.name in seen:
            raise SliceError(f"two slices are named {s.name!r} ({seen[s.name].kind} and {s.kind}); rename one")
        seen[s.name] = s
    return found


def auto_slices(db: LakeDB, max_values: int = 50) -> list[Slice]:
    """A slice per value of each metadata column with at most ``max_values`` values, per
    COCO size range of the labelled boxes, and per label batch."""
    from mining.core.statistics import metadata_columns

    found = []
    for column in metadata_columns(db):
        col = quote_ident(column)
        values = db.query(f"SELECT DISTINCT {col}::VARCHAR AS v FROM predictions WHERE {col} IS NOT NULL "
                          f"ORDER BY v LIMIT {max_values + 1}").column("v").to_pylist()
        if len(values) <= max_values:
            found += [Slice(f"{column}={v}", f"p.{col}::VARCHAR = {quote_literal(v)}", "auto") for v in values]
    has_boxes = db.query("SELECT count(*) AS n FROM labels WHERE box IS NOT NULL").column("n")[0].as_py()
    if has_boxes:
        found += [Slice(f"size={name}", f"len(list_filter(t.box_areas, a -> a >= {lo} AND a < {hi})) > 0", "auto")
                  for name, (lo, hi) in SIZE_RANGES.items()]
    batches = db.query("SELECT DISTINCT batch FROM labels ORDER BY batch").column("batch").to_pylist()
    found += [Slice(f"batch={b}", f"list_contains(t.batches, {quote_literal(b)})", "auto") for b in batches]
    return found


def find_slices(slices: list[Slice], names: list[str] | None) -> list[Slice]:
    """The slices named (all of them for None); an unknown name lists the known ones."""
    if not names:
        return slices
    by_name = {s.name: s for s in slices}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SliceError(f"unknown slice(s) {', '.join(unknown)}; slices: {', '.join(by_name)} "
                         "(add one with `edgemine slice add NAME \"SQL\"`)")
    return [by_name[n] for n in names]


def check_sql(db: LakeDB, name: str, sql: str) -> int:
    """Run the slice's predicate once; returns its rows. SliceError names the slice and its SQL."""
    if not sql.strip():
        raise SliceError(f"slice {name!r} has no SQL; give a predicate such as \"p.camera = 'cam-07'\"")
    try:
        return (
            db.query(f"WITH {frame_ctes()} SELECT count(*) AS n FROM {FRAME_FROM} WHERE ({sql})").column("n")[0].as_py()
        )
    except QueryLimitError as e:
        raise SliceError(f"slice {name!r} (`{sql}`): {e}") from None
    except QueryError as e:
        raise SliceError(
            f"slice {name!r}: invalid SQL `{sql}`: {e}. A slice is a predicate over p (predictions, "
            "with their metadata columns), i (images), t (truth: true_label, true_labels, box_area, "
            "box_areas, batches)"
        ) from None


def check_config_slices(db: LakeDB, config: Config) -> None:
    """Run each of the config's slices once (SliceError names the first that fails): what a job
    that ends in metrics (`edgemine loop`) checks before its minutes of work."""
    for one in all_slices(db, config.slices, max_values=config.metrics.auto_max_values):
        if one.kind == "config":
            check_sql(db, one.name, one.sql)


def add_slice(db: LakeDB, name: str, sql: str, *, user: str) -> int:
    """Save a slice (a name made again replaces it); its SQL is checked first. Returns its rows."""
    if not name or any(c in name for c in "=:\n"):
        raise SliceError(
            f"slice name {name!r}: give a name without '=' or ':' (those name automatic slices, sets, queues)"
        )
    n = check_sql(db, name, sql)
    rows = make_rows(SLICES, 1, name=[name], sql=[sql], created_by=user, created_at=datetime.now(UTC))
    tables.append(db.lake, SLICES, rows, tables.commit_info(JOB, user, slice=name))
    return n


def slice_table(slices: list[Slice]) -> pa.Table:
    return pa.table(
        {"name": [s.name for s in slices], "kind": [s.kind for s in slices], "sql": [s.sql for s in slices]}
    )


def show_slice(db: LakeDB, one: Slice) -> dict:
    """A slice's size: predictions and images in it, its share of the lake's images, labelled
    images, and its label balance (true labels per class)."""
    check_sql(db, one.name, one.sql)
    counts = db.query(
        f"WITH {frame_ctes()} SELECT count(*) AS predictions, count(DISTINCT p.image_id) AS images, "
        f"count(DISTINCT p.image_id) FILTER (t.true_label IS NOT NULL) AS labelled FROM {FRAME_FROM} WHERE ({one.sql})"
    ).to_pylist()[0]
    total = db.query("SELECT count(DISTINCT image_id) AS n FROM predictions").column("n")[0].as_py()
    return {"name": one.name, "kind": one.kind, "sql": one.sql, **counts,
            "share": counts["images"] / total if total else 0.0, "labels": class_balance(db, one).to_pylist()}


def class_balance(db: LakeDB, one: Slice) -> pa.Table:
    """Labelled images per true class in a slice (each image once), most frequent first."""
    return db.query(
        f"WITH {frame_ctes()}, inside AS (SELECT DISTINCT p.image_id, t.true_label FROM {FRAME_FROM} "
        f"WHERE ({one.sql}) AND t.true_label IS NOT NULL) "
        "SELECT true_label AS label, count(*) AS images FROM inside GROUP BY ALL ORDER BY images DESC, label"
    )


def require_labels(db: LakeDB) -> None:
    """SliceError saying what to import first when the lake has no labels or no predictions."""
    if not db.query("SELECT count(*) AS n FROM predictions").column("n")[0].as_py():
        raise SliceError("the lake has no predictions: ingest them first (`edgemine ingest predictions FILE`)")
    if not db.query("SELECT count(*) AS n FROM labels").column("n")[0].as_py():
        raise SliceError(
            "the lake has no labels to compare predictions with: export a batch for labelling "
            "(`edgemine export`), then import the labelled file (`edgemine labels import FILE --format ...`)"
        )
