"""SQL over the lake through DuckDB: one view per table, local or S3 alike.

``LakeDB(lake)`` opens an in-memory DuckDB connection with the views;
``view_statements(lake)`` gives the same ``CREATE VIEW`` text for any other
DuckDB client. Views that the schema gives a dedup key show one row per key
(the latest written wins); ``raw.<table>`` shows every stored row.

A read-only LakeDB (the default; what the CLI and UI use) is sandboxed by
DuckDB itself: external access is off except for the lake's own folder, the
configuration is locked, and only SELECT statements (as DuckDB's parser types
them) run. So a query can read the lake and compute, but cannot write, attach,
install, copy out, or read files elsewhere.

Building the views costs tens of milliseconds (DuckDB binds each one, reading
Parquet footers), which a UI action that opens the lake several times would pay
each time. So read-only LakeDBs share one in-memory database per lake within a
process, each using its own cursor (a connection to the same catalog; DuckDB
cursors are safe to use from one thread each). The views read their folders at
query time, so new files show up by themselves; the database is rebuilt only when
the views themselves must change: this process published or removed table files
(``Lake.generation``), or a table that had no files when it was built has some now.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import threading
import time
from urllib.parse import urlparse

import duckdb
import pyarrow as pa

from mining.config import Config, S3Config
from mining.errors import QueryError, ReadOnlyError
from mining.lake import Lake
from mining.schema import EMBEDDING_DIM, TABLES, Table

log = logging.getLogger(__name__)

READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT}


class LakeDB:
    """A DuckDB connection with a view per lake table.

    Read-only (the default): a cursor on the process's shared, locked-down
    database for this lake. Writable, or with its own ``threads``: a database of
    its own (the ingest jobs join their inputs against the lake with it)."""

    def __init__(self, lake: Lake, *, read_only: bool = True, threads: int | None = None, config: Config | None = None):
        self.lake = lake
        self.read_only = read_only
        self.config = config  # the settings it was opened with (mining.open_lake), for the library's defaults
        if read_only and threads is None:
            self._catalog = _catalog_for(lake)
            self.con = self._catalog.cursor()
            return
        self._catalog = None
        self.con = duckdb.connect(config={"threads": threads} if threads else {})
        _create_views(self.con, lake)
        if read_only:
            _lock_down(self.con, lake)

    @property
    def stale(self) -> bool:
        """Whether a LakeDB opened now would see views this one lacks."""
        return self._catalog is not None and _catalog_for(self.lake) is not self._catalog

    def _follow_catalog(self) -> None:
        """Move this LakeDB's cursor to the current shared database when the views changed
        (a write through this connection, say), so a caller holding one LakeDB sees what it wrote."""
        if self._catalog is None:
            return
        catalog = _catalog_for(self.lake)
        if catalog is not self._catalog:
            self.con.close()
            self._catalog, self.con = catalog, catalog.cursor()

    def query(self, sql: str, params: list | dict | None = None) -> pa.Table:
        """Run ``sql`` and return the result as an Arrow table.

        On a read-only LakeDB, any statement that is not a SELECT is refused
        before it runs, with ReadOnlyError; SQL that DuckDB refuses (a syntax
        error, an unknown column, a file outside the lake) raises QueryError with
        DuckDB's message."""
        if not self.read_only:
            return self._run(sql, params)
        self._follow_catalog()
        self.check_read_only(sql)
        try:
            return self._run(sql, params)
        except duckdb.PermissionException as e:
            raise QueryError(f"Refused by DuckDB's sandbox: {e}. Queries read the lake only; "
                             "to change it, use the edgemine jobs") from None
        except duckdb.Error as e:
            raise QueryError(f"DuckDB: {e}") from None

    def _run(self, sql: str, params: list | dict | None) -> pa.Table:
        result = self.con.execute(sql, params) if params is not None else self.con.sql(sql)
        if result is None:
            return pa.table({})
        return result.to_arrow_table()

    def check_read_only(self, sql: str) -> None:
        try:
            statements = self.con.extract_statements(sql)
        except duckdb.Error:
            return  # let execution report the syntax error with DuckDB's own message
        for statement in statements:
            if statement.type not in READ_ONLY_STATEMENTS:
                kind = str(statement.type).rsplit(".", 1)[-1]
                raise ReadOnlyError(
                    f"{kind} statements are refused: the lake is read-only from here. "
                    "Only SELECT queries run (WITH, FROM, DESCRIBE, SUMMARIZE included); "
                    "to change the lake, use the edgemine jobs."
                )

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> LakeDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Catalog:
    """One in-memory DuckDB database with a lake's views, shared by the process's read-only LakeDBs."""

    def __init__(self, lake: Lake):
        self.generation = lake.generation  # read first: a change during the build makes it stale
        self.con = duckdb.connect()
        self.empty = _create_views(self.con, lake)
        _lock_down(self.con, lake)
        self._lock = threading.Lock()
        self._checked = time.monotonic()

    def current(self, lake: Lake) -> bool:
        """False once this process changed the lake's files, or another gave an empty table its first file
        (looked for at most every RECHECK_EMPTY_S: on S3 each look is a listing per empty table)."""
        if lake.generation != self.generation:
            return False
        if self.empty and time.monotonic() - self._checked >= RECHECK_EMPTY_S:
            self._checked = time.monotonic()
            return not any(lake.has_files(t) for t in self.empty)
        return True

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self.con.cursor()


