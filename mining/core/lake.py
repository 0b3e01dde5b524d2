"""The lake on storage: where each table and each job's state live.

A lake is a URI, a local folder or ``s3://bucket/prefix``. The filesystem is
resolved once with ``fsspec.core.url_to_fs`` and every read and write of files
that are not tables goes through it, so jobs behave the same on both.

Layout (relative to the lake root)::

    <table>/                 a Delta table: Parquet files and _delta_log/ (mining.core.tables writes them)
    predictions/date=YYYY-MM-DD/...   partitioned tables keep one folder per day
    _jobs/<job>/<shard>.json what a job finished with one input (an input file's size and ETag, say),
                             so a rerun skips what is done; written after the shard's commits
    _index/<backbone>/<weights>/  the vector index: current.json -> <version>/ files (mining.search.index_store)
    _index/_objects/<backbone>/<weights>/  the same over the object embeddings (detection boxes)
    _models/<version>/       a trained classifier: model.pt, model.json (mining.evaluation.models;
                             the models row makes it visible)
    _models/_staging/<version>/  a training run's per-epoch checkpoints, until the model is published
    sources/                 raw inputs the demo generates
    _cards/<version>.md      model cards (mining.evaluation.cards), beside the metrics table

A lake written before tables were Delta tables (Parquet folders without a
``_delta_log``) is refused with what to run: `edgemine migrate`.

Importing this module imports neither pyarrow nor the schemas (mining.core.schema, which
does): a command that reads no table, `edgemine sql "SELECT 1"`, starts without them.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import threading
from collections import Counter
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mining.core.config import Config, S3Config
from mining.core.errors import InputError, LakeError, command

if TYPE_CHECKING:
    import fsspec
    import pyarrow as pa

    from mining.core.schema import Table

log = logging.getLogger(__name__)

JOBS_DIR = "_jobs"
INDEX_DIR = "_index"
OBJECTS_INDEX = "_objects"  # _index/_objects/<backbone>/<weights>/: no backbone name starts with "_"
MODELS_DIR = "_models"  # not models/: that folder is the models Delta table
SOURCES_DIR = "sources"
DELTA_LOG = "_delta_log"
# delta-rs names its data files part-<5 digits>-<writer uuid>-c000[.<codec>].parquet.
_DELTA_DATA_FILE = re.compile(r"part-\d{5}-[0-9a-fA-F-]{36}-c000(\.\w+)?\.parquet$")


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def as_uri(path: str, *, like: str) -> str:
    """A filesystem path (no protocol) back as a URI on the same storage as ``like``."""
    return f"s3://{path}" if is_s3(like) else path


def path_of(uri: str) -> str:
    """The filesystem path (no protocol) of a URI, as fsspec names files."""
    return uri.removeprefix("s3://").removeprefix("s3a://")


def fsspec_options(uri: str, s3: S3Config) -> dict[str, Any]:
    """fsspec's (s3fs's) options for ``uri``; delta-rs takes its own, ``delta_options``: the two
    S3 clients are configured here, from the same ``[s3]`` settings.
    Only what is set is passed, so s3fs/botocore still find credentials the standard way.
    The region stays out of ``client_kwargs``: botocore takes it from the environment, and
    S3-compatible servers refuse bucket creation with a location constraint they do not expect."""
    if not is_s3(uri):
        return {}
    # Other processes write the same lake: a cached listing would hide their files.
    options: dict[str, Any] = {"use_listings_cache": False}
    # botocore retries throttling (503 SlowDown), 5xx, resets and timeouts with exponential
    # backoff and full jitter; s3fs adds a few tries of its own on top for connection errors.
    options["config_kwargs"] = {"retries": {"mode": s3.retry_mode, "max_attempts": s3.max_attempts},
                                "connect_timeout": s3.connect_timeout_s, "read_timeout": s3.read_timeout_s}
    options |= _credentials(s3, "key", "secret", "token")
    if s3.endpoint_url:
        options["client_kwargs"] = {"endpoint_url": s3.endpoint_url}
    return options


def _credentials(s3: S3Config, key: str, secret: str, token: str) -> dict[str, str]:
    """The credentials set in ``[s3]`` under a client's names for them; none set: none passed."""
    return {name: value for name, value in ((key, s3.key), (secret, s3.secret), (token, s3.session_token)) if value}


