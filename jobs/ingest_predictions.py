"""`edgemine ingest predictions FILE...`: model predictions into the lake.

Input fields (docs/INGEST.md): image_uri or image_id, model_version, ts,
confidence, and optional prediction_id, label, scores ({label: score}) and
detections ([{box: [x1, y1, x2, y2], label, score}]). Every other field is kept
as a column of ``predictions``.

One input file is one shard: its rows are checked batch by batch in DuckDB
(``RowChecker``); good rows are merged into ``predictions`` and ``detections`` on
their keys (one Delta transaction per table and batch, so memory stays bounded
whatever the file's size), bad rows go to ``errors`` with the reason. Merging on
the key makes a rerun, a killed run rerun, or two files carrying the same
prediction leave one row per prediction. A file already ingested and unchanged
is skipped; a changed one (or ``--force``) first has its earlier rows deleted,
so it replaces what it wrote before. A file that turns out unreadable part-way
has what it wrote deleted again: nothing of it stays.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
import posixpath
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from jobs.progress import Progress
from jobs.readers import Batch, InputFormatError, detect_format, has_known_suffix, prefetch, read_batches
from mining import tables
from mining.config import IngestConfig
from mining.errors import InputError
from mining.lake import Lake, as_uri, open_url
from mining.schema import DETECTIONS, ERRORS, PREDICTIONS, Table, error_rows
from mining.sql import LakeDB, quote_ident, quote_literal
from mining.summary import Summary

log = logging.getLogger(__name__)

JOB = "ingest-predictions"
REQUIRED = ("model_version", "ts", "confidence")
KNOWN = {"prediction_id", "image_uri", "image_id", "model_version", "ts", "label", "confidence", "scores", "detections"}
RESERVED = {"source", "source_row", "ingested_at", "date"}
_ROW = "__row"
_DETECTION_TYPE = "STRUCT(box DOUBLE[], label VARCHAR, score DOUBLE)[]"
_MAX_EPOCH_S = 7_258_118_400  # 2200-01-01: a larger number is not seconds since 1970


class IngestFileError(InputError):
    """One input file could not be ingested; nothing of it was published."""


@contextmanager
def whole_file_or_nothing(uri: str, undo: Callable[[], None]) -> Iterator[None]:
    """Around the chunks of one input file: a file found unreadable midway (bad format,
    truncated, not text) has its chunks' rows undone by ``undo`` and becomes one
    IngestFileError, so a file lands whole or not at all."""
    try:
        yield
    except InputFormatError as e:
        undo()
        raise IngestFileError(f"{uri}: {e}. Nothing of this file was written.") from None
    except (OSError, pa.ArrowException, UnicodeDecodeError, EOFError) as e:
        undo()
        raise IngestFileError(f"{uri}: could not read the file ({type(e).__name__}: {e}). Nothing of it was written.") from None


@dataclass
class FileResult:
    source: str
    status: str  # ingested | skipped | failed
    rows: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    reason: str | None = None


@dataclass
class IngestSummary(Summary):
    """``errors`` counts bad rows (each in the errors table); a file that could not be
    read at all is ``failed``, with its reason."""

    job: str = JOB
    files: list[FileResult] = field(default_factory=list)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for f in self.files:
            for table, n in f.rows.items():
                totals[table] = totals.get(table, 0) + n
        return totals

    def extra(self) -> dict[str, Any]:
        return {
            "ingested": sum(f.status == "ingested" for f in self.files),
            "skipped": sum(f.status == "skipped" for f in self.files),
            "failed": len(self.failed),
            "rows": self.totals(),
        }


def ingest_predictions(
    lake: Lake,
    inputs: list[str],
    config: IngestConfig = IngestConfig(),
    *,
    fmt: str = "auto",
    force: bool = False,
    show_progress: bool = True,
) -> IngestSummary:
    """Ingest each input (a file URI, or a glob of them) as one shard."""
    started = time.monotonic()
    summary = IngestSummary()
    uris = expand_inputs(inputs, lake)
    with LakeDB(lake, read_only=False) as db:
        checker = RowChecker(db)
        progress = Progress("ingest predictions", unit="rows", enabled=show_progress)
        for number, uri in enumerate(uris, start=1):
            progress.what = f"ingest predictions, file {number}/{len(uris)}"
            try:
                result = ingest_file(lake, uri, checker, config, fmt=fmt, force=force, progress=progress)
                summary.files.append(result)
                summary.errors += result.errors
            except IngestFileError as e:
                log.error("%s", e)
                summary.files.append(FileResult(uri, "failed", reason=str(e)))
        progress.close()
    if config.compact_after_files and summary.extra()["ingested"]:
        for table in (PREDICTIONS, DETECTIONS):
            compact_crowded_partitions(lake, table, config.compact_after_files)
    summary.seconds = time.monotonic() - started
    return summary


def compact_crowded_partitions(lake: Lake, table: Table, most_files: int) -> list[str]:
    """Compact the partitions of ``table`` that hold more than ``most_files`` files (each
    ingested batch adds one per day it covers); returns those partitions."""
    if not tables.exists(lake, table):
        return []
    files = tables.files(lake, table)
    column = f"partition.{table.partition}"
    per_partition = Counter(str(v) for v in files.column(column).to_pylist())
    crowded = sorted(v for v, n in per_partition.items() if n > most_files)
    if crowded:
        log.info("compacting %d %s partition(s) of more than %d files", len(crowded), table.name, most_files)
        tables.compact(lake, table, tables.commit_info(JOB, compacted=",".join(crowded)), partitions=crowded)
    return crowded


def expand_inputs(inputs: list[str], lake: Lake) -> list[str]:
    """File URIs from the command line's: files as given, globs and folders expanded
    (a folder to the files in it with a known suffix)."""
    uris: list[str] = []
    for item in inputs:
        fs, path = open_url(item, lake.s3)
        if any(c in path for c in "*?["):
            matches = sorted(fs.glob(path))
        elif fs.isdir(path):
            matches = sorted(p for p in fs.find(path) if has_known_suffix(p))
        else:
            uris.append(as_uri(path, like=item))
            continue
        if not matches:
            raise IngestFileError(f"{item}: no prediction file (.jsonl, .csv, .parquet, ...) there")
        uris += [as_uri(m, like=item) for m in matches]
    return uris


def shard_id(uri: str) -> str:
    return "pred-" + hashlib.sha1(uri.encode()).hexdigest()[:16]


def ingest_file(
    lake: Lake,
    uri: str,
    checker: RowChecker,
    config: IngestConfig,
    *,
    fmt: str = "auto",
    force: bool = False,
    progress: Progress | None = None,
) -> FileResult:
    fs, path, identity = open_input(uri, lake)
    shard = shard_id(uri)
    marker = lake.read_marker(JOB, shard)
    if done_before(marker, identity) and not force:
        return FileResult(uri, "skipped", reason=UNCHANGED)

    try:
        fmt = detect_format(path, fmt)
    except InputFormatError as e:
        raise IngestFileError(f"{uri}: {e}") from None
    ingested_at = datetime.now(UTC)
    info = tables.commit_info(JOB, source=uri)
    if marker is not None:  # an earlier run (finished or killed) wrote rows of this file: they go first
        _delete_rows_of(lake, uri, info)
    lake.write_marker(JOB, shard, {"status": "started", "source": uri})
    rows: dict[str, int] = {}
    errors = 0
    with whole_file_or_nothing(uri, lambda: _delete_rows_of(lake, uri, info)):
        with fs.open(path, "rb", compression="infer") as f:
            for i, batch in enumerate(prefetch(read_batches(f, fmt, config.chunk_rows))):
                if i == 0:
                    _check_first_batch(batch, fmt)
                checked = checker.check(batch, source=uri, base_dir=_base_dir(uri), ingested_at=ingested_at)
                tables.upsert(lake, PREDICTIONS, checked.predictions, info)
                tables.upsert(lake, DETECTIONS, checked.detections, info)
                tables.append(lake, ERRORS, checked.errors, info)
                for table, n in (("predictions", checked.predictions.num_rows), ("detections", checked.detections.num_rows),
                                 ("errors", checked.errors.num_rows)):
                    rows[table] = rows.get(table, 0) + n
                errors += checked.errors.num_rows
                if progress:
                    progress.update(batch.table.num_rows + len(batch.rejects))
    lake.write_marker(JOB, shard, {"status": "done", "source": uri, "identity": identity, "format": fmt,
                                   "rows": {k: v for k, v in rows.items() if v}, "at": ingested_at.isoformat()})
    return FileResult(uri, "ingested", rows={k: v for k, v in rows.items() if v}, errors=errors)


def _delete_rows_of(lake: Lake, uri: str, info) -> None:
    """Remove what an input file wrote: its predictions, detections and error rows."""
    source = f"source = {quote_literal(uri)}"
    tables.delete(lake, PREDICTIONS, source, info)
    tables.delete(lake, DETECTIONS, source, info)
    tables.delete(lake, ERRORS, f"job = '{JOB}' AND {source}", info)


UNCHANGED = "already ingested and unchanged (use --force to redo)"


def open_input(uri: str, lake: Lake) -> tuple[Any, str, dict[str, Any]]:
    """An input file's filesystem, path and identity: its size and its ETag or
    modification time, what tells that it changed since a job's marker was written."""
    fs, path = open_url(uri, lake.s3)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise IngestFileError(f"{uri}: file not found; check the path (and for s3://, the bucket and credentials)") from None
    changed = info.get("ETag") or info.get("mtime") or info.get("LastModified")
    return fs, path, {"size": info.get("size"), "version": str(changed)}


