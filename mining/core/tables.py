"""The lake's tables are Delta Lake tables, and this module is the one that writes them.

A table lives at ``<lake>/<name>/``: Parquet files and a ``_delta_log``, written by
deltalake (delta-rs, no JVM) on a folder or on S3, and read by DuckDB's delta
extension (mining.core.sql), Spark, Polars or Ray alike. Each write below is one Delta
transaction: readers see all of it or none of it, and a writer killed mid-way
leaves only files no commit references, which ``vacuum`` removes.

- ``append``: add rows. Blind appends from many writers at once all land.
- ``replace``: delete the rows a predicate selects and add new ones, together
  (a named set saved again, the error rows of one input file).
- ``upsert``: MERGE on the table's key, within the partitions the rows fall in: a
  row whose key is there replaces it, the others are added. A rerun, or two
  input files carrying the same prediction, leave one row per key; the cost
  grows with the partitions touched, not with the table.
- ``insert_new``: add only the rows whose key is not there yet (an image
  registered again, a narrowing step whose number another writer took).
- ``overwrite``: the rows become the whole table.
- ``delete``: remove the rows a predicate selects.

Concurrent writers: locally delta-rs commits with an atomic rename, on S3 with
conditional writes (``conditional_put: etag``), so two writers never both take
the same version. A writer that loses retries when the changes do not conflict
(appends); ``replace`` and ``upsert`` are idempotent and are redone on a
conflict, a few times, before the error reaches the user.

Exactly once on S3: a commit whose answer was lost (a connection cut after the PUT, a 500
for a write S3 applied) may have landed. Each write carries a Delta ``txn`` of its own
(``Writer``): delta-rs's retry stops at it instead of committing again, and ``_retry`` asks
the table whether the write is there before redoing it (docs/LAKE.md, "S3 retries").
Every commit records the job, the user and what it was about in its commit info
(``edgemine history TABLE``).

deltalake is imported by the functions that need it, not with this module: a
command that only reads (`edgemine sql`, a search by image id) starts without it.
"""

from __future__ import annotations

import itertools
import logging
import os
import posixpath
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from mining.core.errors import InputError, LakeError
from mining.core.lake import DELTA_LOG, Lake, delta_options, delta_retry_options
from mining.core.schema import Table, storable_type, table_named, unstorable_fields

if TYPE_CHECKING:
    from deltalake import DeltaTable

# What a commit records beside the operation (commit_info): job, user, about what.
Commit = dict[str, str]
_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 5  # a conflicting concurrent commit or a failed one: redo the write this many times at most
WRITE_KEY = "edgemine.write"  # commit info: which write this commit is (Writer)
LANDED_SEARCH = 100  # commits searched, newest first, for a write that landed
TARGET_FILE_BYTES = 128 * 2**20  # what compaction aims for: large enough to read fast, small enough to prune


def delta_storage_options(lake: Lake) -> dict[str, str]:
    """delta-rs's ``storage_options`` for the lake, as other engines take them too
    (``mining.core.lake.delta_options``)."""
    return delta_options(lake.uri, lake.s3)


def _storage(lake: Lake) -> dict[str, str]:
    """The options edgemine's own delta-rs calls take: the lake's, and its retries."""
    return delta_options(lake.uri, lake.s3) | delta_retry_options(lake.uri, lake.s3)


def table_uri(lake: Lake, table: Table | str) -> str:
    """The table's URI as Delta readers take it: a local path or ``s3://bucket/key``."""
    return lake.url(lake.table_dir(table_named(table)))


def exists(lake: Lake, table: Table | str) -> bool:
    """Whether the table has a first commit. Asked of the storage (fsspec), not of delta-rs:
    its runtime cannot run in a forked process (DataLoader and pool workers)."""
    return lake.fs.exists(posixpath.join(lake.table_dir(table_named(table)), DELTA_LOG))


