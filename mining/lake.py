"""The lake on storage: where each table's files live, and how a job publishes them.

A lake is a URI, a local folder or ``s3://bucket/prefix``. The filesystem is
resolved once with ``fsspec.core.url_to_fs`` and every read and write goes
through it, so jobs behave the same on both.

Layout (relative to the lake root)::

    images/<shard>-00000.parquet
    predictions/date=YYYY-MM-DD/<shard>-00000.parquet
    detections/date=YYYY-MM-DD/<shard>-00000.parquet
    embeddings/<shard>-00000.parquet
    errors/<shard>-00000.parquet
    narrow_steps/, narrow_members/, sets/   narrowing sessions and named sets
    _jobs/<job>/<shard>.json          success marker of one input shard
    _index/<backbone>/<weights>/      vector index: current.json -> <version>/ files
    _staging/<job>/<shard>/...        files of a shard not yet published
    sources/                          raw inputs the demo generates

Publishing (why a killed job never leaves duplicates): a job writes all files
of one input shard under ``_staging``; ``ShardWriter.commit`` then deletes the
files an earlier run of that shard published (its marker lists them), moves the
new ones in (a rename locally, one atomic object per file on S3), and marks the
shard ``done`` last.
File names derive from the shard id and a sequence number only, so a rerun
writes the same names and replaces rather than adds.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from mining.config import Config, S3Config
from mining.schema import TABLES, Table

log = logging.getLogger(__name__)

JOBS_DIR = "_jobs"
INDEX_DIR = "_index"
STAGING_DIR = "_staging"
SOURCES_DIR = "sources"


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def as_uri(path: str, *, like: str) -> str:
    """A filesystem path (no protocol) back as a URI on the same storage as ``like``."""
    return f"s3://{path}" if is_s3(like) else path


def path_of(uri: str) -> str:
    """The filesystem path (no protocol) of a URI, as fsspec names files."""
    return uri.removeprefix("s3://").removeprefix("s3a://")


def storage_options(uri: str, s3: S3Config) -> dict[str, Any]:
    """fsspec options for ``uri``. Only what is set is passed, so s3fs/botocore
    still find credentials the standard way. The region stays out of
    ``client_kwargs``: botocore takes it from the environment, and S3-compatible
    servers refuse bucket creation with a location constraint they do not expect."""
    if not is_s3(uri):
        return {}
    # Other processes write the same lake: a cached listing would hide their files.
    options: dict[str, Any] = {"use_listings_cache": False}
    if s3.key:
        options["key"] = s3.key
    if s3.secret:
        options["secret"] = s3.secret
    if s3.session_token:
        options["token"] = s3.session_token
    if s3.endpoint_url:
        options["client_kwargs"] = {"endpoint_url": s3.endpoint_url}
    return options


def open_url(uri: str, s3: S3Config) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and path for any input or output URI (lake or not)."""
    return fsspec.core.url_to_fs(uri, **storage_options(uri, s3))


def read_many(fs: fsspec.AbstractFileSystem, paths: list[str]) -> list[bytes | BaseException]:
    """Whole contents of each path, or the exception reading it raised.

    s3fs fetches the objects concurrently. ``cat_ranges`` takes paths literally,
    where ``cat`` would expand a name such as ``frame[1].jpg`` as a glob."""
    if not paths:
        return []
    return fs.cat_ranges(paths, None, None, on_error="return")


# Bumped each time this process publishes or removes table files, per lake URI:
# the shared DuckDB catalogs of mining.sql rebuild their views when it moved.
_generations: Counter[str] = Counter()


