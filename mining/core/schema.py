"""The lake's tables: one pyarrow schema each, defined here and nowhere else.

docs/LAKE.md describes them for people; tests check that the two agree.

Identity rules (why rows never duplicate):
- ``image_id`` is derived from the image's *content*: the first 20 hex digits of
  its SHA-256. The same bytes always get the same id, wherever they are stored.
- ``prediction_id`` is the id given in the input, or else derived from
  ``(image_id, model_version, ts)``, so two input files that carry the same
  prediction leave one row in ``predictions``.
Each table's ``key`` says which columns identify a row; the jobs write each key once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from mining.core.errors import InputError, LakeError

IMAGE_ID_HEX = 20

UTC_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Table:
    """A lake table: a Delta table at ``<lake>/<name>/`` (mining.core.tables writes it).

    ``partition`` names the partition column (``date``, the UTC day of ``ts``).
    ``key`` is what identifies a row: the jobs write so that each key is there once
    (mining.core.tables.upsert), so the SQL view is the table as it is.
    ``latest_by``, for a table whose history matters (review decisions), keeps every
    row in the table: the view shows the latest per key by that column, and
    ``raw.<name>`` shows them all.
    ``extra_columns`` allows input columns beyond the schema (they are added to the table).
    """

    name: str
    schema: pa.Schema
    partition: str | None = None
    key: tuple[str, ...] = ()
    latest_by: str | None = None
    extra_columns: bool = False
    doc: str = ""


IMAGES = Table(
    name="images",
    doc="One row per image (content): where it was first registered, its size and format.",
    key=("image_id",),
    schema=pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("bytes", pa.int64()),
            pa.field("sha256", pa.string()),
            pa.field("format", pa.string()),
            pa.field("mode", pa.string()),
            pa.field("source", pa.string()),
            pa.field("ingested_at", UTC_TS),
        ]
    ),
)

IMAGE_FILES = Table(
    name="image_files",
    doc="One row per registered file: the same bytes at two URIs are two files of one image.",
    key=("uri",),
    schema=pa.schema(
        [
            pa.field("uri", pa.string(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("source", pa.string()),
            pa.field("ingested_at", UTC_TS),
        ]
    ),
)

PREDICTIONS = Table(
    name="predictions",
    doc="One row per model prediction on an image; input columns beyond these are kept.",
    partition="date",
    key=("prediction_id",),
    extra_columns=True,
    schema=pa.schema(
        [
            pa.field("prediction_id", pa.string(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("image_uri", pa.string()),
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("ts", UTC_TS, nullable=False),
            pa.field("label", pa.string()),
            pa.field("confidence", pa.float32(), nullable=False),
            pa.field("scores", pa.map_(pa.string(), pa.float32())),
            pa.field("source", pa.string()),
            pa.field("source_row", pa.int64()),
            pa.field("ingested_at", UTC_TS),
            pa.field("date", pa.date32(), nullable=False),
        ]
    ),
)

DETECTIONS = Table(
    name="detections",
    doc="One row per detection box of a prediction; box is [x1, y1, x2, y2] in pixels.",
    partition="date",
    key=("detection_id",),
    schema=pa.schema(
        [
            pa.field("detection_id", pa.string(), nullable=False),
            pa.field("prediction_id", pa.string(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("model_version", pa.string()),
            pa.field("ts", UTC_TS),
            pa.field("box", pa.list_(pa.float32(), 4)),
            pa.field("label", pa.string()),
            pa.field("score", pa.float32()),
            pa.field("source", pa.string()),
            pa.field("ingested_at", UTC_TS),
            pa.field("date", pa.date32(), nullable=False),
        ]
    ),
)

MASKS = Table(
    name="masks",
    doc=(
        "Segmentation masks as COCO RLE (mining.core.masks): an instance mask of a detection or a "
        "label, or one class's pixels of a semantic label map (of a prediction or a label)."
    ),
    key=("mask_id",),
    schema=pa.schema(
        [
            pa.field("mask_id", pa.string(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),  # instance or semantic
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("prediction_id", pa.string()),
            pa.field("detection_id", pa.string()),
            pa.field("label_id", pa.string()),
            pa.field("model_version", pa.string()),
            pa.field("label", pa.string()),
            pa.field("height", pa.int32(), nullable=False),
            pa.field("width", pa.int32(), nullable=False),
            pa.field("counts", pa.string(), nullable=False),
            pa.field("area", pa.int64(), nullable=False),
            pa.field("source", pa.string()),
            pa.field("ingested_at", UTC_TS),
        ]
    ),
)

EMBEDDINGS = Table(
    name="embeddings",
    doc="One L2-normalised vector per image, backbone and weights (written by `edgemine embed`); "
        "its width is the backbone's (512 for the ResNets, 1280 for EfficientNet-Lite0), the same for every "
        "row of one backbone and weights.",
    key=("image_id", "backbone", "weights"),
    schema=pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("backbone", pa.string(), nullable=False),
            pa.field("weights", pa.string(), nullable=False),
            # A list of any length, as Delta stores it (array<float>); lakes written before widths
            # varied hold fixed-size lists of 512 in their files, which read back the same.
            pa.field("embedding", pa.list_(pa.float32()), nullable=False),
            pa.field("computed_at", UTC_TS),
        ]
    ),
)

OBJECT_EMBEDDINGS = Table(
    name="object_embeddings",
    doc="One L2-normalised vector per detection box, backbone and weights (written by `edgemine embed --objects`): "
        "the box cropped (padded, made square, resized to the backbone's input) and embedded; the image and the box "
        "beside it, so a hit shows without a join.",
    key=("detection_id", "backbone", "weights"),
    schema=pa.schema(
        [
            pa.field("detection_id", pa.string(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("backbone", pa.string(), nullable=False),
            pa.field("weights", pa.string(), nullable=False),
            pa.field("box", pa.list_(pa.float32(), 4)),  # [x1, y1, x2, y2] as cropped (clipped to the image)
            pa.field("embedding", pa.list_(pa.float32()), nullable=False),
            pa.field("computed_at", UTC_TS),
        ]
    ),
)

THUMBNAILS = Table(
    name="thumbnails",
    doc="A small JPEG per image (long side about 128 px) so a review grid is one query, not one read per original.",
    key=("image_id",),
    schema=pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("jpeg", pa.binary(), nullable=False),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("computed_at", UTC_TS),
        ]
    ),
)

ERRORS = Table(
    name="errors",
    doc="One row per input item a job could not take, with the reason; the job went on without it.",
    schema=pa.schema(
        [
            pa.field("job", pa.string(), nullable=False),
            pa.field("source", pa.string()),
            pa.field("row", pa.int64()),
            pa.field("uri", pa.string()),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("raw", pa.string()),
            pa.field("at", UTC_TS),
        ]
    ),
)

DEMO_TRUTH = Table(
    name="demo_truth",
    doc="Hidden ground truth of the synthetic demo lake: scene conditions and the edge-case flag.",
    key=("image_id",),
    schema=pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("uri", pa.string()),
            pa.field("true_label", pa.string()),
            pa.field("object_size", pa.string()),
            pa.field("time_of_day", pa.string()),
            pa.field("weather", pa.string()),
            pa.field("glare", pa.bool_()),
            pa.field("camera", pa.string()),
            pa.field("is_edge_case", pa.bool_()),
            pa.field("ingested_at", UTC_TS),
            pa.field("edge_kind", pa.string()),  # which edge case (demo.kind), null on the other images
        ]
    ),
)

NARROW_STEPS = Table(
    name="narrow_steps",
    doc="One row per action of a narrowing session (start, pick, back): who, when, and the step it leads to.",
    key=("session", "step"),
    schema=pa.schema(
        [
            pa.field("session", pa.string(), nullable=False),
            pa.field("step", pa.int32(), nullable=False),
            pa.field("action", pa.string(), nullable=False),
            pa.field("parent", pa.int32()),
            pa.field("current", pa.int32(), nullable=False),
            pa.field("picked", pa.list_(pa.int32())),
            pa.field("seeds", pa.list_(pa.string())),
            pa.field("negatives", pa.list_(pa.string())),
            pa.field("pool_size", pa.int64()),
            pa.field("clusters", pa.int32()),
            pa.field("backbone", pa.string()),
            pa.field("weights", pa.string()),
            pa.field("table_versions", pa.map_(pa.string(), pa.int64())),
            pa.field("created_by", pa.string()),
            pa.field("created_at", UTC_TS),
        ]
    ),
)

NARROW_MEMBERS = Table(
    name="narrow_members",
    doc=(
        "The pool of each clustering step of a narrowing session: every image, its "
        "cluster, its similarity to the seeds."
    ),
    key=("session", "step", "image_id"),
    schema=pa.schema(
        [
            pa.field("session", pa.string(), nullable=False),
            pa.field("step", pa.int32(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("cluster", pa.int32(), nullable=False),
            pa.field("similarity", pa.float32()),
            pa.field("centre_distance", pa.float32()),
            pa.field("created_at", UTC_TS),
        ]
    ),
)

NARROW_OBJECT_MEMBERS = Table(
    name="narrow_object_members",
    doc=(
        "The pool of each clustering step of a narrowing session over objects (detection boxes, "
        "`narrow start DETECTION_ID`): every box, its image, its cluster, its similarity to the seeds. "
        "A table of its own, not a column of narrow_members: lakes made before it take its first write."
    ),
    key=("session", "step", "detection_id"),
    schema=pa.schema(
        [
            pa.field("session", pa.string(), nullable=False),
            pa.field("step", pa.int32(), nullable=False),
            pa.field("detection_id", pa.string(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("cluster", pa.int32(), nullable=False),
            pa.field("similarity", pa.float32()),
            pa.field("centre_distance", pa.float32()),
            pa.field("created_at", UTC_TS),
        ]
    ),
)

SETS = Table(
    name="sets",
    doc=(
        "Named sets of images (a narrowing session's selection, a search's results) that "
        "review and export take as input."
    ),
    key=("name", "image_id"),
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("rank", pa.int32()),
            pa.field("score", pa.float32()),
            pa.field("source", pa.string()),
            pa.field("created_by", pa.string()),
            pa.field("created_at", UTC_TS, nullable=False),
        ]
    ),
)

REVIEWS = Table(
    name="reviews",
    doc="Reviewers' decisions (accept or reject), append-only; the view keeps the latest per review and image.",
    key=("review", "image_id"),
    latest_by="decided_at",
    schema=pa.schema(
        [
            pa.field("review", pa.string(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("decision", pa.string(), nullable=False),
            pa.field("reviewer", pa.string(), nullable=False),
            pa.field("source", pa.string()),
            pa.field("decided_at", UTC_TS, nullable=False),
        ]
    ),
)

EXPORTS = Table(
    name="exports",
    doc="What was sent to whom: one row per image of an export batch (written when the batch's files are complete).",
    key=("batch", "image_id"),
    schema=pa.schema(
        [
            pa.field("batch", pa.string(), nullable=False),
            pa.field("name", pa.string()),
            pa.field("target", pa.string(), nullable=False),
            pa.field("format", pa.string(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("task", pa.int32()),
            pa.field("file", pa.string()),
            pa.field("ref", pa.string()),
            pa.field("model_version", pa.string()),
            pa.field("source", pa.string()),
            pa.field("options", pa.string()),
            pa.field("at", UTC_TS, nullable=False),
            pa.field("who", pa.string()),
        ]
    ),
)

QUEUES = Table(
    name="queues",
    doc=(
        "Review queues: the images a sampler picked, ranked, with a score and a reason; "
        "a name made again is a new version."
    ),
    key=("queue", "version", "image_id"),
    schema=pa.schema(
        [
            pa.field("queue", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("prediction_id", pa.string()),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("score", pa.float32()),
            pa.field("reason", pa.string()),
            pa.field("sampler", pa.string(), nullable=False),
            pa.field("params", pa.string()),
            pa.field("created_at", UTC_TS, nullable=False),
            pa.field("created_by", pa.string()),
        ]
    ),
)

LABELS = Table(
    name="labels",
    doc="What annotators said is in an image: one row per label (and box) from an imported label file.",
    key=("label_id",),
    schema=pa.schema(
        [
            pa.field("label_id", pa.string(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("box", pa.list_(pa.float32(), 4)),
            pa.field("annotator", pa.string(), nullable=False),
            pa.field("batch", pa.string(), nullable=False),
            pa.field("format", pa.string(), nullable=False),
            pa.field("source", pa.string()),
            pa.field("labelled_at", UTC_TS, nullable=False),
            pa.field("imported_at", UTC_TS),
        ]
    ),
)

FEEDBACK = Table(
    name="feedback",
    doc="Reports about images or predictions from customers and colleagues (`edgemine ingest feedback`).",
    key=("feedback_id",),
    schema=pa.schema(
        [
            pa.field("feedback_id", pa.string(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("prediction_id", pa.string()),
            pa.field("reporter", pa.string()),
            pa.field("comment", pa.string()),
            pa.field("severity", pa.int32(), nullable=False),
            pa.field("reported_at", UTC_TS),
            pa.field("source", pa.string()),
            pa.field("source_row", pa.int64()),
            pa.field("ingested_at", UTC_TS),
        ]
    ),
)

DUPLICATES = Table(
    name="duplicates",
    doc="Groups of near-identical images (`edgemine duplicates`): each group's first image and the others like it.",
    key=("image_id",),
    schema=pa.schema(
        [
            pa.field("group_id", pa.string(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("similarity", pa.float32(), nullable=False),
            pa.field("threshold", pa.float32(), nullable=False),
            pa.field("backbone", pa.string()),
            pa.field("weights", pa.string()),
            pa.field("computed_at", UTC_TS),
        ]
    ),
)

# -- models (issue 17: edgemine train / score) -------------------------------------------
MODELS = Table(
    name="models",
    doc=(
        "Classifiers trained on the lake's labels (`edgemine train`): one row per "
        "version, written last (its commit point)."
    ),
    key=("model_version",),
    schema=pa.schema(
        [
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("backbone", pa.string(), nullable=False),
            pa.field("base", pa.string()),
            pa.field("classes", pa.list_(pa.string()), nullable=False),
            pa.field("train_images", pa.int64()),
            pa.field("val_images", pa.int64()),
            pa.field("epochs", pa.int32()),
            pa.field("best_epoch", pa.int32()),
            pa.field("val_accuracy", pa.float32()),
            pa.field("path", pa.string(), nullable=False),
            pa.field("checkpoint_sha256", pa.string()),
            pa.field("record", pa.string()),
            pa.field("created_by", pa.string()),
            pa.field("created_at", UTC_TS, nullable=False),
        ]
    ),
)

# -- issue 16: slices, metrics per slice and model version, regression alarms, drift ----------
SLICES = Table(
    name="slices",
    doc=(
        "Named SQL predicates over predictions p, images i and truth t "
        "(`edgemine slice add`); the latest per name counts."
    ),
    key=("name",),
    latest_by="created_at",
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("sql", pa.string(), nullable=False),
            pa.field("created_by", pa.string()),
            pa.field("created_at", UTC_TS, nullable=False),
        ]
    ),
)

METRICS = Table(
    name="metrics",
    doc=(
        "Each model version's metrics on each slice against the labels "
        "(`edgemine metrics`); the view keeps the latest run."
    ),
    key=("model_version", "slice", "metric", "label"),
    latest_by="computed_at",
    schema=pa.schema(
        [
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("slice", pa.string(), nullable=False),
            pa.field("metric", pa.string(), nullable=False),
            pa.field("label", pa.string()),
            pa.field("value", pa.float64()),
            pa.field("n", pa.int64(), nullable=False),
            pa.field("computed_at", UTC_TS, nullable=False),
        ]
    ),
)

ALARMS = Table(
    name="alarms",
    doc=(
        "Regressions: a metric of a model version on a slice that dropped below its "
        "baseline version's beyond the margin."
    ),
    key=("model_version", "baseline", "slice", "metric", "label"),
    latest_by="raised_at",
    schema=pa.schema(
        [
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("baseline", pa.string(), nullable=False),
            pa.field("slice", pa.string(), nullable=False),
            pa.field("metric", pa.string(), nullable=False),
            pa.field("label", pa.string()),
            pa.field("value", pa.float64()),
            pa.field("baseline_value", pa.float64()),
            pa.field("drop", pa.float64()),
            pa.field("ci_low", pa.float64()),
            pa.field("ci_high", pa.float64()),
            pa.field("n", pa.int64()),
            pa.field("margin", pa.float64()),
            pa.field("raised_at", UTC_TS, nullable=False),
        ]
    ),
)

DRIFT = Table(
    name="drift",
    doc=(
        "Drift of each time window against a reference (`edgemine drift`): one row per "
        "window and feature checked, with a flag."
    ),
    key=("window_start", "feature"),
    latest_by="computed_at",
    schema=pa.schema(
        [
            pa.field("window_start", UTC_TS, nullable=False),
            pa.field("window_end", UTC_TS, nullable=False),
            pa.field("feature", pa.string(), nullable=False),
            pa.field("statistic", pa.string(), nullable=False),
            pa.field("score", pa.float64()),
            pa.field("p_value", pa.float64()),
            pa.field("threshold", pa.float64()),
            pa.field("flagged", pa.bool_(), nullable=False),
            pa.field("n", pa.int64()),
            pa.field("n_reference", pa.int64()),
            pa.field("detail", pa.string()),
            pa.field("reference", pa.string()),
            pa.field("computed_at", UTC_TS, nullable=False),
        ]
    ),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (IMAGES, IMAGE_FILES, PREDICTIONS, DETECTIONS, MASKS, EMBEDDINGS, OBJECT_EMBEDDINGS, THUMBNAILS, ERRORS,
              DEMO_TRUTH, NARROW_STEPS, NARROW_MEMBERS, NARROW_OBJECT_MEMBERS, SETS, REVIEWS, EXPORTS, LABELS, QUEUES,
              FEEDBACK, DUPLICATES, MODELS, SLICES, METRICS, ALARMS, DRIFT)
}


def table_named(table: Table | str) -> Table:
    """The Table for a name (or the Table itself); an unknown name lists the known ones."""
    if isinstance(table, Table):
        return table
    try:
        return TABLES[table]
    except KeyError:
        raise LakeError(f"unknown table {table!r}; tables: {', '.join(TABLES)}") from None


def image_id_from_sha256(sha256_hex: str) -> str:
    """Content-derived image id: the first IMAGE_ID_HEX hex digits of the image's SHA-256."""
    return sha256_hex[:IMAGE_ID_HEX]


