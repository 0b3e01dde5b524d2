"""The per-file loop every ingest job of row files shares (predictions, feedback).

A job describes its kind of file once, as a ``FileKind``: its name, the tables its
good rows go to, the columns a file must have, and how to open its row converter
(what turns a batch of input rows into table rows and refused rows). ``ingest_files``
does the rest, the same for every kind:

- each input (a file, a glob or a folder) expands to file URIs (``expand_inputs``);
- one input file is one shard: a file already ingested and unchanged (same size and
  ETag or modification time, as its marker in ``_jobs/<job>/`` recorded) is skipped;
  a changed one (or ``force``) first has the rows it wrote before deleted;
- the file is read in bounded batches (jobs/readers.py); each batch's good rows are
  merged into the kind's tables on their keys and its bad rows (with the lines the
  reader could not parse) appended to ``errors``: one Delta transaction per table and
  batch, so memory stays bounded whatever the file's size;
- the marker is written ``started`` before the first commit and ``done`` after the
  last, so a killed run's rerun deletes what the file wrote and redoes it: each row
  lands exactly once;
- a file found unreadable part-way has what it wrote deleted again and is reported
  ``failed``: nothing of it stays, and the other files go on.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from jobs.progress import Progress
from jobs.readers import FORMATS, Batch, InputFormatError, detect_format, has_known_suffix, prefetch, read_batches
from mining.core import tables
from mining.core.config import IngestConfig
from mining.core.errors import InputError
from mining.core.lake import Lake, as_uri, open_url, walkable
from mining.core.schema import ERRORS, TABLES, Table, conform, error_rows
from mining.core.sql import quote_literal
from mining.core.summary import Summary

log = logging.getLogger(__name__)

UNCHANGED = "already ingested and unchanged (use --force to redo)"


class IngestFileError(InputError):
    """One input file could not be ingested; nothing of it was published."""


@dataclass
class Converted:
    """One batch of input rows as table rows: ``rows`` holds the good rows of each of the
    kind's tables (by table name), ``errors`` the rows refused, each with its reason.
    Columns are named as the tables' are; ``ingest_files`` casts them to the schemas."""

    rows: dict[str, pa.Table]
    errors: pa.Table


# A row converter: (batch, the file's URI, the run's ingest time) -> the batch converted.
Convert = Callable[[Batch, str, datetime], Converted]

# A reader: (the input's URI, its filesystem and path, its format, rows per batch) -> its batches.
Read = Callable[[str, Any, str, str, int], Iterator[Batch]]


def read_file(uri: str, fs: Any, path: str, fmt: str, chunk_rows: int) -> Iterator[Batch]:
    """The batches of a row file (JSONL, CSV, Parquet; compressed or not): jobs/readers.py's."""
    with fs.open(path, "rb", compression="infer") as f:
        yield from read_batches(f, fmt, chunk_rows)


@dataclass(frozen=True)
class FileKind:
    """One kind of input file, what ``ingest_files`` needs to know of it.

    ``job`` names the job in markers, commits and error rows (``ingest-predictions``);
    ``noun`` names the files in messages; a file's marker is ``shard_prefix`` + a hash of
    its URI. Good rows are merged into ``tables``, in that order. ``check_columns`` gets
    the first batch's column names and raises ``InputFormatError`` when a required one
    is missing. ``converter`` opens the job's row converter for a run on a lake (its
    DuckDB, its lookups) and closes it after. ``formats``: the input formats allowed.

    ``read`` reads an input as batches (default: a row file). With ``whole_folders`` an input
    folder is one input (a detector's folder of YOLO files), not the files in it. ``reading``
    describes settings that change what an input's rows become (a model version given on the
    command line): a file read before with other settings is read again, not skipped."""

    job: str
    noun: str
    shard_prefix: str
    tables: tuple[Table, ...]
    check_columns: Callable[[set[str]], None]
    converter: Callable[[Lake], AbstractContextManager[Convert]]
    formats: tuple[str, ...] = FORMATS
    read: Read = read_file
    whole_folders: bool = False
    reading: str | None = None

    def shard(self, uri: str) -> str:
        """The name of ``uri``'s marker."""
        return self.shard_prefix + hashlib.sha1(uri.encode()).hexdigest()[:16]


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


