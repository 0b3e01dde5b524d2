"""`edgemine ingest predictions FILE...`: model predictions into the lake.

Input fields (docs/INGEST.md): image_uri or image_id, model_version, ts,
confidence, and optional prediction_id, label, scores ({label: score}) and
detections ([{box: [x1, y1, x2, y2], label, score}]). Every other field is kept
as a column of ``predictions``. A detector's outputs as they come (a folder of YOLO
text files, a COCO results file) are read into the same rows by jobs/detector_readers.py
and checked here too: their images found by id, file name or stem, YOLO's boxes turned
into pixels with the image's size.

The per-file loop is jobs/ingest_files.py's (one file one shard, bounded batches,
bad rows to ``errors``, exactly once, a file whole or not at all); this module holds
what is particular to predictions: ``RowChecker`` checks and shapes each batch in
DuckDB (image ids resolved, timestamps, scores and detections parsed, each bad row
given its reason), and good rows are merged into ``predictions`` and ``detections``
on their keys, so a rerun, a killed run rerun, or two files carrying the same
prediction leave one row per prediction. Day partitions that the ingest crowded
with small files are compacted after it.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

import pyarrow as pa

from jobs.detector_readers import DETECTOR_FORMATS, Detector, reader_for
from jobs.ingest_files import Convert, Converted, FileKind, IngestFileError, IngestSummary, ingest_files
from jobs.readers import Batch, InputFormatError
from mining.core import tables
from mining.core.config import IngestConfig
from mining.core.errors import InputError
from mining.core.lake import Lake
from mining.core.masks import mask_rows
from mining.core.schema import DETECTIONS, MASKS, PREDICTIONS, Table, storable
from mining.core.sql import LakeDB, quote_ident, quote_literal

# IngestFileError and IngestSummary are what callers of ingest_predictions catch and get.
__all__ = ["Detector", "IngestFileError", "IngestSummary", "PREDICTION_FILES", "RowChecker", "ingest_predictions",
           "shard_id"]

log = logging.getLogger(__name__)

JOB = "ingest-predictions"
REQUIRED = ("model_version", "ts", "confidence")
KNOWN = {"prediction_id", "image_uri", "image_id", "model_version", "ts", "label", "confidence", "scores", "detections"}
RESERVED = {"source", "source_row", "ingested_at", "date"}
_ROW = "__row"
# The detector readers' working columns (jobs/detector_readers.py): the image's id, file name or stem,
# and whether the detections' boxes are fractions of the image's width and height (YOLO) rather than pixels.
_NAME = "__image_name"
_FRACTIONS = "__box_in_fractions"
_FILE = "__source_file"  # the file of a folder's (a YOLO folder's) that the row came from: its errors name it
_SEMANTIC = "__semantic"  # a label map's classes as RLEs (--format png-masks)
_DETECTION_TYPE = "STRUCT(box DOUBLE[], label VARCHAR, score DOUBLE, mask JSON)[]"
_MAX_EPOCH_S = 7_258_118_400  # 2200-01-01: a larger number is not seconds since 1970


def ingest_predictions(
    lake: Lake,
    inputs: list[str],
    config: IngestConfig = IngestConfig(),
    *,
    fmt: str = "auto",
    detector: Detector | None = None,
    force: bool = False,
    show_progress: bool = True,
) -> IngestSummary:
    """Ingest each input (a file URI, or a glob of them) as one shard. A detector's outputs
    (``fmt`` yolo or coco-results) need ``detector``: what their files do not say."""
    started = time.monotonic()
    kind = _detector_files(lake, fmt, detector) if fmt in DETECTOR_FORMATS or detector else PREDICTION_FILES
    summary = ingest_files(lake, inputs, kind, config, fmt=fmt, force=force, show_progress=show_progress)
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


def _check_columns(columns: set[str]) -> None:
    missing = [c for c in REQUIRED if c not in columns]
    if "image_uri" not in columns and "image_id" not in columns:
        missing.insert(0, "image_uri (or image_id)")
    if missing:
        raise InputFormatError(
            f"missing required column(s): {', '.join(missing)}; found {sorted(columns)}. "
            "Each row needs image_uri (or image_id), model_version, ts and confidence (see docs/INGEST.md)"
        )


@contextmanager
def _open_checker(lake: Lake) -> Iterator[Convert]:
    """A run's converter: a RowChecker on the lake's writable DuckDB."""
    with LakeDB(lake, read_only=False) as db:
        yield RowChecker(db).check


PREDICTION_FILES = FileKind(job=JOB, noun="prediction", shard_prefix="pred-", tables=(PREDICTIONS, DETECTIONS, MASKS),
                            check_columns=_check_columns, converter=_open_checker)


def _detector_files(lake: Lake, fmt: str, detector: Detector | None) -> FileKind:
    """Predictions read from a detector's outputs: the same tables, checker and markers, another reader."""
    if fmt not in DETECTOR_FORMATS:
        raise InputError(f"--model-version, --ts, --classes and --categories are for --format "
                         f"{' or '.join(DETECTOR_FORMATS)}; a {fmt} file gives model_version and ts in its rows")
    if detector is None:
        raise InputError(f"--format {fmt} needs --model-version: a detector's files do not say which model wrote them")
    read, settings = reader_for(lake, fmt, detector)
    return replace(PREDICTION_FILES, formats=(fmt,), read=read, reading=settings,
                   whole_folders=fmt in ("yolo", "png-masks"), check_columns=lambda columns: None)


