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
"""

from __future__ import annotations

import importlib.resources
import logging
from urllib.parse import urlparse

import duckdb
import pyarrow as pa

from mining.lake import Lake
from mining.schema import EMBEDDING_DIM, TABLES, Table

log = logging.getLogger(__name__)

READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT}


class ReadOnlyError(PermissionError):
    """A statement that would change something was refused on a read-only connection."""


class LakeDB:
    """A DuckDB connection with a view per lake table."""

    def __init__(self, lake: Lake, *, read_only: bool = True, threads: int | None = None):
        self.lake = lake
        self.read_only = read_only
        self.con = duckdb.connect(config={"threads": threads} if threads else {})
        self.con.execute("SET TimeZone = 'UTC'")
        if lake.protocol == "s3":
            self.con.execute(f"LOAD '{httpfs_extension_path()}'")
            self.con.execute(_secret_sql(lake, redact=False))
        for statement in _view_sql(lake):
            self.con.execute(statement)
        if read_only:
            self._lock_down()

    def _lock_down(self) -> None:
        self.con.execute("SET allowed_directories = $1", [[self.lake.prefix]])
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET autoinstall_known_extensions = false")
        self.con.execute("SET lock_configuration = true")

    def query(self, sql: str, params: list | dict | None = None) -> pa.Table:
        """Run ``sql`` and return the result as an Arrow table.

        On a read-only LakeDB, any statement that is not a SELECT is refused
        before it runs, with ReadOnlyError."""
        if self.read_only:
            self.check_read_only(sql)
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
    lines += [s + ";" for s in _view_sql(lake)]
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


def _view_sql(lake: Lake) -> list[str]:
    statements = ["CREATE SCHEMA IF NOT EXISTS raw"]
    for table in TABLES.values():
        source = _source_sql(lake, table)
        statements.append(f"CREATE OR REPLACE VIEW raw.{table.name} AS {source}")
        statements.append(f"CREATE OR REPLACE VIEW {table.name} AS {_dedup_sql(table)}")
    return statements


def _source_sql(lake: Lake, table: Table) -> str:
    if not lake.has_files(table):
        return _empty_select(table)
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