def open_table(lake: Lake, table: Table | str, version: int | None = None) -> DeltaTable:
    """The table (at ``version``, default the latest), as delta-rs reads it.

    Raises LakeError naming the table: it has no commit yet, its log is corrupt, or
    it needs a newer Delta reader than this one."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, DeltaProtocolError, TableNotFoundError

    name = table_named(table).name
    try:
        return DeltaTable(table_uri(lake, name), version=version, storage_options=_storage(lake))
    except TableNotFoundError:
        raise LakeError(f"table {name} has no data yet in {lake.uri}") from None
    except (DeltaProtocolError, DeltaError) as e:
        reason = str(e).splitlines()[0]  # delta-rs appends a backtrace
        if isinstance(e, DeltaProtocolError) or "Unsupported" in reason:
            raise LakeError(f"table {name} was written by a newer Delta Lake writer than edgemine's "
                            f"deltalake can read ({reason}); upgrade edgemine") from None
        if version is not None and "version" in reason.lower():
            raise LakeError(f"table {name} has no version {version}: see `edgemine history {name}`") from None
        raise LakeError(f"table {name} cannot be read: its Delta log is damaged ({reason}); "
                        "restore its _delta_log folder from a backup") from None


def version(lake: Lake, table: Table | str) -> int | None:
    """The table's latest version, None before its first commit: the highest commit file in
    its log (one listing, as Delta readers find it; no log replay)."""
    log_dir = posixpath.join(lake.table_dir(table_named(table)), DELTA_LOG)
    try:
        names = lake.fs.ls(log_dir, detail=False)
    except FileNotFoundError:
        return None
    versions = [int(m[1]) for n in names if (m := _COMMIT_FILE.match(posixpath.basename(n)))]
    return max(versions) if versions else None


def commit_info(job: str, user: str | None = None, **detail: Any) -> Commit:
    """What a commit records beside the operation: the job, who ran it, and about what."""
    metadata = {"edgemine.job": job, **{f"edgemine.{k}": str(v) for k, v in detail.items() if v is not None}}
    if user:
        metadata["edgemine.user"] = user
    return metadata


class Writer:
    """Who commits: one application id per writing thread of a process, and a number per write
    that only grows. A write's commit carries both as a Delta ``txn`` action (the table then
    knows the latest number it took from that id) and in its commit info, so:

    - delta-rs, retrying a commit whose answer was lost, finds its own ``txn`` in the version it
      took and stops with a conflict instead of committing the same rows again at the next one;
    - ``landed`` then tells whether that write is in the table, and which commit it is.

    Writes from one thread are one after the other, so the table's number for the id reaching
    the write's number means that very write landed. A table's snapshot keeps one small ``txn``
    entry per thread that ever wrote it (each with its time, so a table given
    ``delta.setTransactionRetentionDuration`` forgets old ones)."""

    _numbers = itertools.count(1)
    _ids: dict[tuple[int, int], str] = {}

    def __init__(self, info: Commit):
        key = (os.getpid(), threading.get_ident())
        self.app_id = Writer._ids.get(key) or Writer._ids.setdefault(key, f"edgemine-{uuid.uuid4().hex}")
        self.number = next(Writer._numbers)
        self.info = {**info, WRITE_KEY: f"{self.app_id}/{self.number}"}

    def properties(self, *, creates: bool = False):
        """The CommitProperties each attempt of this write commits with. A write that creates the
        table gets no commit retries from delta-rs: finding version 0 taken, it would commit again
        at version 1 without a conflict check, even when version 0 is its own (an answer lost);
        ``_retry`` asks the table instead."""
        from deltalake import CommitProperties, Transaction

        now_ms = int(time.time() * 1000)
        return CommitProperties(custom_metadata=self.info, max_commit_retries=0 if creates else None,
                                app_transactions=[Transaction(self.app_id, self.number, now_ms)])

    def landed(self, lake: Lake, table: Table) -> dict[str, Any] | None:
        """This write's commit (its history entry) if it is in the table, else None."""
        if not exists(lake, table):
            return None
        delta = open_table(lake, table)
        if (delta.transaction_version(self.app_id) or 0) < self.number:
            return None
        for entry in delta.history(LANDED_SEARCH):
            if entry.get(WRITE_KEY) == self.info[WRITE_KEY]:
                return entry
        return {"version": delta.version()}  # further back than searched: landed all the same


def append(lake: Lake, table: Table, rows: pa.Table, info: Commit) -> int | None:
    """Add ``rows`` (the table's schema; extra columns where the table allows them);
    returns the new version, or None when there was nothing to add."""
    if rows.num_rows == 0:
        return None
    # Retried: two first writers of a table race to create it, and the loser's commit fails
    # (metadata changed) without landing; its rows then go in as an append to the new table.
    return _retry(lake, table, info, lambda writer: _write(lake, table, rows, writer, mode="append"))


def replace(lake: Lake, table: Table, rows: pa.Table, where: str, info: Commit) -> int | None:
    """Delete the rows ``where`` selects (a SQL predicate, e.g. ``name = 'glare'``) and
    add ``rows``, in one transaction; returns the new version (None: nothing changed)."""
    if not exists(lake, table):
        return append(lake, table, rows, info)
    if rows.num_rows == 0:
        return delete(lake, table, where, info)
    return _retry(lake, table, info,
                  lambda writer: _write(lake, table, rows, writer, mode="overwrite", predicate=where))