def done_before(marker: dict[str, Any] | None, identity: dict[str, Any]) -> bool:
    """Whether a job's marker says it finished this very file (same identity)."""
    return bool(marker) and marker.get("status") == "done" and marker.get("identity") == identity


def _base_dir(uri: str) -> str:
    return posixpath.dirname(uri)


def _check_first_batch(batch: Batch, fmt: str) -> None:
    if batch.table.num_rows == 0 and batch.rejects:
        raise InputFormatError(
            f"no row of the first {len(batch.rejects)} could be read as {fmt} "
            f"(line {batch.rejects[0].row}: {batch.rejects[0].reason}); is this the right format?"
        )
    columns = set(batch.table.column_names)
    missing = [c for c in REQUIRED if c not in columns]
    if "image_uri" not in columns and "image_id" not in columns:
        missing.insert(0, "image_uri (or image_id)")
    if missing:
        raise InputFormatError(
            f"missing required column(s): {', '.join(missing)}; found {sorted(columns)}. "
            "Each row needs image_uri (or image_id), model_version, ts and confidence (see docs/INGEST.md)"
        )


@dataclass
class Checked:
    predictions: pa.Table
    detections: pa.Table
    errors: pa.Table


class RowChecker:
    """Checks and shapes input rows in DuckDB: resolves image ids, parses
    timestamps, scores and detections, and gives each bad row its reason."""

    def __init__(self, db: LakeDB):
        self.con = db.con
        # One row per URI, and every known id, for the whole run.
        self.con.execute("CREATE OR REPLACE TEMP TABLE image_by_uri AS SELECT uri, image_id FROM image_files")
        self.con.execute("CREATE OR REPLACE TEMP TABLE image_ids AS SELECT image_id FROM images")

    def check(self, batch: Batch, *, source: str, base_dir: str, ingested_at: datetime) -> Checked:
        table = batch.table.append_column(_ROW, batch.rows)
        types = {name: table.schema.field(name).type for name in table.column_names}
        extras = [n for n in table.column_names if n not in KNOWN and n != _ROW]
        self.con.register("batch", table)
        try:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE checked AS {_check_sql(types, base_dir)}")
        finally:
            self.con.unregister("batch")
        at = f"TIMESTAMPTZ '{ingested_at.isoformat()}'"
        params = [source]
        predictions = self.con.execute(_predictions_sql(extras, at), params).to_arrow_table()
        detections = self.con.execute(_detections_sql(at), params).to_arrow_table()
        errors = self.con.execute(_errors_sql(table.column_names, at), params).to_arrow_table()
        return Checked(
            predictions=_conform(predictions, PREDICTIONS, extra=True),
            detections=_conform(detections, DETECTIONS),
            errors=pa.concat_tables([_conform(errors, ERRORS), _reject_rows(batch, source, ingested_at)]),
        )