def shard_id(uri: str) -> str:
    """The name of a prediction file's marker."""
    return PREDICTION_FILES.shard(uri)


class RowChecker:
    """Checks and shapes input rows in DuckDB: resolves image ids, parses
    timestamps, scores and detections, and gives each bad row its reason."""

    def __init__(self, db: LakeDB):
        self.con = db.con
        # One row per URI, and every known id, for the whole run.
        self.con.execute("CREATE OR REPLACE TEMP TABLE image_by_uri AS SELECT uri, image_id FROM image_files")
        self.con.execute("CREATE OR REPLACE TEMP TABLE image_ids AS SELECT image_id FROM images")
        # Filled on the first batch that names images (a detector's files): see _index_names.
        self.con.execute("CREATE OR REPLACE TEMP TABLE image_by_name "
                         "(name VARCHAR, image_id VARCHAR, images BIGINT, width INTEGER, height INTEGER)")
        self._names_indexed = False
        self._file = None  # the input file whose prediction ids file_ids holds

    def check(self, batch: Batch, source: str, ingested_at: datetime) -> Converted:
        """The batch's good rows (predictions, detections) and its bad ones, each with its reason."""
        table = batch.table.append_column(_ROW, batch.rows)
        # Names starting with __ are the readers' working columns (a file's are refused: readers.check_field_names).
        extras = [n for n in table.column_names if n not in KNOWN and not n.startswith("__")]
        if _NAME in table.column_names:
            self._index_names()
        _check_renames(extras)
        # Every column as the lake stores it: DuckDB, too, lacks float16, empty structs, uint64 beyond int64.
        table = pa.table({name: storable(table.column(name)) for name in table.column_names})
        types = {name: table.schema.field(name).type for name in table.column_names}
        self.con.register("batch", table)
        try:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE checked AS {_check_sql(types, posixpath.dirname(source))}")
        finally:
            self.con.unregister("batch")
        self._refuse_repeated_ids(source)
        masks = self._check_masks(source, ingested_at)
        at = f"TIMESTAMPTZ '{ingested_at.isoformat()}'"
        params = [source]
        return Converted(
            rows={
                PREDICTIONS.name: self.con.execute(_predictions_sql(extras, at), params).to_arrow_table(),
                DETECTIONS.name: self.con.execute(_detections_sql(at), params).to_arrow_table(),
                MASKS.name: masks,
            },
            errors=self.con.execute(_errors_sql(table.column_names, at), params).to_arrow_table(),
        )


    def _check_masks(self, source: str, ingested_at: datetime) -> pa.Table:
        """The good rows' masks as rows of ``masks``: each detection's ``mask`` (a COCO segmentation:
        RLE or polygons) and a label map's classes, checked against the image's size
        (mining.core.masks). A row with a mask that is not one is refused whole, with its reason."""
        columns = self.con.execute("SELECT column_name FROM (DESCRIBE checked)").fetchall()
        has_maps = (_SEMANTIC,) in columns
        semantic = f"c.{_SEMANTIC}" if has_maps else "NULL"
        rows = self.con.execute(f"""
            SELECT c.{_ROW} AS row, c.__image_id AS image_id, c.__prediction_id AS prediction_id,
                c.__model_version AS model_version, i.height, i.width, {semantic} AS semantic,
                list_transform(c.__detections, d -> {{'label': d.label, 'mask': d.mask::VARCHAR}}) AS detections
            FROM checked c LEFT JOIN images i ON i.image_id = c.__image_id
            WHERE c.__reason IS NULL AND (list_bool_or(list_transform(c.__detections, d -> d.mask IS NOT NULL))
                OR {semantic} IS NOT NULL)""").fetchall()
        found, refused = [], []
        for row, image_id, prediction_id, model_version, height, width, classes, detections in rows:
            masks = row_masks(prediction_id, height, width, detections or [], classes or [])
            if isinstance(masks, str):
                refused.append({"row": row, "reason": masks})
            else:
                found += [m | {"image_id": image_id, "prediction_id": prediction_id, "model_version": model_version}
                          for m in masks]
        if refused:
            self.con.register("refused", pa.Table.from_pylist(refused))
            try:
                self.con.execute(f"UPDATE checked SET __reason = refused.reason FROM refused "
                                 f"WHERE checked.{_ROW} = refused.row")
            finally:
                self.con.unregister("refused")
        return mask_rows(found, source=source, ingested_at=ingested_at)

    def _index_names(self) -> None:
        """Every name an image goes by, for rows that name it (``__image_name``): its id, and each of
        its files' name and stem (``cam1/0001.jpg``: ``0001.jpg`` and ``0001``), with how many images
        the name fits (more than one: ambiguous) and the image's size (YOLO's boxes need it)."""
        if self._names_indexed:
            return
        self.con.execute("""
            INSERT INTO image_by_name
            SELECT name, min(names.image_id), count(DISTINCT names.image_id), min(width), min(height)
            FROM (SELECT image_id AS name, image_id FROM images
                  UNION ALL SELECT regexp_extract(uri, '[^/]*$'), image_id FROM image_files
                  UNION ALL SELECT regexp_replace(regexp_extract(uri, '[^/]*$'), '[.][^.]*$', ''), image_id
                      FROM image_files) AS names
            JOIN images USING (image_id)
            GROUP BY name""")
        self._names_indexed = True

    def _refuse_repeated_ids(self, source: str) -> None:
        """A prediction id seen earlier in the same file (in this batch or an earlier one) makes
        its row an error: the first row is kept. (Across files the newer file's row replaces the
        older: that is a correction; within one file it is a mistake, even for another image.)"""
        if source != self._file:
            self.con.execute("CREATE OR REPLACE TEMP TABLE file_ids (prediction_id VARCHAR, row BIGINT)")
            self._file = source
        self.con.execute(f"""
            UPDATE checked SET __reason = 'duplicate prediction_id ' || checked.__prediction_id || ' (first at row '
                || first.row || '): one row per prediction in a file; the first is kept'
            FROM (SELECT prediction_id, min(row) AS row FROM (
                      SELECT prediction_id, row FROM file_ids
                      UNION ALL SELECT __prediction_id, {_ROW} FROM checked WHERE __reason IS NULL)
                  GROUP BY prediction_id) AS first
            WHERE checked.__reason IS NULL AND first.prediction_id = checked.__prediction_id
                AND first.row < checked.{_ROW}""")
        self.con.execute(f"INSERT INTO file_ids SELECT __prediction_id, {_ROW} FROM checked WHERE __reason IS NULL")