def upsert(lake: Lake, table: Table, rows: pa.Table, info: Commit) -> int | None:
    """MERGE ``rows`` on the table's key: matching rows are replaced, the others added.

    The partition column is part of the match, so only the partitions the rows fall
    in are read. Returns the new version (None: nothing to write)."""
    if not table.key:
        raise ValueError(f"table {table.name} has no key to merge on")
    if rows.num_rows == 0:
        return None
    if not exists(lake, table):
        return append(lake, table, rows, info)
    keys = [*table.key, *([table.partition] if table.partition else [])]
    on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    rows = one_row_per_key(rows, keys, keep="last")

    def merge(writer: Writer) -> int:
        delta = open_table(lake, table)
        source = _as_stored(rows, delta, table)
        _check_storable(source, table)
        # streamed_exec=False: the source (one chunk of rows) is held in memory, which
        # measured 5x faster than streaming it through the join (0.29 s vs 1.56 s per 100k rows).
        delta.merge(
            source,
            on,
            source_alias="s",
            target_alias="t",
            merge_schema=table.extra_columns,
            streamed_exec=False,
            commit_properties=writer.properties(),
        ).when_matched_update_all().when_not_matched_insert_all().execute()
        return delta.version()

    return _retry(lake, table, info, merge)


def one_row_per_key(rows: pa.Table, keys: Sequence[str], *, keep: str) -> pa.Table:
    """``rows`` with one row per key, the ``first`` or ``last`` of each in their order.

    Why: a MERGE fails when two source rows match one target row, and inserts both when
    none does; an input may repeat a row (a prediction sent twice), and then the later
    one wins, as a later file's would."""
    if rows.num_rows < 2:
        return rows
    numbered = rows.select(list(keys)).append_column("_row", pa.array(range(rows.num_rows), pa.int64()))
    how = "max" if keep == "last" else "min"
    kept = numbered.group_by(list(keys), use_threads=False).aggregate([("_row", how)]).column(f"_row_{how}")
    if len(kept) == rows.num_rows:
        return rows
    log.info("%d of %d rows repeat a key of an earlier row; the %s of each is kept", rows.num_rows - len(kept),
             rows.num_rows, keep)
    return rows.take(np.sort(kept.to_numpy()))


def insert_new(lake: Lake, table: Table, rows: pa.Table, info: Commit) -> int:
    """Add the rows whose key the table does not have yet (MERGE, insert only); returns how
    many were added. Two writers adding the same key at once: one adds it, the other finds it."""
    if rows.num_rows == 0:
        return 0
    keys = [*table.key, *([table.partition] if table.partition else [])]
    rows = one_row_per_key(rows, keys, keep="first")
    if not exists(lake, table):
        append(lake, table, rows, info)
        return rows.num_rows
    on = " AND ".join(f"t.{k} = s.{k}" for k in keys)

    def merge(writer: Writer) -> int:
        metrics = open_table(lake, table).merge(
            rows, on, source_alias="s", target_alias="t", merge_schema=table.extra_columns, streamed_exec=False,
            commit_properties=writer.properties()).when_not_matched_insert_all().execute()
        return int(metrics.get("num_target_rows_inserted", 0))

    # A merge whose answer was lost: how many it inserted is in its commit's metrics.
    return _retry(lake, table, info, merge,
                  landed=lambda c: _metric(c.get("operationMetrics") or {}, "num_target_rows_inserted") or 0)


def overwrite(lake: Lake, table: Table, rows: pa.Table, info: Commit) -> int:
    """Make ``rows`` the whole table (the demo's ground truth, a migrated table); returns the new version."""
    # schema_mode="overwrite": the whole table is replaced, so is its schema (a column added since).
    return _retry(lake, table, info,
                  lambda writer: _write(lake, table, rows, writer, mode="overwrite", schema_mode="overwrite"))


def delete(lake: Lake, table: Table, where: str, info: Commit) -> int | None:
    """Remove the rows ``where`` selects; returns the new version (None: the table does not exist)."""
    if not exists(lake, table):
        return None

    def remove(writer: Writer) -> int:
        delta = open_table(lake, table)
        delta.delete(where, commit_properties=writer.properties())
        return delta.version()

    return _retry(lake, table, info, remove)


