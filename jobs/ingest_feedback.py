"""`edgemine ingest feedback FILE...`: reports about images or predictions into the lake.

Input fields (JSONL or CSV, local or S3; docs/QUEUES.md): one of ``image_id``,
``prediction_id`` or ``image_uri`` (relative URIs are taken from the file's folder),
``severity`` (a number, higher is worse, or ``low``, ``medium``, ``high``,
``critical`` = 1 to 4), and optional ``reporter``, ``comment``, ``at`` (ISO 8601 or
epoch seconds) and ``feedback_id``.

The per-file loop is jobs/ingest_files.py's, the same as predictions': the file is
read in bounded batches (jobs/readers.py), each row checked in DuckDB
(``FeedbackChecker``); good rows are merged into ``feedback`` on their key, bad rows
(an image or prediction the lake does not have, a bad severity or time) go to
``errors`` with the reason. A file already ingested and unchanged is skipped; a
changed one (or ``--force``) first has its earlier rows deleted; a kill and a rerun
leave each report once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import duckdb
import pyarrow as pa

from jobs.ingest_files import Convert, Converted, FileKind, IngestSummary, ingest_files
from jobs.readers import Batch, InputFormatError
from mining.core.config import IngestConfig
from mining.core.lake import Lake
from mining.core.query_limits import scratch_connection
from mining.core.schema import FEEDBACK, storable
from mining.core.sql import LakeDB, quote_ident, quote_literal

JOB = "ingest-feedback"
REFERENCES = ("image_id", "prediction_id", "image_uri")
SEVERITY_WORDS = {"low": 1, "medium": 2, "high": 3, "critical": 4}
FORMATS = ("jsonl", "csv")
_ROW = "__row"
_MAX_EPOCH_S = 7_258_118_400  # 2200-01-01: a larger number is not seconds since 1970


def ingest_feedback(lake: Lake, inputs: list[str], config: IngestConfig = IngestConfig(), *, fmt: str = "auto",
                    force: bool = False, show_progress: bool = True) -> IngestSummary:
    """Ingest each input (a file URI, or a glob of them) into ``feedback``; returns what was done
    (``errors``: rows refused, each in the errors table; a file unreadable as a whole is ``failed``)."""
    return ingest_files(lake, inputs, FEEDBACK_FILES, config, fmt=fmt, force=force, show_progress=show_progress)


def _check_columns(columns: set[str]) -> None:
    missing = []
    if not columns & set(REFERENCES):
        missing.append("image_id, prediction_id or image_uri")
    if "severity" not in columns:
        missing.append("severity")
    if missing:
        raise InputFormatError(f"missing required column(s): {'; '.join(missing)}; found {sorted(columns)}. Each "
                               "report needs the image (image_id, prediction_id or image_uri) and a severity "
                               "(see docs/QUEUES.md)")


@contextmanager
def _open_checker(lake: Lake) -> Iterator[Convert]:
    """A run's converter. The lake is only looked up (which images and predictions exist), through
    the shared read-only views; rows are parsed and checked in a DuckDB of the job's own."""
    with LakeDB(lake) as db, scratch_connection() as con:
        con.execute("SET TimeZone = 'UTC'")
        yield FeedbackChecker(db, con).check


FEEDBACK_FILES = FileKind(job=JOB, noun="feedback", shard_prefix="feedback-", tables=(FEEDBACK,),
                          check_columns=_check_columns, converter=_open_checker, formats=FORMATS)


