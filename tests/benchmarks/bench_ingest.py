"""Benchmark: `edgemine ingest predictions` against what a user would otherwise write.

The same JSONL file (production-like rows: scores, detections, extra columns)
goes through (a) the edgemine job, which also validates every row, resolves
image ids, splits detections out, partitions by date and merges into the Delta
tables on their keys; (b) ``pandas.read_json(lines=True).to_parquet()``; and (c)
DuckDB's own ``read_json`` -> Parquet, with the confidence check and date
partitioning (``COPY ... PARTITION_BY``), the fastest plain path. Each runs in
its own process so its peak memory (max RSS) is its own. Two input sizes show
how memory grows with the input.

    python tests/benchmarks/bench_ingest.py [--rows 1000000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.benchmarks.machine import describe  # noqa: E402
from tests.helpers import png_bytes  # noqa: E402

IMAGES = 2000
PANDAS = "import sys, pandas as pd; pd.read_json(sys.argv[1], lines=True).to_parquet(sys.argv[2])"
DUCKDB = (
    "import sys, duckdb; duckdb.sql(f\"COPY (SELECT *, to_timestamp(ts)::DATE AS date FROM read_json('{sys.argv[1]}') "
    "WHERE confidence BETWEEN 0 AND 1) TO '{sys.argv[2]}' (FORMAT parquet, PARTITION_BY (date))\")"
)


def make_inputs(work: Path, rows: int) -> tuple[Path, Path]:
    images = work / "images"
    images.mkdir(exist_ok=True)
    for i in range(IMAGES):
        path = images / f"{i:05d}.png"
        if not path.exists():
            path.write_bytes(png_bytes(i, (16, 12)))
    rng = np.random.default_rng(0)
    out = work / f"predictions-{rows}.jsonl"
    labels = ["car", "truck", "person", "bicycle", "dog", "plane"]
    start = 1_790_000_000
    with out.open("w") as f:
        for chunk in range(0, rows, 100_000):
            n = min(100_000, rows - chunk)
            img = rng.integers(0, IMAGES, n)
            ts = start + rng.integers(0, 14 * 86400, n)
            conf = rng.random(n).round(4)
            lab = rng.integers(0, len(labels), n)
            lines = []
            for k in range(n):
                label = labels[lab[k]]
                lines.append(json.dumps({
                    "image_uri": f"{images}/{img[k]:05d}.png",
                    "model_version": "v7",
                    "ts": int(ts[k]),
                    "label": label,
                    "confidence": float(conf[k]),
                    "scores": {label: float(conf[k]), "other": round(1 - float(conf[k]), 4)},
                    "detections": [{"box": [1.0, 2.0, 30.0, 40.0], "label": label, "score": float(conf[k])}],
                    "camera": f"cam-{img[k] % 7}",
                    "region": "eu-west",
                    "customer_flag": bool(k % 50 == 0),
                }))
            f.write("\n".join(lines) + "\n")
    return images, out


def measure(command: list[str], env: dict | None = None) -> dict:
    """Wall time and peak memory of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    out, err = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[:3]} failed: {err.decode()[-2000:]}")
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "stdout": out.decode()}


def run(rows_list: list[int]) -> dict:
    edgemine = str(Path(sys.executable).parent / "edgemine")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for rows in rows_list:
            images, data = make_inputs(work, rows)
            lake = work / f"lake-{rows}"
            subprocess.run(
                [edgemine, "ingest", "images", str(images), "--lake", str(lake), "--quiet"],
                check=True,
                capture_output=True,
            )
            job = measure([edgemine, "ingest", "predictions", str(data), "--lake", str(lake), "--quiet", "--json"])
            summary = json.loads(job["stdout"])
            assert summary["rows"]["predictions"] == rows, summary
            baseline = measure([sys.executable, "-c", PANDAS, str(data), str(work / "pandas.parquet")])
            plain = measure([sys.executable, "-c", DUCKDB, str(data), str(work / f"duckdb-{rows}")])
            results.append({
                "rows": rows,
                "input_mb": round(data.stat().st_size / 2**20, 1),
                "edgemine_rows_per_s": round(rows / job["seconds"]),
                "edgemine_peak_mb": round(job["peak_mb"]),
                "pandas_rows_per_s": round(rows / baseline["seconds"]),
                "pandas_peak_mb": round(baseline["peak_mb"]),
                "speed_ratio": round(baseline["seconds"] / job["seconds"], 2),
                "memory_ratio": round(baseline["peak_mb"] / job["peak_mb"], 2),
                "duckdb_rows_per_s": round(rows / plain["seconds"]),
                "duckdb_peak_mb": round(plain["peak_mb"]),
                "vs_duckdb": round(plain["seconds"] / job["seconds"], 2),
            })
            data.unlink()
    return {"machine": machine(), "results": results}


def machine() -> str:
    return describe({"pyarrow": pa.__version__, "duckdb": duckdb.__version__})


def markdown(report: dict) -> str:
    lines = [
        f"Machine: {report['machine']}",
        "",
        "| rows | input MB | edgemine rows/s | pandas rows/s | DuckDB read_json rows/s | vs pandas | vs DuckDB "
        "| edgemine peak MB | pandas peak MB | DuckDB peak MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['rows']:,} | {r['input_mb']} | {r['edgemine_rows_per_s']:,} | {r['pandas_rows_per_s']:,} | "
            f"{r['duckdb_rows_per_s']:,} | {r['speed_ratio']}x | {r['vs_duckdb']}x | {r['edgemine_peak_mb']} | "
            f"{r['pandas_peak_mb']} | {r['duckdb_peak_mb']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[250_000, 1_000_000], help="input sizes (rows)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args.rows)
    print(json.dumps(report, indent=2) if args.json else markdown(report))


if __name__ == "__main__":
    main()
