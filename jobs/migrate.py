"""`edgemine migrate`: a lake written before its tables were Delta tables, converted.

The old layout kept each table as a folder of Parquet files, several rows per key
(every rerun and every re-registered file), deduplicated by the views at query
time. Per table, once:

1. its folder moves to ``_migrated/<table>/`` (the old files are kept there until
   you delete them);
2. its rows, deduplicated as the old views did (the latest written per key; the
   latest version of each named set; every review decision and error), become the
   Delta table in its place: one transaction, redone whole if killed;
3. ``_jobs/migrate/<table>.json`` records it done.

``images`` becomes two tables: ``images`` (one row per content) and
``image_files`` (one row per registered file). ``detections`` gain the source
file of their prediction. The ingest jobs' markers stay valid, so files already
ingested are still skipped; the vector index is rebuilt on its next use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from jobs.progress import Progress
from mining.core import tables
from mining.core.lake import Lake
from mining.core.schema import DETECTIONS, IMAGE_FILES, IMAGES, PREDICTIONS, TABLES, Table, conform
from mining.core.sql import connect, quote_literal
from mining.core.summary import Summary

JOB = "migrate"
MIGRATED = "_migrated"

# How the old views chose one row per key: (key, order), or a filter keeping whole groups.
_LATEST = {
    "images": ("image_id", "ingested_at DESC, uri"),
    "predictions": ("prediction_id", "ingested_at DESC, source DESC, source_row DESC"),
    "detections": ("detection_id", "ingested_at DESC"),
    "embeddings": ("image_id, backbone, weights", "computed_at DESC"),
    "thumbnails": ("image_id", "computed_at DESC"),
    "demo_truth": ("image_id", "ingested_at DESC"),
    "narrow_steps": ("session, step", "created_at DESC"),
    "narrow_members": ("session, step, image_id", "created_at DESC"),
    "image_files": ("uri", "ingested_at DESC"),
}


@dataclass
class MigrateSummary(Summary):
    job: str = JOB
    lake: str = ""
    kept_in: str = ""
    tables: list[dict[str, Any]] = field(default_factory=list)


def migrate_lake(lake: Lake, *, user: str | None = None, show_progress: bool = True) -> MigrateSummary:
    """Convert every table still in the old layout (and finish one a kill interrupted)."""
    started = time.monotonic()
    summary = MigrateSummary(lake=lake.uri, kept_in=lake.url(lake.path(MIGRATED)))
    pending = [name for name in TABLES if name != IMAGE_FILES.name and _needs_migration(lake, name)]
    progress = Progress("migrate", total=len(pending), unit="tables", enabled=show_progress)
    con = connect(lake)
    for name in pending:
        old = lake.path(MIGRATED, name)
        if not lake.fs.exists(old):
            _move_folder(lake, lake.table_dir(name), old)
        files = [lake.url(p) for p in sorted(lake.fs.find(old)) if p.endswith(".parquet")]
        info = tables.commit_info(JOB, user, migrated_from=lake.url(old))
        if name == IMAGES.name:
            _write(con, lake, IMAGE_FILES, files, info)
        rows = _write(con, lake, TABLES[name], files, info) if files else 0
        stored = con.execute(f"SELECT count(*) FROM read_parquet({_list(files)}, union_by_name = true)").fetchone()[0]
        lake.write_marker(JOB, name, {"table": name, "files": len(files), "stored_rows": stored, "rows": rows})
        summary.tables.append({"table": name, "files": len(files), "stored_rows": stored, "rows": rows})
        progress.update()
    progress.close()
    staging = lake.path("_staging")
    if lake.fs.exists(staging):
        lake.fs.rm(staging, recursive=True)  # the old layout's unfinished shards: never published
    summary.seconds = time.monotonic() - started
    return summary


def _move_folder(lake: Lake, source: str, target: str) -> None:
    """Move every file under ``source`` to the same place under ``target`` (file by file:
    on S3 a folder is only a prefix of its objects' keys)."""
    for path in lake.fs.find(source):
        destination = target + path[len(source):]
        if lake.protocol == "file":
            lake.fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)
        lake.fs.mv(path, destination)
    if lake.protocol == "file" and lake.fs.exists(source):
        lake.fs.rm(source, recursive=True)  # the emptied folders


def _needs_migration(lake: Lake, name: str) -> bool:
    if lake.in_old_layout(name):
        return True
    # Moved aside but not written whole (a kill): redo the write.
    return lake.fs.exists(lake.path(MIGRATED, name)) and lake.read_marker(JOB, name) is None


def _write(con, lake: Lake, table: Table, files: list[str], info) -> int:
    rows = con.execute(_select(lake, table, files)).to_arrow_table()
    rows = conform(rows, table, fill_missing=True)  # columns added since the old rows were written: null
    tables.overwrite(lake, table, rows, info)
    return rows.num_rows


def _select(lake: Lake, table: Table, files: list[str]) -> str:
    hive = ", hive_partitioning = true" if table.partition else ""
    source = f"read_parquet({_list(files)}, union_by_name = true{hive})"
    if table.name == DETECTIONS.name and tables.exists(lake, PREDICTIONS):  # detections learn their prediction's file
        predictions = f"delta_scan({quote_literal(tables.table_uri(lake, PREDICTIONS))})"
        source = (f"(SELECT d.*, p.source FROM {source} d "
                  f"LEFT JOIN (SELECT prediction_id, source FROM {predictions}) p USING (prediction_id))")
    if table.name in _LATEST:
        key, order = _LATEST[table.name]
        return f"SELECT * FROM {source} QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1"
    if table.name == "sets":  # a set saved again replaced the old one
        return f"SELECT * FROM {source} QUALIFY created_at = max(created_at) OVER (PARTITION BY name)"
    return f"SELECT * FROM {source}"  # errors, reviews: every row


def _list(files: list[str]) -> str:
    return "[" + ", ".join(quote_literal(f) for f in files) + "]"