def _check_sql(types: dict[str, pa.DataType], base_dir: str) -> str:
    def column(name: str, sql_type: str, cast: str = "CAST") -> str:
        """The input column cast to ``sql_type``, or a typed NULL where the batch has none."""
        return f"{cast}({quote_ident(name)} AS {sql_type})" if name in types else f"NULL::{sql_type}"

    uri = column("image_uri", "VARCHAR")
    base = quote_literal(base_dir)
    return f"""
    WITH parsed AS (
        SELECT batch.*,
            CASE WHEN {uri} LIKE 'file://%' THEN substr({uri}, 8)
                 WHEN {uri} LIKE '%://%' OR {uri} LIKE '/%' THEN {uri}
                 ELSE {base} || '/' || {uri} END AS __uri,
            {column("image_id", "VARCHAR")} AS __given_id,
            {column("prediction_id", "VARCHAR")} AS __given_prediction_id,
            {column("model_version", "VARCHAR")} AS __model_version,
            {_ts_expr(types.get("ts"))} AS __ts,
            {column("label", "VARCHAR")} AS __label,
            {column("confidence", "DOUBLE", cast="TRY_CAST")} AS __confidence,
            {column("confidence", "VARCHAR")} AS __confidence_text,
            {_json_expr("scores", types.get("scores"))} AS __scores_json,
            {_json_expr("detections", types.get("detections"))} AS __detections_json
        FROM batch
    ), typed AS (
        SELECT parsed.*,
            coalesce(image_ids.image_id, image_by_uri.image_id) AS __image_id,
            TRY_CAST(__scores_json AS MAP(VARCHAR, FLOAT)) AS __scores,
            TRY_CAST(__detections_json AS {_DETECTION_TYPE}) AS __detections
        FROM parsed
        LEFT JOIN image_ids ON image_ids.image_id = parsed.__given_id
        LEFT JOIN image_by_uri ON image_by_uri.uri = parsed.__uri
    )
    SELECT typed.* EXCLUDE (__scores_json, __detections_json, __confidence_text),
        coalesce(__given_prediction_id,
                 substr(sha256(__image_id || '|' || __model_version || '|' || epoch_us(__ts)::VARCHAR), 1, 24)) AS __prediction_id,
        strftime(__ts, '%Y-%m-%d')::DATE AS __date,
        CASE
        WHEN __uri IS NULL AND __given_id IS NULL THEN 'missing image_uri (or image_id)'
        WHEN __image_id IS NULL AND __given_id IS NOT NULL
            THEN 'unknown image_id ' || __given_id || ': register the image first with `edgemine ingest images`'
        WHEN __image_id IS NULL
            THEN 'unknown image ' || __uri || ': register it first with `edgemine ingest images`'
        WHEN __model_version IS NULL OR __model_version = '' THEN 'missing model_version'
        WHEN __ts IS NULL THEN 'bad or missing ts ' || coalesce('''' || {column("ts", "VARCHAR")} || '''', '(none)')
            || ': use ISO 8601 (2026-11-21T08:30:00Z) or epoch seconds'
        WHEN __confidence IS NULL THEN 'confidence ' || coalesce('''' || __confidence_text || '''', '(none)') || ' is not a number'
        WHEN isnan(__confidence) THEN 'confidence is NaN'
        WHEN __confidence < 0 OR __confidence > 1
            THEN 'confidence ' || __confidence_text || ' outside [0, 1]'
        WHEN __scores_json IS NOT NULL AND __scores IS NULL THEN 'scores is not an object of label: score'
        WHEN __detections_json IS NOT NULL AND (__detections IS NULL OR NOT coalesce(list_bool_and(list_transform(__detections,
                d -> len(d.box) = 4 AND d.box[3] >= d.box[1] AND d.box[4] >= d.box[2]
                     AND (d.score IS NULL OR (d.score >= 0 AND d.score <= 1)))), true))
            THEN 'bad detections: each needs box [x1, y1, x2, y2] with x2 >= x1, y2 >= y1, and score in [0, 1]'
    END AS __reason
    FROM typed
    """


