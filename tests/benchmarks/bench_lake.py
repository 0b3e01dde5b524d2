"""Benchmark: SQL over the lake's Delta tables, and what compaction does after a day of ingests.

1. Views against the files they read. A synthetic ``predictions`` table (30 days,
   written by the project's own writer, mining.core.tables, in batches of 1M rows) is
   queried three ways in the same run, best of ``--repeat`` each, in one process:
   - ``edgemine``: the ``predictions`` view of a read-only LakeDB (the sandbox's parse
     tree check included), as `edgemine sql` and the UI run it;
   - ``delta_scan``: DuckDB's delta extension on the table, no view, no checks;
   - ``read_parquet``: DuckDB on the table's data files, listed from the Delta log.
   Queries: a filtered count, a group-by, one day (a partition). With ``--rows``
   given twice, the one-day query shows whether its time depends on the table's size.

2. A day of hourly ingests: 24 files of ``--hourly-rows`` predictions each (spanning
   two days, as late data does) through `ingest predictions` (auto-compaction off),
   then files per partition and a count's time before and after `edgemine compact`.

    python tests/benchmarks/bench_lake.py [--rows 10000000 100000000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import deltalake
import duckdb
import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from jobs.compact import compact_lake  # noqa: E402
from jobs.ingest_images import ingest_images  # noqa: E402
from jobs.ingest_predictions import ingest_predictions  # noqa: E402
from mining.core import tables  # noqa: E402
from mining.core.config import IngestConfig  # noqa: E402
from mining.core.lake import Lake  # noqa: E402
from mining.core.schema import PREDICTIONS, make_rows  # noqa: E402
from mining.core.sql import LakeDB, connect, quote_literal  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402
from tests.helpers import jsonl, png_bytes  # noqa: E402

DAYS = 30
BATCH = 1_000_000
START = datetime(2026, 10, 1, tzinfo=UTC)
LABELS = np.array(["car", "truck", "person", "bicycle", "dog", "plane"])
QUERIES = {
    "filtered count": "SELECT count(*) FROM {t} WHERE confidence < 0.5",
    "group by label": "SELECT label, count(*), avg(confidence) FROM {t} GROUP BY label",
    "one day": "SELECT model_version, count(*) FROM {t} WHERE date = DATE '2026-10-15' GROUP BY ALL",
}


def build(lake: Lake, rows: int) -> None:
    """``rows`` predictions over DAYS days, one commit per BATCH rows (the ingest job's shape)."""
    rng = np.random.default_rng(0)
    info = tables.commit_info("bench")
    for start in range(0, rows, BATCH):
        n = min(BATCH, rows - start)
        seconds = int(START.timestamp()) + rng.integers(0, DAYS * 86400, n)
        ts = pa.array(seconds * 1_000_000, pa.timestamp("us", tz="UTC"))
        days = pa.array(seconds // 86400, pa.int32()).cast(pa.date32())
        ids = np.char.add("p", np.arange(start, start + n).astype(str))
        batch = make_rows(PREDICTIONS, n, prediction_id=ids, image_id=np.char.add("i", (seconds % 50_000).astype(str)),
                          model_version=np.where(seconds % 3 == 0, "v7", "v8"), ts=ts,
                          label=LABELS[seconds % len(LABELS)], confidence=rng.random(n).astype(np.float32),
                          source="bench", date=days)
        tables.append(lake, PREDICTIONS, batch, info)


def best(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def views_against_files(lake: Lake, repeat: int) -> list[dict]:
    uri = tables.table_uri(lake, PREDICTIONS)
    files = [f"{uri}/{p}" for p in tables.files(lake, PREDICTIONS).column("path").to_pylist()]
    raw = connect(lake)
    sources = {
        "delta_scan": f"delta_scan({quote_literal(uri)})",
        "read_parquet": f"read_parquet([{', '.join(quote_literal(f) for f in files)}], hive_partitioning = true)",
    }
    results = []
    with LakeDB(lake) as db:
        for name, sql in QUERIES.items():
            view = best(lambda sql=sql: db.query(sql.format(t="predictions")), repeat)
            direct = {k: best(lambda s=s, sql=sql: raw.execute(sql.format(t=s)).fetchall(), repeat)
                      for k, s in sources.items()}
            results.append({"query": name, "edgemine_s": round(view, 4), "delta_scan_s": round(direct["delta_scan"], 4),
                            "read_parquet_s": round(direct["read_parquet"], 4),
                            "vs_delta_scan": round(view / direct["delta_scan"], 2),
                            "vs_read_parquet": round(view / direct["read_parquet"], 2)})
    return results


def hourly_day(work: Path, hourly_rows: int, repeat: int) -> dict:
    lake = Lake(str(work / "hourly"))
    images = work / "images"
    images.mkdir(exist_ok=True)
    for i in range(200):
        (images / f"{i:03d}.png").write_bytes(png_bytes(i, (8, 6)))
    ingest_images(lake, str(images), show_progress=False)
    config = replace(IngestConfig(), compact_after_files=0)  # measured by hand below
    rng = np.random.default_rng(1)
    for hour in range(24):
        at = START + timedelta(hours=hour)
        rows = [
            {
                "image_uri": str(images / f"{int(i):03d}.png"),
                "model_version": "v7",
                "ts": (at - timedelta(hours=int(late) * 20)).isoformat(),
                "confidence": float(c),
                "label": "car",
            }
            for i, late, c in zip(
                rng.integers(0, 200, hourly_rows), rng.random(hourly_rows) < 0.1, rng.random(hourly_rows)
            )
        ]
        (work / f"hour-{hour:02d}.jsonl").write_text(jsonl(rows))
        ingest_predictions(lake, [str(work / f"hour-{hour:02d}.jsonl")], config, show_progress=False)

    def per_partition() -> dict[str, int]:
        return dict(
            sorted(
                Counter(str(d) for d in tables.files(lake, PREDICTIONS).column("partition.date").to_pylist()).items()
            )
        )

    def count_time() -> float:
        with LakeDB(lake) as db:
            return best(lambda: db.query("SELECT count(*), avg(confidence) FROM predictions"), repeat)

    before, query_before = per_partition(), count_time()
    compact_lake(lake, ["predictions"], vacuum_hours=0, show_progress=False)
    after, query_after = per_partition(), count_time()
    return {
        "hourly_files": 24,
        "rows_per_file": hourly_rows,
        "files_per_day_before": before,
        "files_per_day_after": after,
        "query_s_before": round(query_before, 4),
        "query_s_after": round(query_after, 4),
        "query_speedup": round(query_before / query_after, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000], help="table sizes to build and query")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hourly-rows", type=int, default=20_000)
    parser.add_argument("--work", help="folder for the lakes (default: a temporary one, removed after)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="edgemine-bench-lake-"))
    report = {"machine": describe({"duckdb": duckdb.__version__, "deltalake": deltalake.__version__}), "sizes": []}
    try:
        for rows in args.rows:
            lake = Lake(str(work / f"lake-{rows}"))
            started = time.perf_counter()
            if not tables.exists(lake, PREDICTIONS):
                build(lake, rows)
            built = time.perf_counter() - started
            print(f"{rows:,} rows ready in {built:.0f} s; querying", file=sys.stderr)
            report["sizes"].append({"rows": rows, "files": tables.files(lake, PREDICTIONS).num_rows,
                                    "build_s": round(built, 1), "queries": views_against_files(lake, args.repeat)})
        print("a day of hourly ingests", file=sys.stderr)
        report["hourly"] = hourly_day(work, args.hourly_rows, args.repeat)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print(f"Machine: {report['machine']}\n")
    print(
        "| rows | data files | query | edgemine view (s) | delta_scan (s) | read_parquet (s) | "
        "view / delta_scan | view / read_parquet |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for size in report["sizes"]:
        for q in size["queries"]:
            print(f"| {size['rows']:,} | {size['files']} | {q['query']} | {q['edgemine_s']} | {q['delta_scan_s']} | "
                  f"{q['read_parquet_s']} | {q['vs_delta_scan']}x | {q['vs_read_parquet']}x |")
    h = report["hourly"]
    print(
        f"\n24 hourly files of {h['rows_per_file']:,} rows: files per day {h['files_per_day_before']} -> "
        f"{h['files_per_day_after']}; count+avg {h['query_s_before']} s -> {h['query_s_after']} s "
        f"({h['query_speedup']}x)"
    )


if __name__ == "__main__":
    main()