class Lake:
    """A lake rooted at ``uri``. Cheap to build; holds no open files."""

    def __init__(self, uri: str, s3: S3Config | None = None):
        self.s3 = s3 or S3Config()
        self.uri = uri.rstrip("/") or uri
        self.fs, self.root = open_url(self.uri, self.s3)
        self.root = self.root.rstrip("/")
        self.protocol = "s3" if is_s3(self.uri) else "file"

    @classmethod
    def from_config(cls, config: Config) -> Lake:
        return cls(config.lake, config.s3)

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    # -- paths ---------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """Filesystem path (no protocol) under the lake root."""
        return posixpath.join(self.root, *parts)

    def url(self, path: str) -> str:
        """Full URL of a filesystem path, as DuckDB and other tools need it."""
        return as_uri(path, like=self.uri)

    @property
    def prefix(self) -> str:
        """The lake's URL with a trailing slash: everything inside starts with it."""
        return self.url(self.root).rstrip("/") + "/"

    def contains(self, uri: str) -> bool:
        """Whether ``uri`` (a local path or s3:// URI) is the lake or inside it."""
        _, path = open_url(uri, self.s3)
        return (as_uri(path, like=uri).rstrip("/") + "/").startswith(self.prefix)

    def table_dir(self, table: Table | str) -> str:
        return self.path(_table(table).name)

    def table_files(self, table: Table | str) -> list[str]:
        """Published Parquet files of a table (filesystem paths), sorted."""
        directory = self.table_dir(table)
        if not self.fs.exists(directory):
            return []
        return sorted(p for p in self.fs.find(directory) if p.endswith(".parquet"))

    @property
    def generation(self) -> int:
        """How many times this process changed the lake's table files."""
        return _generations[self.uri]

    def mark_changed(self) -> None:
        """Say that table files were published or removed (ShardWriter.commit does)."""
        _generations[self.uri] += 1

    def has_files(self, table: Table | str) -> bool:
        """Whether a table has any published file; stops at the first one found, so
        it costs one listing, not a walk of the whole table."""
        for _, _, files in self.fs.walk(self.table_dir(table)):
            if any(name.endswith(".parquet") for name in files):
                return True
        return False

    def index_dir(self, backbone: str, weights: str) -> str:
        """Where the vector index over one (backbone, weights) embedding set lives."""
        return self.path(INDEX_DIR, backbone, weights)

    def marker_path(self, job: str, shard: str) -> str:
        return self.path(JOBS_DIR, job, f"{shard}.json")

    def read_marker(self, job: str, shard: str) -> dict[str, Any] | None:
        """The shard's marker: ``status`` is ``done`` once its files are all published."""
        path = self.marker_path(job, shard)
        try:
            # One whole-object read: a marker being rewritten is seen old or new, never torn.
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def discard_unfinished(self, job: str, shard_prefix: str) -> list[str]:
        """Undo the commits of ``job`` that a kill left half-way, for shards whose id
        starts with ``shard_prefix``: delete the files their ``committing`` marker
        lists, then the marker. Returns the shards undone.

        For jobs whose shards are not rerun under the same id (the embed job picks
        what is still missing), so that a half-published shard cannot count as done.
        Call it only for shards no other running process is writing."""
        markers = self.fs.glob(self.path(JOBS_DIR, job, f"{shard_prefix}*.json"))
        undone = []
        for path, content in zip(markers, read_many(self.fs, markers)):
            marker = {} if isinstance(content, BaseException) else json.loads(content)
            if marker.get("status") != "committing":
                continue
            for relative in marker.get("files", []):
                if self.fs.exists(self.path(relative)):
                    self.fs.rm(self.path(relative))
            self.fs.rm(path)
            undone.append(posixpath.basename(path).removesuffix(".json"))
        if undone:
            self.mark_changed()
        return undone

    # -- writing -------------------------------------------------------------
    def write_parquet(self, rows: pa.Table, path: str) -> None:
        parent = posixpath.dirname(path)
        if self.protocol == "file":
            self.fs.makedirs(parent, exist_ok=True)
        with self.fs.open(path, "wb") as f:
            pq.write_table(rows, f, compression="zstd")

    def write_atomic(self, path: str, data: bytes) -> None:
        """Replace a small file so that readers see the old or the new content, never
        a part: an S3 PUT is atomic; locally, write a temporary file and rename it."""
        if self.protocol != "file":
            self.fs.pipe_file(path, data)
            return
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)

    def shard_writer(self, job: str, shard: str) -> ShardWriter:
        return ShardWriter(self, job, shard)


class ShardWriter:
    """Stages the output files of one input shard, then publishes them together,
    replacing whatever an earlier run of the same shard published."""

    def __init__(self, lake: Lake, job: str, shard: str):
        self.lake, self.job, self.shard = lake, job, shard
        self.staging = lake.path(STAGING_DIR, job, shard)
        self._seq: dict[str, int] = defaultdict(int)
        self._staged: list[tuple[str, str]] = []  # (staged path, final relative path)
        self.rows_written: dict[str, int] = defaultdict(int)
        # A staging folder left by a killed run holds files of unknown completeness.
        if lake.fs.exists(self.staging):
            lake.fs.rm(self.staging, recursive=True)

    def write(self, table: Table, rows: pa.Table, partition_value: str | None = None) -> None:
        if rows.num_rows == 0:
            return
        if table.partition and partition_value is None:
            raise ValueError(f"table {table.name} is partitioned by {table.partition}: give partition_value")
        folder = table.name if not table.partition else f"{table.name}/{table.partition}={partition_value}"
        seq = self._seq[folder]
        self._seq[folder] += 1
        relative = f"{folder}/{self.shard}-{seq:05d}.parquet"
        staged = posixpath.join(self.staging, relative)
        self.lake.write_parquet(rows, staged)
        self._staged.append((staged, relative))
        self.rows_written[table.name] += rows.num_rows

    def commit(self, marker: dict[str, Any] | None = None) -> dict[str, Any]:
        """Publish the staged files and write the success marker; returns the marker.

        The marker lists the files a shard published, so replacing them needs no
        listing of the tables. Before anything moves it is rewritten as
        ``committing`` with the old and new files both listed: a commit killed half-way
        leaves a marker that is not ``done`` (so the shard is redone) and that names
        every file the redo must clean up."""
        fs = self.lake.fs
        new = sorted(relative for _, relative in self._staged)
        previous = self.lake.read_marker(self.job, self.shard) or {}
        old = set(previous.get("files", []))
        self._write_marker({"status": "committing", "files": sorted(old | set(new))})
        for relative in sorted(old - set(new)):
            if fs.exists(self.lake.path(relative)):
                fs.rm(self.lake.path(relative))
        for staged, relative in self._staged:
            final = self.lake.path(relative)
            if self.lake.protocol == "file":
                fs.makedirs(posixpath.dirname(final), exist_ok=True)
            fs.mv(staged, final)
        self.lake.mark_changed()
        record = {
            "job": self.job,
            "shard": self.shard,
            "status": "done",
            "files": new,
            "rows": dict(self.rows_written),
            "committed_at": datetime.now(UTC).isoformat(),
            **(marker or {}),
        }
        self._write_marker(record)
        if fs.exists(self.staging):
            fs.rm(self.staging, recursive=True)
        return record

    def _write_marker(self, record: dict[str, Any]) -> None:
        path = self.lake.marker_path(self.job, self.shard)
        self.lake.write_atomic(path, json.dumps(record, indent=1, sort_keys=True).encode())

    def abort(self) -> None:
        """Drop staged files: nothing of this shard is published."""
        if self.lake.fs.exists(self.staging):
            self.lake.fs.rm(self.staging, recursive=True)
        self._staged.clear()


def _table(table: Table | str) -> Table:
    if isinstance(table, Table):
        return table
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; tables: {sorted(TABLES)}") from None