def _predictions_sql(extras: list[str], at: str) -> str:
    extra_columns = "".join(
        f", {quote_ident(name)} AS {quote_ident('input_' + name if name in RESERVED else name)}" for name in extras
    )
    return f"""
    SELECT __prediction_id AS prediction_id, __image_id AS image_id, __uri AS image_uri,
        __model_version AS model_version, __ts AS ts, __label AS label, __confidence::FLOAT AS confidence,
        __scores AS scores, $1 AS source, {_ROW} AS source_row, {at} AS ingested_at, __date AS date
        {extra_columns}
    FROM checked WHERE __reason IS NULL ORDER BY __date, {_ROW}
    """


def _detections_sql(at: str) -> str:
    return f"""
    SELECT __prediction_id || '-' || __i AS detection_id, __prediction_id AS prediction_id, __image_id AS image_id,
        __model_version AS model_version, __ts AS ts, __d.box::FLOAT[4] AS box, __d.label AS label,
        __d.score::FLOAT AS score, $1 AS source, {at} AS ingested_at, __date AS date
    FROM (
        SELECT *, unnest(__detections) AS __d, unnest(range(len(__detections))) AS __i
        FROM checked WHERE __reason IS NULL AND __detections IS NOT NULL
    ) ORDER BY __date, {_ROW}, __i
    """