def history(lake: Lake, table: Table | str, limit: int | None = None) -> list[dict[str, Any]]:
    """The table's commits, newest first: version, when, operation, rows added and
    removed, and edgemine's commit info (job, user, what about)."""
    commits = []
    for entry in open_table(lake, table).history(limit):
        metrics = entry.get("operationMetrics") or {}
        commits.append({
            "version": entry.get("version"),
            "at": entry.get("timestamp"),
            "operation": entry.get("operation"),
            "rows_added": _metric(metrics, "num_added_rows", "num_target_rows_inserted", "numOutputRows"),
            "rows_updated": _metric(metrics, "num_target_rows_updated", "num_updated_rows"),
            "rows_removed": _metric(metrics, "num_deleted_rows", "num_target_rows_deleted"),
            "files_added": _metric(metrics, "num_added_files", "num_target_files_added"),
            "files_removed": _metric(metrics, "num_removed_files", "num_target_files_removed"),
            "job": entry.get("edgemine.job"),
            "user": entry.get("edgemine.user"),
            "detail": {k.removeprefix("edgemine."): v for k, v in entry.items()
                       if k.startswith("edgemine.") and k not in ("edgemine.job", "edgemine.user", WRITE_KEY)},
        })
    return commits


def version_at(lake: Lake, table: Table | str, when: datetime) -> int | None:
    """The table's latest version committed at or before ``when`` (None: it had none yet)."""
    if not exists(lake, table):
        return None
    found = None
    for entry in open_table(lake, table).history():
        at = datetime.fromtimestamp(entry["timestamp"] / 1000, UTC)
        if at <= when and (found is None or entry["version"] > found):
            found = entry["version"]
    return found


_VERSION = re.compile(r"[0-9]{1,18}")  # a table version: ASCII digits that fit delta-rs's int64


def resolve_as_of(lake: Lake, spec: str, tables_read: Iterable[str]) -> dict[str, int | None]:
    """Table versions for ``spec``, as `edgemine sql --as-of` takes it:

    - a time (ISO 8601, ``2026-11-20T10:00:00Z``; no zone means UTC): every table as it was then;
    - ``TABLE@VERSION[,TABLE@VERSION...]``: those tables at those versions, the others as they are;
    - a bare ``VERSION``: the one table the query reads at that version.

    Raises LakeError for anything else, or a bare version when the query reads several tables."""
    spec = spec.strip()
    read = sorted(set(tables_read))
    if _VERSION.fullmatch(spec):
        if len(read) != 1:
            raise LakeError(f"--as-of {spec}: the query reads {', '.join(read) or 'no table'}; give TABLE@VERSION "
                            "for each (e.g. predictions@12,images@3), or a time (2026-11-20T10:00:00Z)")
        return {read[0]: int(spec)}
    if "@" in spec:
        pinned = {}
        for part in spec.split(","):
            name, _, number = part.strip().partition("@")
            if not _VERSION.fullmatch(number):
                raise LakeError(f"--as-of {part!r}: expected TABLE@VERSION, e.g. predictions@12")
            pinned[table_named(name).name] = int(number)
        return pinned
    try:
        when = datetime.fromisoformat(spec.replace("Z", "+00:00"))
    except ValueError:
        raise LakeError(f"--as-of {spec!r}: give a time (2026-11-20T10:00:00Z), TABLE@VERSION, or a version number "
                        "when the query reads one table; `edgemine history TABLE` lists the versions") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return {name: version_at(lake, name, when) for name in read}


def files(lake: Lake, table: Table | str) -> pa.Table:
    """The table's data files now: path (relative to the table), size_bytes, num_records,
    and one column per partition value (``partition.date``)."""
    return open_table(lake, table).get_add_actions(flatten=True)


def compact(lake: Lake, table: Table, info: Commit, *, z_order: Sequence[str] = (),
            partitions: Sequence[str] | None = None, target_bytes: int = TARGET_FILE_BYTES) -> dict[str, Any]:
    """Rewrite small files into few of about ``target_bytes`` (bin-packing), optionally
    clustered by ``z_order`` columns so filters on them skip more files; only in the given
    ``partitions`` (values of the partition column) when given. Readers are not disturbed:
    the old files stay until ``vacuum``. Returns delta-rs's metrics (files added, removed)."""
    optimizer = open_table(lake, table).optimize
    filters = [(table.partition, "in", list(partitions))] if partitions and table.partition else None
    def optimize(writer: Writer) -> dict[str, Any]:
        if z_order:
            return optimizer.z_order(list(z_order), partition_filters=filters, target_size=target_bytes,
                                     commit_properties=writer.properties())
        return optimizer.compact(partition_filters=filters, target_size=target_bytes,
                                 commit_properties=writer.properties())

    return _retry(lake, table, info, optimize, landed=lambda c: c.get("operationMetrics") or {})