def row_masks(prediction_id: str, height: int | None, width: int | None, detections: list[dict],
              classes: list[dict]) -> list[dict] | str:
    """A prediction's masks (dicts of ``mask_id``, ``kind``, ``detection_id``, ``label``, ``rle``):
    its detections' (``{label, mask}``, the mask as JSON text) and a label map's classes
    (``{label, height, width, counts}``); or why one is not a mask of this image."""
    import json

    from mining.core.masks import parse_mask

    masks = []
    for i, d in enumerate(detections):
        if d["mask"] is None:
            continue
        value = json.loads(d["mask"])
        if isinstance(value, str):  # a reader's mask arrives as JSON text inside the JSON
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                return f"detection {i}: mask is not JSON"
        rle = parse_mask(value, height, width)
        if isinstance(rle, str):
            return f"detection {i}: bad mask: {rle}"
        detection_id = f"{prediction_id}-{i}"
        masks.append({"mask_id": detection_id, "kind": "instance", "detection_id": detection_id, "label": d["label"],
                      "rle": rle})
    for c in classes:
        if not height or not width:
            return "the image's size is unknown (registered without one): its label map cannot be checked"
        if (c["height"], c["width"]) != (height, width):
            return (f"label map of {c['width']}x{c['height']} pixels, but the image is {width}x{height}: "
                    "a label map must have its image's size")
        key = hashlib.sha256(f"{prediction_id}|{c['label']}|semantic".encode()).hexdigest()[:24]
        masks.append({"mask_id": key, "kind": "semantic", "label": c["label"],
                      "rle": {"size": [c["height"], c["width"]], "counts": c["counts"]}})
    return masks


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
            {column(_NAME, "VARCHAR")} AS __name,
            coalesce({column(_FRACTIONS, "BOOLEAN")}, false) AS __in_fractions,
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
            coalesce(image_ids.image_id, image_by_uri.image_id, CASE WHEN by_name.images = 1 THEN by_name.image_id END)
                AS __image_id,
            by_name.images AS __name_fits, by_name.width AS __width, by_name.height AS __height,
            TRY_CAST(__scores_json AS MAP(VARCHAR, FLOAT)) AS __scores,
            TRY_CAST(__detections_json AS {_DETECTION_TYPE}) AS __detections
        FROM parsed
        LEFT JOIN image_ids ON image_ids.image_id = parsed.__given_id
        LEFT JOIN image_by_uri ON image_by_uri.uri = parsed.__uri
        LEFT JOIN image_by_name AS by_name ON by_name.name = parsed.__name
    )
    SELECT typed.* EXCLUDE (__scores_json, __detections_json, __confidence_text, __detections),
        CASE WHEN __in_fractions THEN list_transform(__detections, d -> {{'box': [d.box[1] * __width,
                d.box[2] * __height, d.box[3] * __width, d.box[4] * __height], 'label': d.label, 'score': d.score}})
             ELSE __detections END AS __detections,
        coalesce(__given_prediction_id,
                 substr(sha256(__image_id || '|' || __model_version || '|' || epoch_us(__ts)::VARCHAR), 1, 24))
            AS __prediction_id,
        strftime(__ts, '%Y-%m-%d')::DATE AS __date,
        CASE
        WHEN __uri IS NULL AND __given_id IS NULL AND __name IS NULL THEN 'missing image_uri (or image_id)'
        WHEN __image_id IS NULL AND __name_fits > 1 THEN 'image name ' || __name || ' fits ' || __name_fits
            || ' images of the lake (by file name or stem): give each image file a name of its own'
        WHEN __image_id IS NULL AND __name IS NOT NULL THEN 'no image named ' || __name || ' in the lake (by image id, '
            || 'file name or stem): register it first with `edgemine ingest images`'
        WHEN __in_fractions AND NOT coalesce(__width > 0 AND __height > 0, false) THEN 'image ' || __name
            || ' has no width and height in the lake: its boxes (fractions of the image) cannot be turned into pixels'
        WHEN __image_id IS NULL AND __given_id IS NOT NULL
            THEN 'unknown image_id ' || __given_id || ': register the image first with `edgemine ingest images`'
        WHEN __image_id IS NULL
            THEN 'unknown image ' || __uri || ': register it first with `edgemine ingest images`'
        WHEN __model_version IS NULL OR __model_version = '' THEN 'missing model_version'
        WHEN __ts IS NULL THEN 'bad or missing ts ' || coalesce('''' || {column("ts", "VARCHAR")} || '''', '(none)')
            || ': use ISO 8601 (2026-11-21T08:30:00Z) or epoch seconds'
        WHEN __confidence IS NULL
            THEN 'confidence ' || coalesce('''' || __confidence_text || '''', '(none)') || ' is not a number'
        WHEN isnan(__confidence) THEN 'confidence is NaN'
        WHEN __confidence < 0 OR __confidence > 1
            THEN 'confidence ' || __confidence_text || ' outside [0, 1]'
        WHEN __scores_json IS NOT NULL AND __scores IS NULL THEN 'scores is not an object of label: score'
        WHEN __detections_json IS NOT NULL AND (__detections IS NULL OR NOT coalesce(list_bool_and(list_transform(
                __detections, d -> len(d.box) = 4 AND d.box[3] >= d.box[1] AND d.box[4] >= d.box[2]
                     AND (d.score IS NULL OR (d.score >= 0 AND d.score <= 1)))), true))
            THEN 'bad detections: each needs box [x1, y1, x2, y2] with x2 >= x1, y2 >= y1, and score in [0, 1]'
    END AS __reason
    FROM typed
    """


def _check_renames(extras: list[str]) -> None:
    """A field named like one of edgemine's own columns (RESERVED) is kept as ``input_<name>``:
    refuse the file (InputFormatError: nothing of it written) when it has that name too."""
    lowered = {n.lower() for n in extras}
    clashes = [n for n in extras if n in RESERVED and f"input_{n}".lower() in lowered]
    if clashes:
        raise InputFormatError(
            f"field(s) {', '.join(clashes)} are kept as input_<name> (the names are edgemine's own columns), but the "
            f"file also has {', '.join('input_' + n for n in clashes)}; rename one of each pair")


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
    original = ", ".join(f"{quote_literal(c)}, {quote_ident(c)}" for c in columns if c not in (_ROW, _FILE, _SEMANTIC))
    uri = f"coalesce(__uri, {_FILE})" if _FILE in columns else "__uri"
    return f"""
    SELECT '{JOB}' AS job, $1 AS source, {_ROW} AS row, {uri} AS uri, __reason AS reason,
        left(json_object({original})::VARCHAR, 2000) AS raw, {at} AS at
    FROM checked WHERE __reason IS NOT NULL ORDER BY {_ROW}
    """


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
