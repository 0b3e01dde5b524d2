"""Readers of the ingest jobs' input files (predictions, feedback): JSONL, CSV and
Parquet, local or on S3.

Each reader streams a file as ``Batch``es of at most ``chunk_rows`` rows, so
memory stays bounded whatever the file's size. A row that cannot be parsed at
all (broken JSON, a CSV line with the wrong number of fields) comes back as a
``Reject`` with its line number; whether a parsed row makes sense is checked
later, by the job's row converter (jobs/ingest_files.py). A file that cannot be
read as the format at all raises ``InputFormatError``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from mining.core.errors import InputError

T = TypeVar("T")
_DONE = object()
FORMATS = ("jsonl", "csv", "parquet")
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class InputFormatError(InputError):
    """The file is not readable as the expected format; nothing of it was written."""


@dataclass
class Reject:
    row: int | None  # line number (JSONL, CSV) or row index (Parquet), 1-based
    raw: str
    reason: str
    uri: str | None = None  # the file the row is in, where that is not the input itself (a folder's)


@dataclass
class Batch:
    table: pa.Table
    rows: pa.Array  # int64, the source row of each table row
    rejects: list[Reject] = field(default_factory=list)


def has_known_suffix(path: str) -> bool:
    return _format_of(path) is not None


def _format_of(path: str) -> str | None:
    name = path.lower().removesuffix(".gz").removesuffix(".zst")
    return next((found for suffix, found in _SUFFIXES.items() if name.endswith(suffix)), None)


def detect_format(path: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise InputFormatError(f"unknown format {fmt!r}; allowed: auto, {', '.join(FORMATS)}")
        return fmt
    found = _format_of(path)
    if found:
        return found
    raise InputFormatError(
        f"cannot tell the format of {path} from its name; pass --format with one of {', '.join(FORMATS)}"
    )


def read_batches(f: io.BufferedIOBase, fmt: str, chunk_rows: int) -> Iterator[Batch]:
    """Stream ``f`` (an open binary file) as batches; InputFormatError for a field name no
    table can hold."""
    readers = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}
    for batch in readers[fmt](f, chunk_rows):
        check_field_names(batch.table.column_names)
        yield batch


_BAD_NAME = re.compile(r"^$|^__|[\x00-\x1f\x7f]")  # empty, our working columns' prefix, control characters


def check_field_names(names: list[str]) -> None:
    """Field names become column names: refuse (InputFormatError, the file is not written) an
    empty one, one holding control characters, or one starting with ``__`` (edgemine's own
    working columns)."""
    bad = [n for n in names if _BAD_NAME.search(n)]
    if bad:
        raise InputFormatError(f"field name(s) {', '.join(map(repr, bad))} cannot be columns: a field name must be "
                               "non-empty, without control characters, and not start with '__'; rename them")


def prefetch(items: Iterator[T]) -> Iterator[T]:
    """Yield from ``items`` while a background thread already makes the next one.

    Parsing (Arrow) and checking/writing (DuckDB, Parquet) both release the GIL, so
    reading batch n+1 overlaps with processing batch n. Holds at most two items."""
    with ThreadPoolExecutor(1, thread_name_prefix="prefetch") as pool:
        pending = pool.submit(next, items, _DONE)
        while True:
            item = pending.result()
            if item is _DONE:
                return
            pending = pool.submit(next, items, _DONE)
            yield item


# -- JSONL ------------------------------------------------------------------
def _read_jsonl(f: io.BufferedIOBase, chunk_rows: int) -> Iterator[Batch]:
    first = 1
    while lines := list(itertools.islice(f, chunk_rows)):
        numbers = range(first, first + len(lines))
        first += len(lines)
        if any(not line.strip() for line in lines):  # blank lines: skip them, keep the numbering
            kept = [(n, line) for n, line in zip(numbers, lines) if line.strip()]
            if not kept:
                continue
            numbers, lines = zip(*kept)
        yield _parse_jsonl_block(list(lines), list(numbers))


def _parse_jsonl_block(lines: list[bytes], numbers: list[int]) -> Batch:
    # Fast path: Arrow's parser over the whole block. It fails the block on any
    # broken line, so then parse line by line to keep the good rows and name the bad.
    try:
        table = pajson.read_json(io.BytesIO(b"".join(lines)))
        if table.num_rows == len(lines):
            return Batch(table, pa.array(numbers, pa.int64()))
    except pa.ArrowInvalid:
        pass
    records, good_numbers, rejects = [], [], []
    for number, line in zip(numbers, lines):
        text = line.decode("utf-8", errors="replace").rstrip("\n")
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            rejects.append(Reject(number, text, f"invalid JSON: {e.msg} at column {e.colno}"))
            continue
        except RecursionError:
            rejects.append(Reject(number, text, "invalid JSON: nested too deeply"))
            continue
        if not isinstance(record, dict):
            rejects.append(Reject(number, text, f"not a JSON object but {type(record).__name__}"))
            continue
        records.append(record)
        good_numbers.append(number)
    return Batch(_records_to_table(records), pa.array(good_numbers, pa.int64()), rejects)


def _records_to_table(records: list[dict]) -> pa.Table:
    """Columns from dicts; a column whose values disagree in type becomes text, so one
    odd value makes a bad row later rather than failing the whole block here."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    columns = {}
    for name in names:
        values = [record.get(name) for record in records]
        kinds = {_kind(v) for v in values if v is not None}
        if len(kinds) > 1:
            values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # OverflowError: an integer beyond 64 bits
            columns[name] = pa.array([v if v is None else json.dumps(v) for v in values], pa.string())
    return pa.table(columns) if columns else pa.table({"_empty": pa.nulls(len(records))}).drop(["_empty"])


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


