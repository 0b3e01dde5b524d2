"""SQL over the lake through DuckDB: one view per Delta table, local or S3 alike.

``LakeDB(lake)`` is a DuckDB connection where each table of mining.core.schema is a
view over ``delta_scan`` of the table (DuckDB's delta extension, loaded from the
``duckdb-extension-delta`` package by path: nothing is fetched from DuckDB's
server). The jobs write each key once, so a view is its table as it is; a table
whose history matters (``reviews``) shows the latest row per key, and
``raw.<table>`` every row. ``view_statements(lake)`` prints the same views for
any other DuckDB client. ``as_of`` pins tables to earlier versions (time travel).

A read-only LakeDB (the default; what the CLI, the UI and the library use) is
sandboxed twice. DuckDB's own settings: external access off except for the
lake's folder, configuration locked, spilling to a private folder. And every
statement is checked on DuckDB's parse tree before it runs: only SELECTs, naming
only the lake's views (or the query's own CTEs), calling no table function but
``range``, ``generate_series`` and ``unnest``. So a query can read the lake and
compute, but cannot write, attach, install, copy out, or read anything else:
not a file elsewhere, not even another Delta table's log or statistics.

Every database runs under the config's ``[query]`` limits (mining.core.query_limits):
memory, spill size, a private spill folder; a read-only LakeDB's statements also stop at the
time limit or on Ctrl-C (QueryError, KeyboardInterrupt), and ``head`` fetches no more rows
than it shows.

Read-only LakeDBs share one in-memory database per lake (and limits) within a process, each
with its own cursor (DuckDB cursors are safe to use from one thread each).
Views are made the first time a query names their table, so `SELECT 1` reads
no Delta log; a view follows its table's new commits by itself, and a table that
did not exist when its view was made gets its real view once it does.

Start-up: this module imports DuckDB, but neither pyarrow nor the schemas
(mining.core.schema) until a query names a table or returns Arrow: ``head_rows`` gives a
small result of plain columns as DuckDB's own Python rows, so `edgemine sql "SELECT 1"`
costs about what DuckDB alone does.
"""

from __future__ import annotations

import atexit
import importlib.resources
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import urlparse

import duckdb

from mining.core import query_limits
from mining.core.config import Config, QueryConfig
from mining.core.errors import LakeError, QueryError, QueryLimitError, ReadOnlyError
from mining.core.lake import Lake

if TYPE_CHECKING:
    import pyarrow as pa

    from mining.core.schema import Table

log = logging.getLogger(__name__)
T = TypeVar("T")

READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT}
SAFE_TABLE_FUNCTIONS = {"range", "generate_series", "unnest"}
_EXPLAIN = re.compile(r"^\s*EXPLAIN(\s+ANALYZE)?\s+", re.IGNORECASE)
# DuckDB's types whose Python values are the same as Arrow's to_pylist() gives: a result of
# only these is fetched as DuckDB's rows by head_rows (no pyarrow); TIMESTAMPTZ, for one, is not
# (DuckDB would need pytz), nor DECIMAL, MAP, UUID, nested types.
PLAIN_TYPES = frozenset({"BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
                         "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "VARCHAR"})
RECHECK_MISSING_S = 1.0  # how often a view over a missing table looks for it again (on S3, a request)
# A first query over the views: the UI's SQL page starts with it.
EXAMPLE_QUERY = """SELECT image_id, label, confidence, camera
FROM predictions
WHERE confidence < 0.5
ORDER BY confidence
LIMIT 100"""

# Views over other views, not tables: name -> (the tables they read, their SELECT).
# User SQL may name them like a table's view; they are made once the views they read are.
LABELLED_SQL = """
WITH newest AS (
    SELECT * FROM labels QUALIFY labelled_at = max(labelled_at) OVER (PARTITION BY image_id)
), labelled AS (
    SELECT image_id, mode(label ORDER BY label) AS label, list(DISTINCT label ORDER BY label) AS labels,
           list(box ORDER BY label, box) FILTER (box IS NOT NULL) AS boxes, count(box)::INTEGER AS box_count,
           min(annotator) AS annotator, min(batch) AS batch, max(labelled_at) AS labelled_at
    FROM newest GROUP BY image_id
), predicted AS (
    SELECT image_id, model_version, arg_max(label, ts) AS predicted_label, arg_max(confidence, ts) AS confidence,
           max(ts) AS predicted_at
    FROM predictions GROUP BY image_id, model_version
)
SELECT l.image_id, l.label, l.labels, l.boxes, l.box_count, l.annotator, l.batch, l.labelled_at,
       p.model_version, p.predicted_label, p.confidence, p.predicted_at,
       p.predicted_label IS NOT NULL AND list_contains(l.labels, p.predicted_label) AS agrees
FROM labelled l LEFT JOIN predicted p USING (image_id)
"""
DERIVED_VIEWS: dict[str, tuple[tuple[str, ...], str]] = {
    "labelled": (("labels", "predictions"), LABELLED_SQL),
}


class Head(NamedTuple):
    """The first rows of a result (``LakeDB.head``), and whether it had more."""

    table: pa.Table
    cut: bool


class Rows(NamedTuple):
    """The first rows of a result as Python values (``LakeDB.head_rows``): its column names, one
    tuple per row, and whether it had more."""

    names: list[str]
    rows: list[tuple]
    cut: bool

    def to_pylist(self) -> list[dict[str, Any]]:
        """One dict per row, as Arrow's ``Table.to_pylist`` gives it."""
        return [dict(zip(self.names, row)) for row in self.rows]


class LakeDB:
    """A DuckDB connection with a view per lake table.

    Read-only (the default): a cursor on the process's shared, sandboxed database
    for this lake. Writable (the ingest jobs join their inputs against the lake),
    with its own ``threads``, pinned to table versions (``as_of``: table name ->
    version, None for a table that did not exist then; mining.core.tables.resolve_as_of),
    or ``private`` (read-only and sandboxed, but fresh: it sees every table as it is now):
    a database of its own. ``config``'s ``[query]`` limits apply (the defaults without one)."""

    def __init__(self, lake: Lake, *, read_only: bool = True, threads: int | None = None, config: Config | None = None,
                 as_of: Mapping[str, int] | None = None, private: bool = False):
        self.lake = lake
        self.read_only = read_only
        self.config = config  # the settings it was opened with (mining.open_lake), for the library's defaults
        self.as_of = dict(as_of or {})
        self.limits = config.query if config is not None else QueryConfig()
        if read_only and threads is None and not self.as_of and not private:
            self._catalog = _catalog_for(lake, self.limits)
        else:
            self._catalog = _Catalog(lake, self.limits, sandboxed=read_only, threads=threads, as_of=self.as_of)
            if not read_only:
                from mining.core.schema import TABLES

                self._catalog.ensure(TABLES)  # jobs' own statements (CREATE TEMP TABLE ...) are not parsed
        self.con = self._catalog.cursor()

    def query(self, sql: str, params: list | dict | None = None) -> pa.Table:
        """Run ``sql`` and return the result as an Arrow table.

        On a read-only LakeDB the statement is checked first (ReadOnlyError for
        anything but a SELECT over the lake's views), and SQL that DuckDB refuses
        (a syntax error, an unknown column) raises QueryError with DuckDB's message, as does
        a statement stopped at ``[query] timeout_s``; Ctrl-C stops it (KeyboardInterrupt)."""
        return self._run(sql, params, lambda result: result.to_arrow_table())

    def head(self, sql: str, max_rows: int | None = None) -> Head:
        """The first ``max_rows`` rows of ``sql``'s result (default ``[query] max_rows``), and
        whether there were more: fetched in batches, so a huge result is never held whole."""
        max_rows = self.limits.max_rows if max_rows is None else max_rows
        return self._run(sql, None, lambda result: _arrow_head(result, max_rows))

    def head_rows(self, sql: str, max_rows: int | None = None) -> Rows:
        """``head``'s rows as Python values, the same values: a result whose columns are all of
        PLAIN_TYPES (numbers, text, booleans) is fetched as DuckDB's rows, without pyarrow (a
        command's start-up); any other through Arrow."""
        max_rows = self.limits.max_rows if max_rows is None else max_rows

        def first_rows(result: duckdb.DuckDBPyConnection) -> Rows:
            names = [column[0] for column in result.description]
            if all(str(column[1]) in PLAIN_TYPES for column in result.description):
                rows = result.fetchmany(max_rows + 1)
                return Rows(names, rows[:max_rows], len(rows) > max_rows)
            table, cut = _arrow_head(result, max_rows)
            return Rows(names, list(zip(*(column.to_pylist() for column in table.columns))), cut)

        return self._run(sql, None, first_rows)

    def batches(self, sql: str, consume: Callable[[pa.RecordBatchReader], T]) -> T:
        """``consume(reader)``'s answer, ``reader`` yielding ``sql``'s result batch by batch (to write
        a result of any size); under the time limit, which counts ``consume``'s time too."""
        return self._run(sql, None, lambda result: consume(result.to_arrow_reader(100_000)))

    def _run(self, sql: str, params: list | dict | None, fetch: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        if not self.read_only:
            return fetch(self._execute(sql, params))
        tables = self.check_read_only(sql)
        self._catalog.ensure(tables)
        try:
            return query_limits.run(self.con, lambda: fetch(self._execute(sql, params)), self.limits.timeout_s)
        except duckdb.PermissionException as e:
            raise QueryError(f"Refused by DuckDB's sandbox: {e}. Queries read the lake only; "
                             "to change it, use the edgemine jobs") from None
        except duckdb.OutOfMemoryException as e:
            first = str(e).splitlines()[0].rstrip(".")
            raise QueryLimitError(f"DuckDB: {first}. The query needs more memory or spill space than [query] "
                                  "memory_limit and max_temp_directory_size allow: narrow it, or raise them in "
                                  "the config") from None
        except duckdb.Error as e:
            raise QueryError(f"DuckDB: {_first_line(e)}") from None

    def _execute(self, sql: str, params: list | dict | None) -> duckdb.DuckDBPyConnection:
        # execute(), not the relation API (con.sql): a relation's fetch does not stop on an interrupt.
        # No parameters unless given: binding any makes DuckDB import pandas (a second).
        return self.con.execute(sql, params) if params is not None else self.con.execute(sql)

    def check_read_only(self, sql: str) -> set[str]:
        """Refuse what a read-only connection must not run (ReadOnlyError); returns the
        lake tables the statement reads."""
        if "\x00" in sql:
            raise QueryError("the query holds a NUL character (\\x00); remove it")
        try:
            statements = self.con.extract_statements(sql)
        except duckdb.Error as e:
            raise QueryError(f"DuckDB: {_first_line(e)}") from None
        tables: set[str] = set()
        for statement in statements:
            query = statement.query
            if statement.type == duckdb.StatementType.EXPLAIN:  # a plan of a SELECT: check the SELECT
                query = _EXPLAIN.sub("", query, count=1)
                kinds = [s.type for s in self.con.extract_statements(query)]
            else:
                kinds = [statement.type]
            if any(kind not in READ_ONLY_STATEMENTS for kind in kinds):
                kind = str(statement.type).rsplit(".", 1)[-1]
                raise ReadOnlyError(
                    f"{kind} statements are refused: the lake is read-only from here. "
                    "Only SELECT queries run (WITH, FROM, DESCRIBE, SUMMARIZE, EXPLAIN included); "
                    "to change the lake, use the edgemine jobs."
                )
            tables |= self._catalog.tables_read(query)
        return tables

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> LakeDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class _View:
    """A view made: over its table (``real``), or empty because the table was missing then."""

    real: bool
    generation: int  # the lake's generation when it was made
    checked: float  # time.monotonic() then

    def due(self, lake: Lake) -> bool:
        """Whether a missing table should be looked for again."""
        return lake.generation != self.generation or time.monotonic() - self.checked >= RECHECK_MISSING_S


def _arrow_head(result: duckdb.DuckDBPyConnection, max_rows: int) -> Head:
    """The first ``max_rows`` rows of an executed statement as an Arrow table, fetched in batches."""
    import pyarrow as pa

    reader = result.to_arrow_reader(min(max(max_rows, 1), 100_000))
    batches, rows = [], 0
    for batch in reader:
        batches.append(batch)
        rows += batch.num_rows
        if rows > max_rows:
            break
    table = pa.Table.from_batches(batches, reader.schema)
    return Head(table.slice(0, max_rows), table.num_rows > max_rows)


class _Catalog:
    """One in-memory DuckDB database with a lake's views, made as queries need them."""

    def __init__(self, lake: Lake, limits: QueryConfig, *, sandboxed: bool = True, threads: int | None = None,
                 as_of: Mapping[str, int] | None = None):
        self.lake, self.as_of = lake, dict(as_of or {})
        # Spill to a private folder, not DuckDB's default (.tmp in the working folder), which
        # would otherwise count as allowed for reading.
        self._spill = query_limits.spill_folder()
        self.con = connect(lake, threads=threads, limits=limits, spill=self._spill)
        self.con.execute("CREATE SCHEMA IF NOT EXISTS raw")
        self.views: dict[str, _View] = {}
        self._lock = threading.Lock()
        if sandboxed:
            self._lock_down()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self.con.cursor()

    def tables_read(self, sql: str) -> set[str]:
        """The lake tables a SELECT reads; ReadOnlyError for anything else it names
        or calls (a file, another table, a table function)."""
        with self._lock:
            tree = json.loads(self.con.execute(f"SELECT json_serialize_sql({quote_literal(sql)})").fetchone()[0])
        if tree.get("error"):
            return set()  # DuckDB reports the syntax error itself when the query runs
        refs, functions, ctes = _references(tree)
        if not refs and not functions:
            return set()  # reads no table (SELECT 1): nor imports the schemas, nor pyarrow
        from mining.core.schema import TABLES

        refused = sorted(functions - SAFE_TABLE_FUNCTIONS)
        if refused:
            raise ReadOnlyError(f"table functions are refused ({', '.join(refused)}): queries read the lake's views "
                                f"only ({', '.join(TABLES)}); `edgemine sql --views` prints them for any DuckDB client")
        tables = set()
        for schema, name in refs:
            unqualified = schema in ("", "main")
            if unqualified and name in ctes:
                continue
            if (unqualified and name in TABLES) or (schema == "raw" and name in TABLES and TABLES[name].latest_by):
                tables.add(name)
                continue
            if unqualified and name in DERIVED_VIEWS:  # ensure() makes it once the views it reads are made
                tables.update(DERIVED_VIEWS[name][0])
                continue
            raise ReadOnlyError(f"{(schema + '.') if schema else ''}{name} is not a view of this lake: queries read "
                                f"{', '.join([*TABLES, *DERIVED_VIEWS])} (and raw.reviews, every decision)")
        return tables

    def ensure(self, names: Iterable[str]) -> None:
        """Make the views of these tables, or make again those made while their table was
        missing once it may exist: this process created a table since, or RECHECK_MISSING_S passed."""
        with self._lock:
            for name in names:
                made = self.views.get(name)
                if made is not None and (made.real or not made.due(self.lake)):
                    continue
                from mining.core.schema import TABLES

                pinned = self.as_of.get(name, -1)
                real = _table_exists(self.lake, TABLES[name]) if pinned == -1 else pinned is not None
                if made is None or real:
                    try:
                        for statement in view_sql(self.lake, TABLES[name], exists=real, version=self.as_of.get(name)):
                            self.con.execute(statement)
                    except duckdb.Error as e:
                        _explain_unreadable(self.lake, name, self.as_of.get(name), e)
                self.views[name] = _View(real, self.lake.generation, time.monotonic())
            for name, (reads, select) in DERIVED_VIEWS.items():
                # Over the views, not the tables: made once, it follows them as they are made again.
                if name not in self.views and all(r in self.views for r in reads):
                    self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {select}")
                    self.views[name] = _View(True, self.lake.generation, time.monotonic())

    def _lock_down(self) -> None:
        # The limits (connect) were set before: locked from here on, with the rest.
        self.con.execute(f"SET allowed_directories = [{quote_literal(self.lake.prefix)}]")
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET autoinstall_known_extensions = false")
        self.con.execute("SET autoload_known_extensions = false")
        self.con.execute("SET lock_configuration = true")

    def __del__(self) -> None:
        if self._spill:
            shutil.rmtree(self._spill, ignore_errors=True)


def connect(lake: Lake, *, threads: int | None = None, limits: QueryConfig | None = None,
            spill: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB database that reads the lake's storage: time zone UTC, the delta
    extension, and for S3 httpfs with the lake's credentials; under ``limits``' memory and spill
    size (the defaults without), spilling into ``spill`` (a new folder of this process's without).
    No views, no sandbox."""
    # The extensions are the pinned PyPI packages' files; DuckDB's check of their
    # signatures hashes all 100 MB of them on every start (0.5 s of `edgemine sql`).
    config: dict[str, Any] = {"allow_unsigned_extensions": "true"}
    if threads:
        config["threads"] = threads
    con = duckdb.connect(config=config)
    settings = query_limits.database_settings(limits or QueryConfig(), spill or query_limits.spill_folder())
    for name, value in settings.items():
        # Literals, not parameters: binding any Python parameter makes DuckDB import pandas (a second).
        con.execute(f"SET GLOBAL {name} = {quote_literal(value)}")
    con.execute("SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: cursors on the database inherit it
    con.execute(f"LOAD {quote_literal(extension_path('delta'))}")
    if lake.protocol == "s3":
        con.execute(f"LOAD {quote_literal(extension_path('httpfs'))}")
        con.execute(_secret_sql(lake, redact=False))
    return con


_CATALOGS: dict[tuple, _Catalog] = {}
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


@atexit.register
def _close_catalogs() -> None:
    """Close the shared databases before the interpreter tears itself down: left to the
    garbage collector then, DuckDB's worker threads were sometimes destroyed unjoined
    and the process aborted at exit ("terminate called without an active exception")."""
    for catalog in _CATALOGS.values():
        catalog.con.close()
    _CATALOGS.clear()


def _catalog_for(lake: Lake, limits: QueryConfig) -> _Catalog:
    key = (lake.uri, lake.s3, limits.memory_limit, limits.max_temp_directory_size)
    with _catalogs_lock:
        catalog = _CATALOGS.pop(key, None) or _Catalog(lake, limits)
        _CATALOGS[key] = catalog  # re-inserted: the dict's order is least recently used first
        while len(_CATALOGS) > _CATALOGS_KEPT:
            _CATALOGS.pop(next(iter(_CATALOGS)))
        return catalog


def _references(node: Any, refs=None, functions=None, ctes=None) -> tuple[set, set, set]:
    """(schema, name) of every table, the table functions and the CTE names in a parse tree."""
    refs = set() if refs is None else refs
    functions = set() if functions is None else functions
    ctes = set() if ctes is None else ctes
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE":
            refs.add((node.get("schema_name") or "", node.get("table_name", "")))
        elif node.get("type") == "TABLE_FUNCTION":
            functions.add((node.get("function") or {}).get("function_name", "?"))
        for entry in (node.get("cte_map") or {}).get("map", []):
            ctes.add(entry.get("key"))
        for value in node.values():
            _references(value, refs, functions, ctes)
    elif isinstance(node, list):
        for value in node:
            _references(value, refs, functions, ctes)
    return refs, functions, ctes


def _explain_unreadable(lake: Lake, name: str, version: int | None, error: duckdb.Error) -> None:
    """A table DuckDB cannot read: deltalake's reason when it has one (a damaged log, a
    newer protocol, a missing version), else DuckDB's, always naming the table."""
    from mining.core.tables import open_table

    open_table(lake, name, version)  # raises LakeError saying what is wrong, if it sees it too
    raise LakeError(f"table {name} cannot be read: {str(error).splitlines()[0]}") from None


def _table_exists(lake: Lake, table: Table) -> bool:
    from mining.core.tables import exists

    if exists(lake, table):
        return True
    # Only this table's folder is looked at (one request on S3): checking every table for
    # each missing one cost seconds per query on object storage.
    if lake.in_old_layout(table):
        lake.check_layout()  # an old-layout table says what to run, rather than looking empty
    return False


def view_sql(lake: Lake, table: Table, *, exists: bool, version: int | None = None) -> list[str]:
    """The statements that make ``table``'s view (and ``raw.<table>`` for history tables)."""
    source = _scan_sql(lake, table, version) if exists else _empty_select(table)
    if not table.latest_by:
        return [f"CREATE OR REPLACE VIEW {table.name} AS {source}"]
    key = ", ".join(table.key)
    return [f"CREATE OR REPLACE VIEW raw.{table.name} AS {source}",
            f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM raw.{table.name} "
            f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {table.latest_by} DESC) = 1"]


def view_statements(lake: Lake) -> str:
    """SQL that recreates the lake's views in any DuckDB client."""
    from mining.core.schema import TABLES
    from mining.core.tables import exists

    lines = [f"-- edgemine lake {lake.uri}", "SET TimeZone = 'UTC';",
             "-- the delta extension: `INSTALL delta;` where DuckDB can reach its extension server,",
             f"-- or load the file from the duckdb-extension-delta package: LOAD '{extension_path('delta')}';",
             "INSTALL delta;", "LOAD delta;"]
    if lake.protocol == "s3":
        lines += ["-- httpfs, likewise (duckdb-extension-httpfs):", "INSTALL httpfs;", "LOAD httpfs;",
                  _secret_sql(lake, redact=True) + ";"]
    lines.append("CREATE SCHEMA IF NOT EXISTS raw;")
    for table in TABLES.values():
        lines += [s + ";" for s in view_sql(lake, table, exists=exists(lake, table))]
    for name, (_, select) in DERIVED_VIEWS.items():
        lines.append(f"CREATE OR REPLACE VIEW {name} AS {select.strip()};")
    return "\n".join(lines) + "\n"


def extension_path(name: str) -> str:
    """The DuckDB extension ``name`` (delta, httpfs) shipped by the duckdb-extension-NAME
    package for this DuckDB, loaded by path so nothing is fetched from DuckDB's server."""
    root = importlib.resources.files(f"duckdb_extension_{name}") / "extensions" / f"v{duckdb.__version__}"
    path = root / f"{name}.duckdb_extension"
    if not path.is_file():
        raise RuntimeError(
            f"the {name} extension for DuckDB {duckdb.__version__} is not at {path}; "
            f"install the matching package: pip install duckdb-extension-{name}=={duckdb.__version__}"
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


def _scan_sql(lake: Lake, table: Table, version: int | None) -> str:
    from mining.core.tables import table_uri

    args = quote_literal(table_uri(lake, table)) + (f", version => {int(version)}" if version is not None else "")
    # The embeddings view keeps the vector a list (FLOAT[]) as Delta stores it: backbones differ
    # in width, so no one array type fits every row; list_cosine_similarity and friends take it.
    return f"SELECT * FROM delta_scan({args})"


def _empty_select(table: Table) -> str:
    columns = [f"CAST(NULL AS {duckdb_type(f.type)}) AS {f.name}" for f in table.schema]
    # Printed by --views too: say why the view is empty, and that it will not follow new files.
    note = f"/* {table.name} has no data yet: recreate the views once it has */ "
    return f"{note}SELECT {', '.join(columns)} WHERE false"


def duckdb_type(t: pa.DataType) -> str:
    """DuckDB's name for the Arrow types the schemas use."""
    import pyarrow as pa

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


def _first_line(error: BaseException) -> str:
    """DuckDB's message without the query excerpt and caret it appends on later lines: errors
    are one line (the CLI's contract)."""
    return (str(error).strip().splitlines() or [""])[0]


def quote_literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """A SQL identifier, whatever characters the name has."""
    return '"' + name.replace('"', '""') + '"'