RECHECK_EMPTY_S = 1.0
_CATALOGS: dict[tuple[str, S3Config], _Catalog] = {}
_CATALOGS_KEPT = 8  # lakes a process keeps open at once; the oldest is dropped (tests open hundreds)
_catalogs_lock = threading.Lock()


def _forget_catalogs_after_fork() -> None:
    """A forked child (DataLoader or pool worker) builds its own databases: the
    inherited ones lost their threads in the fork. They stay referenced, never freed,
    since freeing one would wait on those threads."""
    global _CATALOGS, _catalogs_lock
    _INHERITED.append(_CATALOGS)
    _CATALOGS, _catalogs_lock = {}, threading.Lock()


_INHERITED: list[dict] = []
os.register_at_fork(after_in_child=_forget_catalogs_after_fork)


def _catalog_for(lake: Lake) -> _Catalog:
    key = (lake.uri, lake.s3)
    with _catalogs_lock:
        catalog = _CATALOGS.pop(key, None)
        if catalog is None or not catalog.current(lake):
            # The old database is never closed here: LakeDBs still using it keep it
            # alive (closing it would close their cursors), and it goes when they do.
            catalog = _Catalog(lake)
        _CATALOGS[key] = catalog  # re-inserted: the dict's order is least recently used first
        while len(_CATALOGS) > _CATALOGS_KEPT:
            _CATALOGS.pop(next(iter(_CATALOGS)))
        return catalog