# -- CSV --------------------------------------------------------------------
def _read_csv(f: io.BufferedIOBase, chunk_rows: int) -> Iterator[Batch]:
    # CSV has no types: every column is read as text and the known fields are cast
    # when rows are checked; extra columns stay text (cast them in SQL as needed).
    header = f.readline()
    if not header.strip():
        raise InputFormatError("empty CSV file: the first line must be a header")
    try:
        names = next(csv.reader([header.decode("utf-8-sig")]))
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputFormatError(f"cannot read the CSV header: {e}") from None
    rejects: list[Reject] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # Arrow counts lines from the first one it read, after the header.
        line = row.number + 1 if row.number is not None else None
        rejects.append(Reject(line, row.text, f"expected {row.expected_columns} fields, found {row.actual_columns}"))
        return "skip"

    reader = pacsv.open_csv(
        f,
        read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 22, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=True),
    )
    next_line = 2  # line 1 is the header
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    try:
        for record_batch in reader:
            pending.append(record_batch)
            pending_rows += record_batch.num_rows
            if pending_rows >= chunk_rows:
                batch, next_line = _csv_batch(pending, next_line, rejects)
                rejects = []
                pending, pending_rows = [], 0
                yield batch
    except pa.ArrowInvalid as e:
        raise InputFormatError(f"not readable as CSV: {e}") from None
    if pending or rejects:
        batch, _ = _csv_batch(pending, next_line, rejects)
        yield batch


def _csv_batch(parts: list[pa.RecordBatch], first_line: int, rejects: list[Reject]) -> tuple[Batch, int]:
    table = pa.Table.from_batches(parts) if parts else pa.table({})
    # Line numbers assume one line per record; rejected lines take their place in between.
    rejected = sorted(r.row for r in rejects if r.row is not None)
    numbers, line, i = [], first_line, 0
    for _ in range(table.num_rows):
        while i < len(rejected) and rejected[i] == line:
            line += 1
            i += 1
        numbers.append(line)
        line += 1
    return Batch(table, pa.array(numbers, pa.int64()), list(rejects)), line + (len(rejected) - i)


# -- Parquet ----------------------------------------------------------------
def _read_parquet(f: io.BufferedIOBase, chunk_rows: int) -> Iterator[Batch]:
    try:
        parquet = pq.ParquetFile(f)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputFormatError(f"not a Parquet file: {e}") from None
    start = 1
    for record_batch in parquet.iter_batches(batch_size=chunk_rows):
        table = pa.Table.from_batches([record_batch])
        yield Batch(table, pa.array(range(start, start + table.num_rows), pa.int64()))
        start += table.num_rows
