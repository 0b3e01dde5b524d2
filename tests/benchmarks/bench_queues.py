"""Benchmark: review queues (mining.review.queues), in three parts, one command.

(a) quality: on the demo lake with its hidden truth (``demo_truth.is_edge_case``,
    sun glare), how many edge cases each sampler puts in its first 100 images,
    against uniform random picks (the mean of 20 seeds), in the same run. The demo's
    ``customer_flag`` column stands in for customer reports (feedback sampler);
    novelty and diversity run after a reviewer went through one random queue.
(b) scale: the samplers over a large synthetic predictions table written with
    mining.core.tables (``--rows``, 10M by default): seconds per queue (reading the
    lake, ranking, writing the queue) against the same query written by hand in
    DuckDB over delta_scan, and in pandas, in the same run; and the peak memory.
(c) diversity: k-center greedy for 1,000 picks among ``--vectors`` (1M by default)
    512-d unit vectors (as the index holds them), against a naive numpy loop
    (distances to the new pick with np.linalg.norm over a copy of the array each
    step), which is timed for ``--naive-picks`` picks and its per-pick time
    extrapolated; both pick the same images.

    python tests/benchmarks/bench_queues.py [--part all|quality|scale|diversity] [--lake DIR]
        [--images 2000] [--rows 10000000] [--vectors 1000000] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from mining.core import tables  # noqa: E402
from mining.core.config import Config, DemoConfig, EmbedConfig, IndexConfig  # noqa: E402
from mining.core.lake import Lake  # noqa: E402
from mining.core.schema import PREDICTIONS, make_rows  # noqa: E402
from mining.core.sql import LakeDB, connect, quote_literal  # noqa: E402
from mining.review.queues import make_queue  # noqa: E402
from mining.search.coreset import k_center_greedy  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

FIRST = 100
CLASSES = ("car", "truck", "person", "bicycle", "dog", "plane")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# -- (a) quality ----------------------------------------------------------------------------
def quality(lake_dir: str | None, images: int) -> dict:
    from jobs.demo import run_demo
    from jobs.ingest_feedback import ingest_feedback
    from mining.review.decisions import decide
    from mining.search.index_sync import open_index

    if lake_dir and Path(lake_dir, "demo_truth").exists():
        lake = Lake(lake_dir)
    else:
        lake = Lake(lake_dir or tempfile.mkdtemp(prefix="bench-queues-") + "/lake")
        config = Config(lake=lake.uri, demo=replace(DemoConfig(), images=images, seed=0, round=False),
                        embed=replace(EmbedConfig(), workers=2))
        print(f"building a {images}-image demo lake at {lake.uri} ...", file=sys.stderr)
        run_demo(config, show_progress=False)
    config = Config(lake=lake.uri, index=IndexConfig(device="cpu"))
    db = LakeDB(lake, config=config)
    truth = {
        r["image_id"]: bool(r["is_edge_case"])
        for r in db.query("SELECT image_id, is_edge_case FROM demo_truth").to_pylist()
    }
    n, edge = len(truth), sum(truth.values())
    index = open_index(db, config.index)
    run = f"b{int(time.time())}"

    def found(name: str, sampler: str, **kwargs) -> dict:
        started = time.monotonic()
        made = make_queue(db, sampler, f"{run}-{name}", user="bench", config=config, index=index, **kwargs)
        picked = db.query("SELECT image_id FROM queues WHERE queue = $q AND version = $v ORDER BY rank LIMIT $n",
                          {"q": made.queue, "v": made.version, "n": FIRST}).column("image_id").to_pylist()
        return {"sampler": name, "edge_cases": sum(truth[i] for i in picked), "images": len(picked),
                "seconds": round(time.monotonic() - started, 2)}

    rng = np.random.default_rng(0)
    ids = np.array(list(truth))
    edges = np.array(list(truth.values()))
    random_hits = [int(edges[rng.choice(n, FIRST, replace=False)].sum()) for _ in range(20)]
    results = [{"sampler": "uniform random (mean of 20 seeds)", "edge_cases": round(float(np.mean(random_hits)), 1),
                "images": FIRST, "seconds": 0.0}]
    days = db.query("SELECT count(DISTINCT date) AS d FROM predictions").column("d")[0].as_py()
    results.append(found("random-time (1d windows)", "random-time", limit=FIRST,
                         options={"per": "1d", "k": -(-FIRST // days)}))
    results.append(found(f"every-nth (every {n // FIRST})", "every-nth", limit=FIRST, options={"every": n // FIRST}))
    for sampler in ("least-confidence", "margin", "entropy"):
        results.append(found(sampler, sampler, limit=FIRST))
        results.append(found(f"{sampler} --diverse", sampler, limit=FIRST, diverse=True))
    results.append(found("least-confidence, boxes (max)", "least-confidence", limit=FIRST, options={"boxes": True}))

    # Customer feedback: every prediction the demo's customers flagged, severity 1-3 at random.
    flagged = db.query("SELECT prediction_id, ts FROM predictions WHERE customer_flag").to_pylist()
    feedback = Path(tempfile.mkdtemp(prefix="bench-feedback-")) / "reports.jsonl"
    feedback.write_text("".join(json.dumps({"prediction_id": r["prediction_id"], "severity": int(rng.integers(1, 4)),
                                            "reporter": "customer", "comment": "looks wrong",
                                            "at": (r["ts"] + timedelta(hours=1)).isoformat()}) + "\n" for r in flagged))
    ingest_feedback(lake, [str(feedback)], show_progress=False, force=True)
    results.append(found(f"feedback ({len(flagged)} customer flags)", "feedback", limit=FIRST))

    # A reviewer went through a random queue of 100 (decisions recorded); then what is new to them.
    reviewed = rng.choice(ids, FIRST, replace=False).tolist()
    review = f"{run}-seen"
    for decision, chosen in (
        ("accept", [i for i in reviewed if truth[i]]),
        ("reject", [i for i in reviewed if not truth[i]]),
    ):
        if chosen:
            decide(db, review, chosen, decision, reviewer="bench")
    results.append(found("novelty (after 100 random reviewed)", "novelty", limit=FIRST))
    results.append(found("diversity (after 100 random reviewed)", "diversity", limit=FIRST))
    results.append(found("least-confidence (after 100 reviewed)", "least-confidence", limit=FIRST))
    db.close()
    return {"lake": lake.uri, "images": n, "edge_cases": int(edge), "first": FIRST,
            "expected_random": round(FIRST * edge / n, 1), "results": results}


# -- (b) scale -------------------------------------------------------------------------------
def write_synthetic(lake: Lake, rows: int, chunk: int = 1_000_000, seed: int = 0) -> float:
    """``rows`` predictions (one per image, 2 model versions, 14 days, 6-class scores, a camera column)."""
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    for first in range(0, rows, chunk):
        n = min(chunk, rows - first)
        probs = rng.dirichlet(np.full(len(CLASSES), 0.5), n).astype(np.float32)
        keys = pa.array(CLASSES).take(pa.array(np.tile(np.arange(len(CLASSES)), n)))
        offsets = pa.array(np.arange(0, (n + 1) * len(CLASSES), len(CLASSES), dtype=np.int32))
        scores = pa.MapArray.from_arrays(offsets, keys, pa.array(probs.ravel()))
        seconds = rng.integers(0, 14 * 86400, n)
        ts = pa.array(
            (np.datetime64(start.replace(tzinfo=None), "us") + seconds.astype("timedelta64[s]")).astype(
                "datetime64[us]"
            )
        )
        ts = ts.cast(pa.timestamp("us", tz="UTC"))
        number = np.arange(first, first + n)
        ids = pa.array([f"{i:020x}" for i in number])
        batch = make_rows(PREDICTIONS, n, prediction_id=pa.array([f"p{i:023x}" for i in number]), image_id=ids,
                          model_version=pa.array(np.where(number % 2 == 0, "v1", "v2")), ts=ts,
                          label=pa.array(np.array(CLASSES)[probs.argmax(1)]), confidence=pa.array(probs.max(1)),
                          scores=scores, date=ts.cast(pa.date32()))
        batch = batch.append_column("camera", pa.array(np.array([f"cam-{i}" for i in range(8)])[number % 8]))
        tables.append(lake, PREDICTIONS, batch.sort_by("date"), tables.commit_info("bench"))
        print(f"  wrote {first + n:,} rows", file=sys.stderr)
    return time.monotonic() - started


def scale(rows: int) -> dict:
    from deltalake import DeltaTable

    folder = tempfile.mkdtemp(prefix="bench-queues-scale-")
    try:
        lake = Lake(folder + "/lake")
        write_s = write_synthetic(lake, rows)
        config = Config(lake=lake.uri, index=IndexConfig(device="cpu"))
        db = LakeDB(lake, config=config)
        scan = f"delta_scan({quote_literal(lake.table_dir('predictions'))})"
        hand = connect(lake)
        values = "map_values(scores)"
        cases = [
            (
                "least-confidence",
                {},
                f"SELECT image_id, prediction_id, 1 - list_max({values}) / list_sum({values}) AS u "
                f"FROM {scan} ORDER BY u DESC LIMIT 100",
            ),
            (
                "entropy",
                {},
                f"SELECT image_id, prediction_id, ln(list_sum({values})) - list_sum(list_transform({values}, "
                f"x -> CASE WHEN x > 0 THEN x * ln(x) ELSE 0 END)) / list_sum({values}) AS u "
                f"FROM {scan} ORDER BY u DESC LIMIT 100",
            ),
            (
                "random-time",
                {"per": "1h", "k": 5},
                f"SELECT * FROM (SELECT image_id, prediction_id, row_number() OVER "
                f"(PARTITION BY time_bucket(INTERVAL 1 hour, ts) ORDER BY hash(prediction_id, 0)) AS r "
                f"FROM {scan}) WHERE r <= 5",
            ),
            (
                "every-nth",
                {"every": 10_000},
                f"SELECT * FROM (SELECT image_id, prediction_id, row_number() OVER "
                f"(PARTITION BY model_version ORDER BY ts, prediction_id) AS n FROM {scan}) "
                f"WHERE n % 10000 = 0",
            ),
        ]
        results = []
        for sampler, options, sql in cases:
            started = time.monotonic()
            made = make_queue(db, sampler, f"scale-{sampler}", user="bench", config=config, options=options,
                              limit=100 if sampler in ("least-confidence", "entropy") else None)
            ours = time.monotonic() - started
            started = time.monotonic()
            by_hand = hand.execute(sql).to_arrow_table().num_rows
            duck = time.monotonic() - started
            results.append({"sampler": sampler, "queue_images": made.images, "edgemine_s": round(ours, 2),
                            "duckdb_by_hand_s": round(duck, 2), "by_hand_rows": by_hand})
        peak_ours = peak_rss_gib()
        # pandas: what a notebook user would write, from the Delta table's columns it needs.
        started = time.monotonic()
        frame = DeltaTable(lake.table_dir("predictions")).to_pandas(columns=["image_id", "prediction_id", "confidence",
                                                                           "ts", "model_version"])
        read_s = time.monotonic() - started
        timings = {}
        started = time.monotonic()
        frame.nsmallest(100, "confidence")
        timings["least-confidence"] = (
            time.monotonic() - started
        )  # by confidence: the scores maps are too costly in pandas
        started = time.monotonic()
        frame.groupby(frame["ts"].dt.floor("h")).sample(n=5, random_state=0)
        timings["random-time"] = time.monotonic() - started
        started = time.monotonic()
        ordered = frame.sort_values(["model_version", "ts", "prediction_id"])
        ordered[ordered.groupby("model_version").cumcount().add(1) % 10_000 == 0]
        timings["every-nth"] = time.monotonic() - started
        for r in results:
            if r["sampler"] in timings:
                r["pandas_s"] = round(read_s + timings[r["sampler"]], 2)
        del frame, ordered
        db.close()
        return {
            "rows": rows,
            "write_s": round(write_s, 1),
            "results": results,
            "pandas_read_s": round(read_s, 2),
            "peak_rss_gib_edgemine_and_duckdb": round(peak_ours, 2),
            "peak_rss_gib_with_pandas": round(peak_rss_gib(), 2),
            "table_mb": round(
                sum(p.stat().st_size for p in Path(lake.table_dir("predictions")).rglob("*.parquet")) / 2**20
            ),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- (c) diversity ---------------------------------------------------------------------------
def naive_k_center(x: np.ndarray, k: int, first: int = 0) -> np.ndarray:
    """What one would write first: distances to the new pick over the whole array, each step."""
    nearest = np.full(len(x), np.inf, np.float32)
    picks = [first]
    for _ in range(k - 1):
        nearest = np.minimum(nearest, np.linalg.norm(x - x[picks[-1]], axis=1))
        nearest[picks] = -1
        picks.append(int(np.argmax(nearest)))
    return np.array(picks)


def diversity(vectors: int, picks: int, naive_picks: int) -> dict:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, 512)).astype(np.float32)
    x = np.empty((vectors, 512), np.float32)
    for start in range(0, vectors, 100_000):  # clustered unit vectors, made in blocks to bound memory
        n = min(100_000, vectors - start)
        block = centres[rng.integers(0, 1000, n)] + 0.5 * rng.standard_normal((n, 512), dtype=np.float32)
        x[start:start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    started = time.monotonic()
    ours = k_center_greedy(x, picks, first=0)
    ours_s = time.monotonic() - started
    started = time.monotonic()
    naive = naive_k_center(x, naive_picks)
    naive_s = time.monotonic() - started
    return {"vectors": vectors, "picks": picks, "k_center_greedy_s": round(ours_s, 1),
            "per_pick_ms": round(1000 * ours_s / picks, 1), "naive_picks_timed": naive_picks,
            "naive_s_timed": round(naive_s, 1), "naive_per_pick_ms": round(1000 * naive_s / naive_picks, 1),
            "naive_s_extrapolated": round(naive_s / naive_picks * picks, 0),
            "same_picks": bool(np.array_equal(ours.order[:naive_picks], naive))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "quality", "scale", "diversity"], default="all")
    parser.add_argument("--lake", help="the demo lake to use (built there when it has none)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--picks", type=int, default=1000)
    parser.add_argument("--naive-picks", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import cleanlab
    import deltalake
    import duckdb

    report = {"machine": describe({"duckdb": duckdb.__version__, "deltalake": deltalake.__version__,
                                   "numpy": np.__version__, "cleanlab": cleanlab.__version__})}
    if args.part in ("all", "quality"):
        report["quality"] = quality(args.lake, args.images)
    if args.part in ("all", "scale"):
        report["scale"] = scale(args.rows)
    if args.part in ("all", "diversity"):
        report["diversity"] = diversity(args.vectors, args.picks, args.naive_picks)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
        return
    print(report["machine"])
    if "quality" in report:
        q = report["quality"]
        print(
            f"\n(a) {q['images']} demo images, {q['edge_cases']} edge cases; random would find {q['expected_random']} "
            f"in the first {q['first']}"
        )
        print(f"{'sampler':<42} {'edge cases in first 100':>24} {'seconds':>8}")
        for r in q["results"]:
            print(f"{r['sampler']:<42} {r['edge_cases']:>24} {r['seconds']:>8}")
    if "scale" in report:
        s = report["scale"]
        print(f"\n(b) {s['rows']:,} predictions ({s['table_mb']} MB, written in {s['write_s']} s); pandas reads its "
              f"columns in {s['pandas_read_s']} s; peak RSS {s['peak_rss_gib_edgemine_and_duckdb']} GiB "
              f"(edgemine + DuckDB), {s['peak_rss_gib_with_pandas']} GiB after pandas")
        for r in s["results"]:
            print(f"{r['sampler']:<18} edgemine {r['edgemine_s']:>7} s   DuckDB by hand {r['duckdb_by_hand_s']:>7} s   "
                  f"pandas {r.get('pandas_s', '-'):>7} s   ({r['queue_images']} queued)")
    if "diversity" in report:
        d = report["diversity"]
        print(f"\n(c) k-center greedy, {d['picks']} picks of {d['vectors']:,} vectors: {d['k_center_greedy_s']} s "
              f"({d['per_pick_ms']} ms a pick); naive numpy loop {d['naive_per_pick_ms']} ms a pick "
              f"({d['naive_picks_timed']} timed: {d['naive_s_timed']} s; {d['naive_s_extrapolated']:.0f} s for "
              f"{d['picks']}); same picks: {d['same_picks']}")


if __name__ == "__main__":
    main()
