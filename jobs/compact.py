"""`edgemine compact [TABLE...]`: fewer, larger files, then the old ones deleted.

Hourly ingests and per-part embedding commits leave many small files; every query
opens each. Per table: Delta's optimize bin-packs them into files of about
128 MB (mining.core.tables.TARGET_FILE_BYTES), optionally clustered by ``--z-order``
columns, then vacuum deletes the files no version younger than
``--vacuum-hours`` needs. Reported per table: files and megabytes before and
after, and the time of ``SELECT count(*)`` over it before and after.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from jobs.progress import Progress
from mining.core import tables
from mining.core.lake import Lake
from mining.core.schema import TABLES, table_named
from mining.core.sql import LakeDB
from mining.core.summary import Summary

JOB = "compact"


@dataclass
class TableCompaction:
    table: str
    files_before: int = 0
    files_after: int = 0
    mb_before: float = 0.0
    mb_after: float = 0.0
    vacuumed: int = 0
    query_s_before: float = 0.0
    query_s_after: float = 0.0


@dataclass
class CompactSummary(Summary):
    job: str = JOB
    tables: list[TableCompaction] = field(default_factory=list)


def compact_lake(
    lake: Lake,
    names: Sequence[str] | None = None,
    *,
    z_order: Sequence[str] = (),
    vacuum_hours: int = 168,
    user: str | None = None,
    show_progress: bool = True,
) -> CompactSummary:
    """Compact and vacuum ``names`` (default: every table that has data)."""
    started = time.monotonic()
    chosen = [table_named(n) for n in names] if names else [t for t in TABLES.values() if tables.exists(lake, t)]
    summary = CompactSummary()
    progress = Progress("compact", total=len(chosen), unit="tables", enabled=show_progress)
    for table in chosen:
        report = TableCompaction(table.name)
        report.files_before, report.mb_before = _files(lake, table.name)
        report.query_s_before = _count_seconds(lake, table.name)
        tables.compact(lake, table, tables.commit_info(JOB, user, z_order=",".join(z_order) or None), z_order=z_order)
        report.vacuumed = len(tables.vacuum(lake, table, vacuum_hours))
        report.files_after, report.mb_after = _files(lake, table.name)
        report.query_s_after = _count_seconds(lake, table.name)
        summary.tables.append(report)
        progress.update()
    progress.close()
    summary.seconds = time.monotonic() - started
    return summary


def _files(lake: Lake, name: str) -> tuple[int, float]:
    files = tables.files(lake, name)
    return files.num_rows, sum(files.column("size_bytes").to_pylist()) / 2**20


def _count_seconds(lake: Lake, name: str) -> float:
    """Best of three: a full scan of the table through its view, as a data engineer's query is."""
    with LakeDB(lake) as db:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            db.query(f"SELECT count(*) FROM {name}")
            best = min(best, time.perf_counter() - started)
    return best