def ingest_files(lake: Lake, inputs: list[str], kind: FileKind, config: IngestConfig = IngestConfig(), *,
                 fmt: str = "auto", force: bool = False, show_progress: bool = True) -> IngestSummary:
    """Ingest each input (a file URI, a glob of them, or a folder) as ``kind``, one shard per
    file; a file that fails is reported in the summary and the others go on."""
    started = time.monotonic()
    summary = IngestSummary(job=kind.job)
    uris = expand_inputs(inputs, lake, kind)
    what = kind.job.replace("-", " ")
    with kind.converter(lake) as convert:
        progress = Progress(what, unit="rows", enabled=show_progress)
        for number, uri in enumerate(uris, start=1):
            progress.what = f"{what}, file {number}/{len(uris)}"
            try:
                if _lakes_own(lake, uri):  # a folder given that holds the lake: its tables' files are no input
                    raise IngestFileError(f"{uri}: a file of the lake {lake.uri} itself (a table's or edgemine's); "
                                          "give the folder of the files to ingest")
                result = ingest_file(lake, uri, kind, convert, config, fmt=fmt, force=force, progress=progress)
            except IngestFileError as e:
                log.error("%s", e)
                result = FileResult(uri, "failed", reason=str(e))
            summary.files.append(result)
            summary.errors += result.errors
        progress.close()
    summary.seconds = time.monotonic() - started
    return summary


def _lakes_own(lake: Lake, uri: str) -> bool:
    """Whether ``uri`` is one of the lake's own files: in a table's folder or one of edgemine's
    (``_jobs``, ``_index``); inputs kept in the lake's folder (the demo's ``sources``) are not."""
    folder = lake.folder_of(uri)
    return folder is not None and (folder in TABLES or folder.startswith("_"))


def expand_inputs(inputs: list[str], lake: Lake, kind: FileKind) -> list[str]:
    """File URIs from the command line's: files as given, globs and folders expanded
    (a folder to the files in it with a known suffix)."""
    uris: list[str] = []
    for item in inputs:
        fs, path = walkable(item, lake.s3)
        if any(c in path for c in "*?["):
            matches = sorted(fs.glob(path))
        elif fs.isdir(path) and not kind.whole_folders:
            matches = sorted(p for p in fs.find(path) if has_known_suffix(p))
        else:
            uris.append(as_uri(path, like=item))
            continue
        if not matches:
            raise IngestFileError(f"{item}: no {kind.noun} file (.jsonl, .csv, .parquet, ...) there")
        uris += [as_uri(m, like=item) for m in matches]
    return list(dict.fromkeys(uris))  # a file named twice (a folder and a file in it) is ingested once


def ingest_file(lake: Lake, uri: str, kind: FileKind, convert: Convert, config: IngestConfig, *,
                fmt: str = "auto", force: bool = False, progress: Progress | None = None) -> FileResult:
    """One input file, whole or not at all (IngestFileError); skipped when done before and unchanged."""
    fs, path, identity = open_input(uri, lake)
    if kind.reading is not None:
        identity["reading"] = kind.reading
    shard = kind.shard(uri)
    marker = lake.read_marker(kind.job, shard)
    if done_before(marker, identity) and not force:
        return FileResult(uri, "skipped", reason=UNCHANGED)
    try:
        fmt = detect_format(path) if fmt == "auto" else fmt
    except InputFormatError as e:
        raise IngestFileError(f"{uri}: {e}") from None
    if fmt not in kind.formats:
        raise IngestFileError(f"{uri}: {kind.noun} is read from {' or '.join(kind.formats)} files, not {fmt}")
    ingested_at = datetime.now(UTC)
    commit = tables.commit_info(kind.job, source=uri)
    if marker is not None:  # an earlier run (finished or killed) wrote rows of this file: they go first
        _delete_rows_of(lake, kind, uri, commit)
    lake.write_marker(kind.job, shard, {"status": "started", "source": uri})
    rows = dict.fromkeys([*(t.name for t in kind.tables), ERRORS.name], 0)
    with whole_file_or_nothing(uri, lambda: _delete_rows_of(lake, kind, uri, commit)):
        with closing(kind.read(uri, fs, path, fmt, config.chunk_rows)) as batches:
            for i, batch in enumerate(prefetch(batches)):
                if i == 0:
                    _check_first_batch(batch, fmt, kind)
                converted = convert(batch, uri, ingested_at)
                for name, n in _write_batch(lake, kind, converted, batch, uri, ingested_at, commit).items():
                    rows[name] += n
                if progress:
                    progress.update(batch.table.num_rows + len(batch.rejects))
    rows = {name: n for name, n in rows.items() if n}
    lake.write_marker(kind.job, shard, {"status": "done", "source": uri, "identity": identity, "format": fmt,
                                        "rows": rows, "at": ingested_at.isoformat()})
    return FileResult(uri, "ingested", rows=rows, errors=rows.get(ERRORS.name, 0))


