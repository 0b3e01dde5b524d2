"""`edgemine ingest feedback FILE...`: reports about images or predictions into the lake.

Input fields (JSONL or CSV, local or S3; docs/QUEUES.md): one of ``image_id``,
``prediction_id`` or ``image_uri`` (relative URIs are taken from the file's folder),
``severity`` (a number, higher is worse, or ``low``, ``medium``, ``high``,
``critical`` = 1 to 4), and optional ``reporter``, ``comment``, ``at`` (ISO 8601 or
epoch seconds) and ``feedback_id``.

The same rules as predictions (jobs/ingest_predictions.py): the file is read in
bounded batches (jobs/readers.py), each row checked in DuckDB; good rows are merged
into ``feedback`` on their key, bad rows (an image or prediction the lake does not
have, a bad severity or time) go to ``errors`` with the reason. A file already
ingested and unchanged is skipped; a changed one (or ``--force``) first has its
earlier rows deleted; a kill and a rerun leave each report once.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from jobs.ingest_predictions import (UNCHANGED, FileResult, IngestFileError, IngestSummary, done_before, expand_inputs,
                                     open_input, shard_id, whole_file_or_nothing)
from jobs.progress import Progress
from jobs.readers import Batch, InputFormatError, detect_format, prefetch, read_batches
from mining import tables
from mining.config import IngestConfig
from mining.lake import Lake
from mining.schema import ERRORS, FEEDBACK, error_rows
from mining.sql import LakeDB, quote_ident, quote_literal

log = logging.getLogger(__name__)

JOB = "ingest-feedback"
REFERENCES = ("image_id", "prediction_id", "image_uri")
SEVERITY_WORDS = {"low": 1, "medium": 2, "high": 3, "critical": 4}
FORMATS = ("jsonl", "csv")
_ROW = "__row"


def ingest_feedback(lake: Lake, inputs: list[str], config: IngestConfig = IngestConfig(), *, fmt: str = "auto",
                    force: bool = False, show_progress: bool = True) -> IngestSummary:
    """Ingest each input (a file URI, or a glob of them) into ``feedback``; returns what was done
    (``errors``: rows refused, each in the errors table; a file unreadable as a whole is ``failed``)."""
    started = time.monotonic()
    summary = IngestSummary(job=JOB)
    uris = expand_inputs(inputs, lake)
    # The lake is only looked up (which images and predictions exist), through the shared
    # read-only views; rows are parsed and checked in a DuckDB of the job's own.
    with LakeDB(lake) as db, duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        progress = Progress("ingest feedback", unit="rows", enabled=show_progress)
        for uri in uris:
            try:
                result = _ingest_file(lake, db, con, uri, config, fmt=fmt, force=force, progress=progress)
                summary.files.append(result)
                summary.errors += result.errors
            except IngestFileError as e:
                log.error("%s", e)
                summary.files.append(FileResult(uri, "failed", reason=str(e)))
        progress.close()
    summary.seconds = time.monotonic() - started
    return summary


def _ingest_file(lake: Lake, db: LakeDB, con: duckdb.DuckDBPyConnection, uri: str, config: IngestConfig, *, fmt: str, force: bool,
                 progress: Progress) -> FileResult:
    fs, path, identity = open_input(uri, lake)
    shard = "feedback-" + shard_id(uri).removeprefix("pred-")
    marker = lake.read_marker(JOB, shard)
    if done_before(marker, identity) and not force:
        return FileResult(uri, "skipped", reason=UNCHANGED)
    try:
        fmt = detect_format(path, fmt)
    except InputFormatError as e:
        raise IngestFileError(f"{uri}: {e}") from None
    if fmt not in FORMATS:
        raise IngestFileError(f"{uri}: feedback is read from {' or '.join(FORMATS)} files, not {fmt}")
    ingested_at = datetime.now(UTC)
    commit = tables.commit_info(JOB, source=uri)
    if marker is not None:  # an earlier run (finished or killed) wrote rows of this file: they go first
        _delete_rows_of(lake, uri, commit)
    lake.write_marker(JOB, shard, {"status": "started", "source": uri})
    rows = errors = 0
    with whole_file_or_nothing(uri, lambda: _delete_rows_of(lake, uri, commit)):
        with fs.open(path, "rb", compression="infer") as f:
            for i, batch in enumerate(prefetch(read_batches(f, fmt, config.chunk_rows))):
                if i == 0:
                    _check_columns(batch)
                good, bad = _check(db, con, batch, uri, ingested_at)
                tables.upsert(lake, FEEDBACK, good, commit)
                tables.append(lake, ERRORS, bad, commit)
                rows += good.num_rows
                errors += bad.num_rows
                progress.update(batch.table.num_rows + len(batch.rejects))
    lake.write_marker(JOB, shard, {"status": "done", "source": uri, "identity": identity, "format": fmt,
                                   "rows": {"feedback": rows, "errors": errors}, "at": ingested_at.isoformat()})
    return FileResult(uri, "ingested", rows={k: v for k, v in (("feedback", rows), ("errors", errors)) if v}, errors=errors)


def _delete_rows_of(lake: Lake, uri: str, commit) -> None:
    source = f"source = {quote_literal(uri)}"
    tables.delete(lake, FEEDBACK, source, commit)
    tables.delete(lake, ERRORS, f"job = '{JOB}' AND {source}", commit)


def _check_columns(batch: Batch) -> None:
    if batch.table.num_rows == 0 and batch.rejects:
        raise InputFormatError(f"no row of the first {len(batch.rejects)} could be read "
                               f"(line {batch.rejects[0].row}: {batch.rejects[0].reason}); is this the right format?")
    columns = set(batch.table.column_names)
    missing = []
    if not columns & set(REFERENCES):
        missing.append("image_id, prediction_id or image_uri")
    if "severity" not in columns:
        missing.append("severity")
    if missing:
        raise InputFormatError(f"missing required column(s): {'; '.join(missing)}; found {sorted(columns)}. Each report "
                               "needs the image (image_id, prediction_id or image_uri) and a severity (see docs/QUEUES.md)")


def _check(db: LakeDB, con: duckdb.DuckDBPyConnection, batch: Batch, source: str,
           ingested_at: datetime) -> tuple[pa.Table, pa.Table]:
    """The batch's good rows (feedback's schema) and its bad ones (errors' schema)."""
    table = batch.table.append_column(_ROW, batch.rows)
    present = set(table.column_names)

    def column(name: str) -> str:
        return f"nullif(trim(CAST({quote_ident(name)} AS VARCHAR)), '')" if name in present else "NULL::VARCHAR"

    base = quote_literal(source.rsplit("/", 1)[0])
    uri = column("image_uri")
    at = column("at")
    words = " ".join(f"WHEN {quote_literal(w)} THEN {n}" for w, n in SEVERITY_WORDS.items())
    con.register("batch", table)
    try:
        parsed = con.execute(f"""
            SELECT {_ROW} AS __row, {column('image_id')} AS __given_id, {column('prediction_id')} AS __given_prediction,
                CASE WHEN {uri} LIKE 'file://%' THEN substr({uri}, 8)
                     WHEN {uri} LIKE '%://%' OR {uri} LIKE '/%' THEN {uri}
                     ELSE {base} || '/' || {uri} END AS __uri,
                {column('feedback_id')} AS __given_feedback, {column('reporter')} AS __reporter,
                {column('comment')} AS __comment, lower({column('severity')}) AS __severity_text, {at} AS __at_text,
                coalesce(TRY_CAST({at} AS TIMESTAMPTZ),
                         CASE WHEN TRY_CAST({at} AS DOUBLE) BETWEEN 0 AND 7258118400 THEN to_timestamp(TRY_CAST({at} AS DOUBLE)) END) AS __at,
                to_json(batch)::VARCHAR AS __raw
            FROM batch""").to_arrow_table()
    finally:
        con.unregister("batch")
    # What of it the lake knows: the batch's ids only, looked up with parameters.
    given = lambda name: [v for v in parsed.column(name).to_pylist() if v is not None]  # noqa: E731
    lookups = {
        "known_images": db.query("SELECT image_id FROM images WHERE image_id IN (SELECT unnest($ids))",
                                 {"ids": given("__given_id")}),
        "known_predictions": db.query("SELECT prediction_id, image_id FROM predictions "
                                      "WHERE prediction_id IN (SELECT unnest($ids))", {"ids": given("__given_prediction")}),
        "known_uris": db.query("SELECT uri, image_id FROM image_files WHERE uri IN (SELECT unnest($uris))",
                               {"uris": given("__uri")}),
    }
    for name, found in [("parsed", parsed), *lookups.items()]:
        con.register(name, found)
    try:
        con.execute(f"""
        CREATE OR REPLACE TEMP TABLE feedback_checked AS
        WITH known AS (
            SELECT parsed.*, ids.image_id AS __known_id, preds.image_id AS __prediction_image, uris.image_id AS __uri_image,
                CASE __severity_text {words} ELSE TRY_CAST(__severity_text AS INTEGER) END AS __severity
            FROM parsed
            LEFT JOIN known_images ids ON ids.image_id = parsed.__given_id
            LEFT JOIN known_predictions preds ON preds.prediction_id = parsed.__given_prediction
            LEFT JOIN known_uris uris ON uris.uri = parsed.__uri
        )
        SELECT known.*, coalesce(__known_id, __prediction_image, __uri_image) AS __image_id,
            CASE
            WHEN __given_id IS NULL AND __given_prediction IS NULL AND __uri IS NULL
                THEN 'missing image_id, prediction_id or image_uri: which image is the report about?'
            WHEN __given_prediction IS NOT NULL AND __prediction_image IS NULL
                THEN 'unknown prediction_id ' || __given_prediction || ': ingest the predictions first'
            WHEN __given_id IS NOT NULL AND __known_id IS NULL
                THEN 'unknown image_id ' || __given_id || ': register the image first with `edgemine ingest images`'
            WHEN __given_id IS NULL AND __given_prediction IS NULL AND __uri_image IS NULL
                THEN 'unknown image ' || __uri || ': register it first with `edgemine ingest images`'
            WHEN __given_id IS NOT NULL AND __prediction_image IS NOT NULL AND __given_id <> __prediction_image
                THEN 'prediction ' || __given_prediction || ' is of image ' || __prediction_image || ', not ' || __given_id
            WHEN __severity_text IS NULL THEN 'missing severity: a number (higher is worse) or low, medium, high, critical'
            WHEN __severity IS NULL OR __severity < 0
                THEN 'severity ''' || __severity_text || ''' is not a number >= 0 or one of low, medium, high, critical'
            WHEN __at_text IS NOT NULL AND __at IS NULL
                THEN 'bad at ''' || __at_text || ''': use ISO 8601 (2026-11-21T08:30:00Z) or epoch seconds'
            END AS __reason
        FROM known""")
    finally:
        for name in ("parsed", *lookups):
            con.unregister(name)
    at = f"TIMESTAMPTZ '{ingested_at.isoformat()}'"
    good = con.execute(f"""
        SELECT * FROM (SELECT coalesce(__given_feedback, substr(sha256(__image_id || '|' || coalesce(__given_prediction, '') || '|' ||
                   coalesce(__reporter, '') || '|' || coalesce(epoch_us(__at)::VARCHAR, '') || '|' || coalesce(__comment, '')), 1, 24))
                   AS feedback_id,
            __image_id AS image_id, __given_prediction AS prediction_id, __reporter AS reporter, __comment AS comment,
            __severity::INTEGER AS severity, __at AS reported_at, $1 AS source, __row AS source_row, {at} AS ingested_at
        FROM feedback_checked WHERE __reason IS NULL)
        -- a report given twice in one batch lands once (the merge takes one row per key)
        QUALIFY row_number() OVER (PARTITION BY feedback_id ORDER BY source_row) = 1 ORDER BY source_row""", [source]).to_arrow_table()
    bad = con.execute(f"""
        SELECT '{JOB}' AS job, $1 AS source, __row AS row, __uri AS uri, __reason AS reason, left(__raw, 2000) AS raw, {at} AS at
        FROM feedback_checked WHERE __reason IS NOT NULL ORDER BY __row""", [source]).to_arrow_table()
    good = pa.Table.from_arrays([good.column(f.name).cast(f.type) for f in FEEDBACK.schema], schema=FEEDBACK.schema)
    bad = pa.Table.from_arrays([bad.column(f.name).cast(f.type) for f in ERRORS.schema], schema=ERRORS.schema)
    rejects = error_rows(JOB, [{"source": source, "row": r.row, "reason": r.reason, "raw": r.raw} for r in batch.rejects],
                         ingested_at)
    return good, pa.concat_tables([bad, rejects])