def delta_options(uri: str, s3: S3Config) -> dict[str, str]:
    """delta-rs's ``storage_options`` for ``uri`` (object_store's keys): only what is set, so the
    standard AWS variables and files still supply the rest. S3-compatible stores get path-style
    URLs, plain HTTP when the endpoint says so, and ETag-conditional commits.

    Other engines reading through delta-rs (Polars) take these too; edgemine's own calls add
    ``delta_retry_options``."""
    if not is_s3(uri):
        return {}
    options = {
        "conditional_put": "etag",
        "AWS_REGION": s3.region or "us-east-1",
        "timeout": f"{round(s3.read_timeout_s * 1000)}ms",
        "connect_timeout": f"{round(s3.connect_timeout_s * 1000)}ms",
    }
    options |= _credentials(s3, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    if s3.endpoint_url:
        options["AWS_ENDPOINT_URL"] = s3.endpoint_url
        options["AWS_FORCE_PATH_STYLE"] = "true"
        if urlparse(s3.endpoint_url).scheme == "http":
            options["AWS_ALLOW_HTTP"] = "true"
    return options


def delta_retry_options(uri: str, s3: S3Config) -> dict[str, str]:
    """delta-rs's retry options (object_store's ``RetryConfig``; Polars names its own
    ``max_retries`` differently typed, so they stay out of ``delta_options``).

    object_store retries 5xx (503 SlowDown included), 429 and connections that failed before the
    request was sent, with exponential backoff and jitter; a request cut off after it was sent
    is not retried there (a commit may have landed): mining.core.tables resolves that one."""
    return {"max_retries": str(s3.max_attempts - 1)} if is_s3(uri) else {}


def open_url(uri: str, s3: S3Config) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and path for any input or output URI (lake or not)."""
    import fsspec  # a tenth of a second: commands that touch no file (edgemine sql "SELECT 1") skip it

    return fsspec.core.url_to_fs(uri, **fsspec_options(uri, s3))


_SYSTEM_FOLDERS = ("/proc", "/sys", "/dev", "/run")


def walkable(uri: str, s3: S3Config) -> tuple[fsspec.AbstractFileSystem, str]:
    """``open_url`` for a folder a job is about to walk through whole: InputError for one
    it must not, a bucket's root not named (s3fs would list every bucket), the file system's
    root or a system folder (/proc, /sys, /dev: endless or device files, nobody's data)."""
    fs, path = open_url(uri, s3)
    if is_s3(uri):
        if not path.strip("/"):
            raise InputError(f"{uri}: name a bucket and a path (s3://BUCKET/PATH)")
        return fs, path
    real = os.path.realpath(path)
    if real == "/" or any(real == f or real.startswith(f + "/") for f in _SYSTEM_FOLDERS):
        raise InputError(f"{uri}: {'the root of the file system' if real == '/' else 'a system folder'} holds no "
                         "input of a job; give the folder of the files")
    return fs, path


def read_many(fs: fsspec.AbstractFileSystem, paths: list[str]) -> list[bytes | BaseException]:
    """Whole contents of each path, or the exception reading it raised.

    s3fs fetches the objects concurrently. ``cat_ranges`` takes paths literally,
    where ``cat`` would expand a name such as ``frame[1].jpg`` as a glob. The range
    ``0-`` makes it one GET per object: without a range s3fs first asks each object's
    size (a HEAD, to split large objects), doubling the requests for every image."""
    if not paths:
        return []
    got = fs.cat_ranges(paths, 0, None, on_error="return")
    # S3 answers 416 to ``bytes=0-`` on an empty object: that object is empty, not unreadable.
    return [b"" if isinstance(g, OSError) and "range is not satisfiable" in str(g).lower() else g for g in got]


# Bumped each time this process creates a table, per lake URI: the shared DuckDB
# catalogs of mining.core.sql make their views again when it moved.
_generations: Counter[str] = Counter()


class Lake:
    """A lake rooted at ``uri``. Cheap to build; holds no open files."""

    def __init__(self, uri: str, s3: S3Config | None = None):
        self.s3 = s3 or S3Config()
        self.uri = uri.rstrip("/") or uri
        self.protocol = "s3" if is_s3(self.uri) else "file"
        # As fsspec names it: bucket/prefix on S3, an absolute path here.
        local = self.uri.removeprefix("file://")
        self.root = (path_of(self.uri) if self.protocol == "s3" else os.path.abspath(os.path.expanduser(local))).rstrip(
            "/"
        ) or "/"

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The lake's filesystem, made on first use."""
        return open_url(self.uri, self.s3)[0]

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
        """Whether ``uri`` (a local path or s3:// URI) is the lake or inside it; a local path
        by where it really leads (symlinks resolved, even when its last part does not exist yet)."""
        return self._real(uri).startswith(self._real(self.uri))

    def folder_of(self, uri: str) -> str | None:
        """The lake's top folder ``uri`` lies in (a table's, ``_jobs``, ``sources``...), or None
        when it is not inside the lake (symlinks resolved)."""
        real, lake = self._real(uri), self._real(self.uri)
        return real[len(lake):].split("/", 1)[0] if real.startswith(lake) else None

    def overlaps(self, uri: str) -> bool:
        """Whether writing under the folder ``uri`` could touch the lake: it is the lake, inside
        it, or holds it (symlinks resolved)."""
        folder, lake = self._real(uri), self._real(self.uri)
        return folder.startswith(lake) or lake.startswith(folder)

    def _real(self, uri: str) -> str:
        """``uri`` as a URL ending in a slash, a local one at its real path."""
        _, path = open_url(uri, self.s3)
        if not is_s3(uri):
            path = os.path.realpath(path)
        return as_uri(path, like=uri).rstrip("/") + "/"

    def table_dir(self, table: Table | str) -> str:
        from mining.core.schema import table_named

        return self.path(table_named(table).name)

    @property
    def generation(self) -> int:
        """How many times this process created a table in this lake."""
        return _generations[self.uri]

    def mark_changed(self) -> None:
        """Say that the lake's set of tables changed (mining.core.tables does, on a table's first commit)."""
        _generations[self.uri] += 1

    def in_old_layout(self, table: Table | str) -> bool:
        """Whether the table is still in the layout before Delta (Parquet files, no _delta_log)."""
        folder = self.table_dir(table)
        if not self.fs.exists(folder) or self.fs.exists(posixpath.join(folder, DELTA_LOG)):
            return False
        # A Delta table's first writer puts its data files down before its first commit: a
        # concurrent reader sees them without a _delta_log. Those are named by delta-rs's rule.
        return any(p.endswith(".parquet") and not _DELTA_DATA_FILE.match(posixpath.basename(p))
                   for p in self.fs.find(folder))

    def old_layout_tables(self) -> list[str]:
        """Tables still in the layout before Delta."""
        from mining.core.schema import TABLES

        return [name for name in TABLES if self.in_old_layout(name)]

    def check_layout(self) -> None:
        """Raise LakeError if the lake was written in the layout before Delta tables."""
        old = self.old_layout_tables()
        if old:
            migrate = command("migrate", "--lake", self.uri)
            raise LakeError(f"the lake {self.uri} holds tables in the old layout (Parquet folders without a "
                            f"_delta_log: {', '.join(old)}); convert it once with `{migrate}`")

    def index_dir(self, backbone: str, weights: str, objects: bool = False) -> str:
        """Where the vector index over one (backbone, weights) embedding set lives; ``objects``:
        the index of its object embeddings (detection boxes), beside the images' one."""
        if objects:
            return self.path(INDEX_DIR, OBJECTS_INDEX, backbone, weights)
        return self.path(INDEX_DIR, backbone, weights)

    def model_dir(self, version: str) -> str:
        """Where a published model's files live (mining.evaluation.models)."""
        return self.path(MODELS_DIR, version)

    def model_staging_dir(self, version: str) -> str:
        """Where a training run keeps its epoch checkpoints until it publishes the model."""
        return self.path(MODELS_DIR, "_staging", version)

    def marker_path(self, job: str, shard: str) -> str:
        return self.path(JOBS_DIR, job, f"{shard}.json")

    def read_marker(self, job: str, shard: str) -> dict[str, Any] | None:
        """What ``job`` recorded when it finished ``shard``, or None."""
        try:
            # One whole-object read: a marker being rewritten is seen old or new, never torn.
            return json.loads(self.fs.cat_file(self.marker_path(job, shard)))
        except FileNotFoundError:
            return None

    def write_marker(self, job: str, shard: str, record: dict[str, Any]) -> None:
        """Record that ``job`` finished ``shard`` (after its commits: a kill before this redoes the shard)."""
        self.write_atomic(self.marker_path(job, shard), json.dumps(record, indent=1, sort_keys=True).encode())

    # -- writing files that are not tables -------------------------------------
    def write_parquet(self, rows: pa.Table, path: str) -> None:
        import pyarrow.parquet as pq

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
        # A name of this process and thread: two threads replacing the same file (two index syncs
        # at once in the UI's server) would otherwise rename each other's temporary file away.
        temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