def _create_views(con: duckdb.DuckDBPyConnection, lake: Lake) -> list[str]:
    """Set ``con`` up for the lake (time zone, S3 access, views); returns the tables without files."""
    con.execute("SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: cursors on the database inherit it
    if lake.protocol == "s3":
        con.execute(f"LOAD '{httpfs_extension_path()}'")
        con.execute(_secret_sql(lake, redact=False))
    statements, empty = _view_sql(lake)
    for statement in statements:
        con.execute(statement)
    return empty


def _lock_down(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    con.execute("SET allowed_directories = $1", [[lake.prefix]])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET lock_configuration = true")


def view_statements(lake: Lake) -> str:
    """SQL that recreates the lake's views in any DuckDB client."""
    lines = [f"-- edgemine lake {lake.uri}", "SET TimeZone = 'UTC';"]
    if lake.protocol == "s3":
        lines += [
            "-- httpfs: `INSTALL httpfs;` where DuckDB can reach its extension server,",
            f"-- or load the file from the duckdb-extension-httpfs package: LOAD '{httpfs_extension_path()}';",
            "LOAD httpfs;",
            _secret_sql(lake, redact=True) + ";",
        ]
    lines += [s + ";" for s in _view_sql(lake)[0]]
    return "\n".join(lines) + "\n"


def httpfs_extension_path() -> str:
    """The httpfs extension shipped by the duckdb-extension-httpfs package for this DuckDB.

    Loaded by path so nothing is fetched from DuckDB's extension server."""
    root = importlib.resources.files("duckdb_extension_httpfs") / "extensions" / f"v{duckdb.__version__}"
    path = root / "httpfs.duckdb_extension"
    if not path.is_file():
        raise RuntimeError(
            f"httpfs extension for DuckDB {duckdb.__version__} not found at {path}; "
            f"install the matching package: pip install duckdb-extension-httpfs=={duckdb.__version__}"
        )
    return str(path)


def _secret_sql(lake: Lake, *, redact: bool) -> str:
    s3 = lake.s3
    parts = ["TYPE s3"]
    if redact:
        parts += ["KEY_ID '<AWS_ACCESS_KEY_ID>'", "SECRET '<AWS_SECRET_ACCESS_KEY>'"]
    else:
        if s3.key:
            parts.append(f"KEY_ID {quote_literal(s3.key)}")
        if s3.secret:
            parts.append(f"SECRET {quote_literal(s3.secret)}")
        if s3.session_token:
            parts.append(f"SESSION_TOKEN {quote_literal(s3.session_token)}")
    parts.append(f"REGION {quote_literal(s3.region or 'us-east-1')}")
    if s3.endpoint_url:
        endpoint = urlparse(s3.endpoint_url)
        parts.append(f"ENDPOINT {quote_literal(endpoint.netloc or endpoint.path)}")
        parts.append("URL_STYLE 'path'")
        parts.append(f"USE_SSL {'false' if endpoint.scheme == 'http' else 'true'}")
    return f"CREATE OR REPLACE SECRET edgemine_s3 ({', '.join(parts)})"


def _view_sql(lake: Lake) -> tuple[list[str], list[str]]:
    """The statements that create the views, and the tables that have no files yet."""
    statements, empty = ["CREATE SCHEMA IF NOT EXISTS raw"], []
    for table in TABLES.values():
        if lake.has_files(table):
            source = _source_sql(lake, table)
        else:
            source = _empty_select(table)
            empty.append(table.name)
        statements.append(f"CREATE OR REPLACE VIEW raw.{table.name} AS {source}")
        statements.append(f"CREATE OR REPLACE VIEW {table.name} AS {_dedup_sql(table)}")
    return statements, empty


def _source_sql(lake: Lake, table: Table) -> str:
    pattern = lake.url(lake.table_dir(table)) + "/**/*.parquet"
    options = ["union_by_name = true"]
    if table.partition:
        options.append("hive_partitioning = true")
    select = "*"
    if table.name == "embeddings":
        # Parquet keeps the fixed size as metadata DuckDB does not read back: restore
        # it so array_cosine_similarity and friends accept the column.
        select = f"* REPLACE (embedding::FLOAT[{EMBEDDING_DIM}] AS embedding)"
    return f"SELECT {select} FROM read_parquet({quote_literal(pattern)}, {', '.join(options)})"


def view_where(name: str, where: str) -> str:
    """The view ``name`` restricted by ``where``, filtered *before* deduplication.

    The same rows as ``SELECT * FROM name WHERE ...`` when ``where`` reads only
    columns that are constant within a dedup key (``image_id`` of predictions,
    thumbnails, embeddings), and far faster on a big lake: DuckDB cannot push a
    filter below the view's window, which otherwise runs over the whole table.
    """
    return _dedup_sql(TABLES[name], where)


def _dedup_sql(table: Table, where: str | None = None) -> str:
    source = f"raw.{table.name}" + (f" WHERE ({where})" if where else "")
    if table.latest_group:
        group = ", ".join(table.latest_group)
        return f"SELECT * FROM {source} QUALIFY created_at = max(created_at) OVER (PARTITION BY {group})"
    if not table.dedup_key:
        return f"SELECT * FROM {source}"
    key = ", ".join(table.dedup_key)
    return f"SELECT * FROM {source} QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {table.dedup_order}) = 1"


def _empty_select(table: Table) -> str:
    columns = [f"CAST(NULL AS {duckdb_type(f.type)}) AS {f.name}" for f in table.schema]
    if table.partition:
        columns.append(f"CAST(NULL AS DATE) AS {table.partition}")
    # Printed by --views too: say why the view is empty, and that it will not follow new files.
    note = f"/* {table.name} has no files yet: recreate the views once it has */ "
    return f"{note}SELECT {', '.join(columns)} WHERE false"


def duckdb_type(t: pa.DataType) -> str:
    """DuckDB's name for the Arrow types the schemas use."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_map(t):
        return f"MAP({duckdb_type(t.key_type)}, {duckdb_type(t.item_type)})"
    if pa.types.is_fixed_size_list(t):
        return f"{duckdb_type(t.value_type)}[{t.list_size}]"
    if pa.types.is_list(t):
        return f"{duckdb_type(t.value_type)}[]"
    simple = {
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.bool_(): "BOOLEAN",
        pa.binary(): "BLOB",
        pa.date32(): "DATE",
    }
    if t in simple:
        return simple[t]
    raise TypeError(f"no DuckDB type mapped for Arrow type {t}")


def quote_literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """A SQL identifier, whatever characters the name has."""
    return '"' + name.replace('"', '""') + '"'