def image_id_from_bytes(data: bytes) -> str:
    return image_id_from_sha256(hashlib.sha256(data).hexdigest())


def make_rows(table: Table, n: int, **columns: Any) -> pa.Table:
    """``n`` rows of ``table``: a column given as a sequence (list, numpy or Arrow
    array) holds one value per row; any other value, None included, is the same in
    every row; a column left out is null. For list columns (``seeds``, ``picked``) a
    per-row value is a sequence of lists."""
    unknown = sorted(set(columns) - set(table.schema.names))
    if unknown:
        raise ValueError(f"table {table.name} has no column(s) {unknown}; columns: {table.schema.names}")
    arrays = []
    for f in table.schema:
        value = columns.get(f.name)
        if _per_row(value, f.type):
            array = value if isinstance(value, pa.Array | pa.ChunkedArray) else pa.array(value, f.type)
            if len(array) != n:
                raise ValueError(f"{table.name}.{f.name}: {len(array)} values for {n} rows")
            arrays.append(array.cast(f.type))
        else:
            arrays.append(pa.nulls(n, f.type) if value is None else pa.array([value] * n, f.type))
    return pa.Table.from_arrays(arrays, schema=table.schema)


def conform(rows: pa.Table, table: Table, *, fill_missing: bool = False) -> pa.Table:
    """``rows`` cast to ``table``'s schema, in its column order; columns beyond the schema
    follow where the table allows them (``extra_columns``) and are dropped where not.

    A schema column ``rows`` lacks is an error, unless ``fill_missing`` (old rows written
    before the column existed): then it is null."""
    missing = [f.name for f in table.schema if f.name not in rows.column_names]
    if missing and not fill_missing:
        raise ValueError(f"rows for table {table.name} lack column(s) {missing}; columns: {rows.column_names}")
    columns = [rows.column(f.name).cast(f.type) if f.name not in missing else pa.nulls(rows.num_rows, f.type)
               for f in table.schema]
    fields = list(table.schema)
    if table.extra_columns:
        for name in rows.column_names:
            if table.schema.get_field_index(name) == -1:
                column = storable(rows.column(name))
                columns.append(column)
                fields.append(pa.field(name, column.type))
        _check_names_differ_beyond_case([f.name for f in fields], table)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