def _errors_sql(columns: list[str], at: str) -> str:
    original = ", ".join(f"{quote_literal(c)}, {quote_ident(c)}" for c in columns if c != _ROW)
    return f"""
    SELECT '{JOB}' AS job, $1 AS source, {_ROW} AS row, __uri AS uri, __reason AS reason,
        left(json_object({original})::VARCHAR, 2000) AS raw, {at} AS at
    FROM checked WHERE __reason IS NOT NULL ORDER BY {_ROW}
    """


def _reject_rows(batch: Batch, source: str, at: datetime) -> pa.Table:
    """Lines the reader could not parse, as error rows."""
    return error_rows(JOB, [{"source": source, "row": r.row, "reason": r.reason, "raw": r.raw} for r in batch.rejects], at)


def _ts_expr(t: pa.DataType | None) -> str:
    if t is None or pa.types.is_null(t):
        return "NULL::TIMESTAMPTZ"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "CAST(ts AS TIMESTAMPTZ)"
    number = "TRY_CAST(ts AS DOUBLE)"
    epoch = f"CASE WHEN {number} >= 0 AND {number} < {_MAX_EPOCH_S} THEN to_timestamp({number}) END"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return epoch
    return f"coalesce(TRY_CAST(ts AS TIMESTAMPTZ), {epoch})"


def _json_expr(name: str, t: pa.DataType | None) -> str:
    """The column as JSON whatever it arrived as: nested (JSONL, Parquet) or text (CSV)."""
    if t is None or pa.types.is_null(t):
        return "NULL::JSON"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return f"TRY_CAST(nullif({quote_ident(name)}, '') AS JSON)"
    return f"to_json({quote_ident(name)})"


def _conform(rows: pa.Table, table: Table, *, extra: bool = False) -> pa.Table:
    """Cast to the table's schema (in its column order); extra columns, where allowed, follow."""
    columns = [rows.column(f.name).cast(f.type) for f in table.schema]
    fields = list(table.schema)
    for name in rows.column_names:
        if table.schema.get_field_index(name) == -1 and extra:
            columns.append(rows.column(name))
            fields.append(rows.schema.field(name))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))