class FeedbackChecker:
    """Checks and shapes reports in DuckDB: parses them, looks up the images and
    predictions they name in the lake, and gives each bad row its reason."""

    def __init__(self, db: LakeDB, con: duckdb.DuckDBPyConnection):
        self.db, self.con = db, con

    def check(self, batch: Batch, source: str, ingested_at: datetime) -> Converted:
        """The batch's good rows (feedback) and its bad ones, each with its reason."""
        self._judge(self._parse(batch, source))
        at = f"TIMESTAMPTZ '{ingested_at.isoformat()}'"
        good = self.con.execute(_good_sql(at), [source]).to_arrow_table()
        bad = self.con.execute(_bad_sql(at), [source]).to_arrow_table()
        return Converted(rows={FEEDBACK.name: good}, errors=bad)

    def _parse(self, batch: Batch, source: str) -> pa.Table:
        """The batch's fields as text, its URIs made absolute, its times parsed."""
        table = batch.table.append_column(_ROW, batch.rows)
        table = pa.table({name: storable(table.column(name)) for name in table.column_names})  # what DuckDB reads
        present = set(table.column_names)

        def column(name: str) -> str:
            return f"nullif(trim(CAST({quote_ident(name)} AS VARCHAR)), '')" if name in present else "NULL::VARCHAR"

        base = quote_literal(source.rsplit("/", 1)[0])
        uri = column("image_uri")
        at = column("at")
        epoch = f"TRY_CAST({at} AS DOUBLE)"
        self.con.register("batch", table)
        try:
            return self.con.execute(f"""
                SELECT {_ROW} AS __row, {column('image_id')} AS __given_id,
                    {column('prediction_id')} AS __given_prediction,
                    CASE WHEN {uri} LIKE 'file://%' THEN substr({uri}, 8)
                         WHEN {uri} LIKE '%://%' OR {uri} LIKE '/%' THEN {uri}
                         ELSE {base} || '/' || {uri} END AS __uri,
                    {column('feedback_id')} AS __given_feedback, {column('reporter')} AS __reporter,
                    {column('comment')} AS __comment, lower({column('severity')}) AS __severity_text,
                    {at} AS __at_text,
                    coalesce(TRY_CAST({at} AS TIMESTAMPTZ),
                             CASE WHEN {epoch} BETWEEN 0 AND {_MAX_EPOCH_S} THEN to_timestamp({epoch}) END) AS __at,
                    to_json(batch)::VARCHAR AS __raw
                FROM batch""").to_arrow_table()
        finally:
            self.con.unregister("batch")

    def _judge(self, parsed: pa.Table) -> None:
        """Makes ``feedback_checked``: the parsed rows with their image and ``__reason`` (NULL for a
        good row). What of them the lake knows is looked up for the batch's ids only, with parameters."""
        given = lambda name: [v for v in parsed.column(name).to_pylist() if v is not None]  # noqa: E731
        lookups = {
            "known_images": self.db.query("SELECT image_id FROM images WHERE image_id IN (SELECT unnest($ids))",
                                          {"ids": given("__given_id")}),
            "known_predictions": self.db.query("SELECT prediction_id, image_id FROM predictions "
                                               "WHERE prediction_id IN (SELECT unnest($ids))",
                                               {"ids": given("__given_prediction")}),
            "known_uris": self.db.query("SELECT uri, image_id FROM image_files WHERE uri IN (SELECT unnest($uris))",
                                        {"uris": given("__uri")}),
        }
        for name, found in [("parsed", parsed), *lookups.items()]:
            self.con.register(name, found)
        try:
            self.con.execute(_judge_sql())
        finally:
            for name in ("parsed", *lookups):
                self.con.unregister(name)


def _judge_sql() -> str:
    words = " ".join(f"WHEN {quote_literal(w)} THEN {n}" for w, n in SEVERITY_WORDS.items())
    return f"""
    CREATE OR REPLACE TEMP TABLE feedback_checked AS
    WITH known AS (
        SELECT parsed.*, ids.image_id AS __known_id, preds.image_id AS __prediction_image,
            uris.image_id AS __uri_image,
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
    FROM known"""


def _good_sql(at: str) -> str:
    """The good rows as feedback rows. A report without feedback_id is keyed by a hash of what it
    says; a report given twice in one batch lands once (the merge takes one row per key)."""
    return f"""
    SELECT * FROM (
        SELECT coalesce(__given_feedback, substr(sha256(__image_id || '|' || coalesce(__given_prediction, '') || '|'
                    || coalesce(__reporter, '') || '|' || coalesce(epoch_us(__at)::VARCHAR, '') || '|'
                    || coalesce(__comment, '')), 1, 24)) AS feedback_id,
            __image_id AS image_id, __given_prediction AS prediction_id, __reporter AS reporter, __comment AS comment,
            __severity::INTEGER AS severity, __at AS reported_at, $1 AS source, __row AS source_row, {at} AS ingested_at
        FROM feedback_checked WHERE __reason IS NULL)
    QUALIFY row_number() OVER (PARTITION BY feedback_id ORDER BY source_row) = 1 ORDER BY source_row"""


def _bad_sql(at: str) -> str:
    return f"""
    SELECT '{JOB}' AS job, $1 AS source, __row AS row, __uri AS uri, __reason AS reason, left(__raw, 2000) AS raw,
        {at} AS at
    FROM feedback_checked WHERE __reason IS NOT NULL ORDER BY __row"""