# -- extra fields: every Arrow type an input may bring, as one a Delta table stores ---------

_SIGNED_FOR_UNSIGNED = {8: pa.int16(), 16: pa.int32(), 32: pa.int64(), 64: pa.decimal128(20, 0)}


def storable_type(type_: pa.DataType) -> pa.DataType:
    """The type a column of ``type_`` is stored as, one every Delta reader reads without a
    table feature: timestamps as UTC microseconds (a zone-less one read as UTC, as pyarrow's
    JSON reader already reads a zoned string); times of day as text ("13:05:00.000000");
    durations as int64 microseconds; unsigned integers as the next wider signed type
    (uint64 as decimal(20, 0)); float16 as float32; dictionaries as their values; nested
    types field by field; what Delta has no type for (intervals, unions, decimals over 38
    digits, all-null columns) as text."""
    t = pa.types
    if t.is_dictionary(type_):
        return storable_type(type_.value_type)
    if t.is_timestamp(type_):
        return UTC_TS
    if t.is_date64(type_):
        return pa.date32()
    if t.is_duration(type_):
        return pa.int64()
    if t.is_unsigned_integer(type_):
        return _SIGNED_FOR_UNSIGNED[type_.bit_width]
    if t.is_float16(type_):
        return pa.float32()
    if t.is_decimal(type_):
        return pa.decimal128(type_.precision, type_.scale) if type_.precision <= 38 else pa.string()
    if t.is_string_view(type_) or t.is_large_string(type_):
        return pa.string()
    if t.is_binary_view(type_) or t.is_large_binary(type_) or t.is_fixed_size_binary(type_):
        return pa.binary()
    if t.is_list(type_) or t.is_large_list(type_) or t.is_fixed_size_list(type_) or t.is_list_view(type_) \
            or t.is_large_list_view(type_):
        return pa.list_(storable_type(type_.value_type))
    if t.is_map(type_):
        return pa.map_(storable_type(type_.key_type), storable_type(type_.item_type))
    if t.is_struct(type_) and type_.num_fields and all(f.name for f in type_):  # DuckDB has no unnamed field
        return pa.struct([pa.field(f.name, storable_type(f.type)) for f in type_])
    if t.is_boolean(type_) or t.is_signed_integer(type_) or t.is_floating(type_) or t.is_string(type_) \
            or t.is_binary(type_) or t.is_date32(type_):
        return type_
    return pa.string()  # time of day, interval, union, null, a struct empty or with an unnamed field, extensions