def _write_batch(lake: Lake, kind: FileKind, converted: Converted, batch: Batch, uri: str, ingested_at: datetime,
                 commit: tables.Commit) -> dict[str, int]:
    """Merge a batch's good rows into the kind's tables and append its bad ones (and the lines
    the reader could not parse) to ``errors``; returns the rows written per table."""
    written = {}
    for table in kind.tables:
        good = conform(converted.rows[table.name], table)
        tables.upsert(lake, table, good, commit)
        written[table.name] = good.num_rows
    rejects = [{"source": uri, "row": r.row, "uri": r.uri, "reason": r.reason, "raw": r.raw} for r in batch.rejects]
    bad = pa.concat_tables([conform(converted.errors, ERRORS), error_rows(kind.job, rejects, ingested_at)])
    tables.append(lake, ERRORS, bad, commit)
    written[ERRORS.name] = bad.num_rows
    return written


def _delete_rows_of(lake: Lake, kind: FileKind, uri: str, commit: tables.Commit) -> None:
    """Remove what an input file wrote: its rows of the kind's tables and its error rows."""
    source = f"source = {quote_literal(uri)}"
    for table in kind.tables:
        tables.delete(lake, table, source, commit)
    tables.delete(lake, ERRORS, f"job = {quote_literal(kind.job)} AND {source}", commit)


@contextmanager
def whole_file_or_nothing(uri: str, undo: Callable[[], None]) -> Iterator[None]:
    """Around the chunks of one input file: a file found unreadable midway (bad format,
    truncated, not text) has its chunks' rows undone by ``undo`` and becomes one
    IngestFileError, so a file lands whole or not at all. InputError covers a field the
    lake cannot store (mining.core.tables says which and why)."""
    try:
        yield
    except InputError as e:
        undo()
        raise IngestFileError(f"{uri}: {e}. Nothing of this file was written.") from None
    except (OSError, pa.ArrowException, UnicodeDecodeError, EOFError) as e:
        undo()
        raise IngestFileError(f"{uri}: could not read the file ({type(e).__name__}: {e}). "
                              "Nothing of it was written.") from None


def open_input(uri: str, lake: Lake) -> tuple[Any, str, dict[str, Any]]:
    """An input file's filesystem, path and identity: its size and its ETag or
    modification time, what tells that it changed since a job's marker was written.
    A folder's identity is that of every file below it."""
    fs, path = open_url(uri, lake.s3)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise IngestFileError(f"{uri}: file not found; check the path (and for s3://, the bucket "
                              "and credentials)") from None
    if info.get("type") == "directory":
        files = sorted(fs.find(path, detail=True).items())
        listing = "\n".join(f"{p}\t{i.get('size')}\t{_version(i)}" for p, i in files)
        return fs, path, {"size": sum(i.get("size") or 0 for _, i in files),
                          "version": hashlib.sha1(listing.encode()).hexdigest()}
    return fs, path, {"size": info.get("size"), "version": _version(info)}


def _version(info: dict[str, Any]) -> str:
    """What tells a file's content changed: its ETag (S3) or modification time."""
    return str(info.get("ETag") or info.get("mtime") or info.get("LastModified"))


def done_before(marker: dict[str, Any] | None, identity: dict[str, Any]) -> bool:
    """Whether a job's marker says it finished this very file (same identity)."""
    return bool(marker) and marker.get("status") == "done" and marker.get("identity") == identity


def _check_first_batch(batch: Batch, fmt: str, kind: FileKind) -> None:
    """A first batch of which no row parsed means the wrong format; then the kind's required columns."""
    if batch.table.num_rows == 0 and batch.rejects:
        raise InputFormatError(
            f"no row of the first {len(batch.rejects)} could be read as {fmt} "
            f"(line {batch.rejects[0].row}: {batch.rejects[0].reason}); is this the right format?"
        )
    kind.check_columns(set(batch.table.column_names))