def vacuum(lake: Lake, table: Table, retention_hours: int) -> list[str]:
    """Delete data files no version younger than ``retention_hours`` needs (those compaction
    and deletes left) and files older than that no commit references (what killed writers
    left); returns them. Time travel to versions before that is then gone."""
    # full: list the folder, so files a killed writer left (in no commit at all) go too.
    return open_table(lake, table).vacuum(retention_hours, dry_run=False, enforce_retention_duration=False, full=True)


def _write(lake: Lake, table: Table, rows: pa.Table, writer: Writer, **how: Any) -> int:
    from deltalake import write_deltalake

    created = not exists(lake, table)
    if created and lake.in_old_layout(table):  # never start a Delta table among the old layout's files
        lake.check_layout()
    if not created and table.extra_columns and set(rows.column_names) - set(table.schema.names):
        rows = _as_stored(rows, open_table(lake, table), table)
    _check_storable(rows, table)
    write_deltalake(table_uri(lake, table), rows, partition_by=[table.partition] if table.partition else None,
                    schema_mode=how.pop("schema_mode", "merge" if table.extra_columns else None),
                    storage_options=_storage(lake), commit_properties=writer.properties(creates=created),
                    **how)
    if created:
        lake.mark_changed()  # a new table: views made before it existed must be made again
    return version(lake, table)


def _as_stored(rows: pa.Table, delta: DeltaTable, table: Table) -> pa.Table:
    """``rows`` whose extra columns the table already has, cast to the stored types. delta-rs
    would cast on its own, unsafely (1.5 stored as 1) or failing midway ('abc' as a long):
    here a value that does not fit is refused (InputError, nothing written), naming the field."""
    if not table.extra_columns:
        return rows
    stored = {f.name.lower(): f for f in pa.schema(delta.schema().to_arrow())}
    for i, name in enumerate(rows.column_names):
        field = stored.get(name.lower())
        if table.schema.get_field_index(name) != -1 or field is None:
            continue
        target = storable_type(field.type)
        if field.name == name and rows.schema.field(i).type == target:
            continue
        try:
            column = rows.column(i).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise InputError(f"field {name!r} cannot go into table {table.name}'s column {field.name!r} ({target}): "
                             f"{str(e).splitlines()[0]}; rename the field in the input, or give it {target} values"
                             ) from None
        rows = rows.set_column(i, field.name, column)
    return rows


def _check_storable(rows: pa.Table, table: Table) -> None:
    """The last guard before a commit: a column whose type would make the table unreadable
    (or readable only by readers that know a table feature) is never committed."""
    bad = unstorable_fields(rows.schema)
    if bad:
        raise LakeError(f"refused before committing to table {table.name}: column(s) {', '.join(bad)} would make "
                        "the table unreadable to Delta readers; nothing was written (a bug in the writer: please "
                        "report it)")


def _retry(lake: Lake, table: Table, info: Commit, write: Callable[[Writer], Any],
           landed: Callable[[dict[str, Any]], Any] = lambda commit: commit["version"]) -> Any:
    """Run ``write`` (given the Writer whose properties it commits with) until it lands, exactly once.

    After a conflicting concurrent commit, or an S3 error the storage client did not retry
    (a connection cut after the request was sent, a timeout), the write may have landed all
    the same: the table is asked first, and a write found there is done (``landed`` makes
    its result from its commit). Otherwise it is redone, with backoff and jitter."""
    from deltalake.exceptions import CommitFailedError

    writer = Writer(info)
    for attempt in range(1, CONFLICT_RETRIES + 1):
        try:
            return write(writer)
        except CommitFailedError as e:
            why, error = "a concurrent commit conflicted", e
        except OSError as e:  # object_store's errors: the request failed, or its answer was lost
            if isinstance(e, FileNotFoundError):
                raise
            why, error = "the storage failed", e
        commit = writer.landed(lake, table)
        if commit is not None:
            lake.mark_changed()  # it may have been the table's first commit
            log.info("table %s: the commit landed as version %s though %s (%s)", table.name, commit.get("version"),
                     why, _first_line(error))
            return landed(commit)
        if attempt == CONFLICT_RETRIES:
            if isinstance(error, CommitFailedError):
                raise LakeError(f"table {table.name}: another writer kept changing the same rows "
                                f"({CONFLICT_RETRIES} tries: {_first_line(error)}); run the job again") from None
            raise LakeError(f"table {table.name}: the storage kept failing ({CONFLICT_RETRIES} tries: "
                            f"{_first_line(error)}); nothing was written, run the job again") from None
        log.info("table %s: %s (%s); redoing the write (try %d)", table.name, why, _first_line(error), attempt + 1)
        time.sleep(random.uniform(0.5, 1.5) * 0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _metric(metrics: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        if metrics.get(name) is not None:
            return int(metrics[name])
    return None