def unstorable_fields(schema: pa.Schema) -> list[str]:
    """``name (type)`` of each field whose type a Delta table cannot hold without a table
    feature every reader must know (a zone-less timestamp: timestampNtz) or at all (time of
    day, duration, unsigned, float16, ...): what :func:`storable_type` changes. A fixed-size
    list is a list to Delta and stays."""

    def as_list(type_: pa.DataType) -> pa.DataType:
        return pa.list_(type_.value_type) if pa.types.is_fixed_size_list(type_) else type_

    return [f"{f.name} ({f.type})" for f in schema if storable_type(f.type) != as_list(f.type)]


def storable(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``column`` as :func:`storable_type` says; what Arrow cannot cast (an interval, a union,
    a nested field of such a type) becomes each value's text."""
    target = storable_type(column.type)
    if target == column.type:
        return column
    if pa.types.is_duration(column.type):
        return column.cast(pa.duration("us")).cast(pa.int64())
    try:
        return column.cast(target, safe=False)  # unsafe only to truncate nanoseconds to microseconds
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.array([None if v is None else _as_text(v) for v in column.to_pylist()], pa.string())


def _as_text(value: Any) -> str:
    """A value as text: nested ones as JSON (what a reader would parse back), others as str()."""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _check_names_differ_beyond_case(names: Sequence[str], table: Table) -> None:
    """Delta matches column names without regard to case: two that differ only in case are refused."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.lower(), name)
        if other != name:
            raise InputError(f"fields {other!r} and {name!r} differ only in case, and table {table.name}'s columns "
                             "cannot (Delta compares names without case): rename one of them in the input")


def embedding_rows(image_ids: Sequence[str], backbone: str, weights: str, vectors: np.ndarray, computed_at: datetime,
                   *, width: int) -> pa.Table:
    """Rows of ``embeddings``: image ``image_ids[i]`` has the vector ``vectors[i]``, float32 (n, width).
    ``width``: the backbone's; vectors of another width are refused (LakeError, nothing is written),
    so every row of one backbone and weights has the same width."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.size == 0:
        vectors = vectors.reshape(len(image_ids), width)
    if vectors.ndim != 2 or len(vectors) != len(image_ids) or vectors.shape[1] != width:
        raise LakeError(f"embeddings of {backbone}/{weights}: {len(image_ids)} images need {width}-d vectors "
                        f"({backbone}'s width), got an array of shape {vectors.shape}")
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), width).cast(pa.list_(pa.float32()))
    return make_rows(EMBEDDINGS, len(image_ids), image_id=list(image_ids), backbone=backbone, weights=weights,
                     embedding=embedding, computed_at=computed_at)


def embedding_matrix(column: pa.Array | pa.ChunkedArray, *, width: int | None = None) -> np.ndarray:
    """float32 (n, width) of an ``embedding`` column as read back (lists, or the fixed-size lists
    of older lakes). The rows must all have one width (``width`` when given; it also shapes an
    empty column); LakeError names the widths found otherwise."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.list_(pa.float32()))
    if len(column) == 0:
        return np.zeros((0, width or 0), np.float32)
    import pyarrow.compute as pc  # here: most callers of this module never read vectors

    lengths = pc.list_value_length(column)
    low, high = pc.min(lengths).as_py(), pc.max(lengths).as_py()
    if low != high or (width is not None and low != width):
        raise LakeError(f"embedding vectors of {low} to {high} floats where one width"
                        f"{f' ({width})' if width else ''} was expected: one backbone and weights, one width")
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(column), low)


def error_rows(job: str, errors: Sequence[Mapping[str, Any]], at: datetime) -> pa.Table:
    """Rows of the ``errors`` table, one per refused item: each a mapping with the
    ``reason`` and any of ``source``, ``row``, ``uri``, ``raw`` (cut to 2,000 characters)."""
    column = lambda name: [e.get(name) for e in errors]  # noqa: E731
    raw = [None if r is None else r[:2000] for r in column("raw")]
    return make_rows(ERRORS, len(errors), job=job, source=column("source"), row=column("row"), uri=column("uri"),
                     reason=column("reason"), raw=raw, at=at)


def _per_row(value: Any, type_: pa.DataType) -> bool:
    if isinstance(value, pa.Array | pa.ChunkedArray | np.ndarray):
        return True
    if not isinstance(value, list | tuple):
        return False
    if pa.types.is_list(type_) or pa.types.is_fixed_size_list(type_):
        return all(v is None or isinstance(v, list | tuple | np.ndarray) for v in value) and len(value) > 0
    return True
