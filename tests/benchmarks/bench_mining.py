"""Benchmark: mining quality on the demo lake, whose ground truth (``demo_truth``)
says which images are the edge case (sun glare).

One edge-case image is flagged (each of ``--seeds`` of them in turn), then:

1. search: recall and precision of the edge case in the top-k similar images;
2. narrowing: a pool of the nearest images is clustered; a simulated person
   looks at each cluster's mosaic (the 8 images nearest its centre, as
   `narrow show` prints them) and picks the clusters where most of the mosaic
   is the edge case (or the best one); re-clustered until few images are left.
   Precision and recall after each step;
3. review: a simulated reviewer looks at the next 20 images offered, marks the
   edge cases positive and the rest negative, and the next 20 are ranked with
   everything marked so far (mining.search.rank: kNN first, then the
   classifier). Images viewed until 90% of the edge cases are collected,
   against, in the same run, reviewing predictions by lowest confidence and at
   random.

    python tests/benchmarks/bench_mining.py [--lake DIR] [--images 3000] [--seeds 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from jobs.demo import run_demo  # noqa: E402
from mining.backends import get_backend  # noqa: E402
from mining.clustering import cluster_pool, take_pool  # noqa: E402
from mining.config import Config, DemoConfig  # noqa: E402
from mining.feedback import mean_direction  # noqa: E402
from mining.index import VectorIndex  # noqa: E402
from mining.index_sync import index_lake  # noqa: E402
from mining.lake import Lake  # noqa: E402
from mining.search import rank  # noqa: E402
from mining.sql import LakeDB  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

PAGE = 20
TARGET = 0.9
MOSAIC = 8


def load_truth(lake: Lake, index: VectorIndex) -> tuple[np.ndarray, np.ndarray]:
    """Per index position: is it the edge case, and its lowest prediction confidence."""
    with LakeDB(lake) as db:
        rows = db.query(
            "SELECT image_id, is_edge_case, (SELECT min(confidence) FROM predictions p WHERE p.image_id = t.image_id) AS confidence "
            "FROM demo_truth t"
        ).to_pylist()
    truth = {r["image_id"]: r for r in rows}
    edge = np.array([truth[i]["is_edge_case"] for i in index.ids])
    confidence = np.array([truth[i]["confidence"] if truth[i]["confidence"] is not None else 1.0 for i in index.ids])
    return edge, confidence


def search_quality(index: VectorIndex, edge: np.ndarray, seed: int, ks: list[int]) -> dict[int, tuple[float, float]]:
    hits = rank(index, index.vectors[[seed]], k=max(ks), exclude=np.array([seed]))
    found = edge[index.positions([h.image_id for h in hits])]
    total = edge.sum() - 1
    return {k: (found[:k].sum() / total, found[:k].mean()) for k in ks}


def narrowing(index: VectorIndex, edge: np.ndarray, seed: int, pool: int, clusters: int, backend) -> list[dict]:
    """Steps of a simulated narrowing session: precision, recall and size per step."""
    total = edge.sum()
    positions = take_pool(index, index.vectors[[seed]], None, pool)
    similarity = index.vectors[positions] @ mean_direction(index.vectors[[seed]])
    steps = [{"step": "pool", "images": len(positions), "precision": edge[positions].mean(), "recall": edge[positions].sum() / total}]
    step = 0
    while len(positions) >= 2 * MOSAIC:
        clustering = cluster_pool(index, positions, similarity, clusters, backend)
        shares = []
        for c in range(clustering.k):
            members = clustering.cluster == c
            nearest = clustering.positions[members][np.argsort(clustering.centre_distance[members])[:MOSAIC]]
            shares.append(edge[nearest].mean())
        picked = [c for c, share in enumerate(shares) if share > 0.5] or [int(np.argmax(shares))]
        keep = np.isin(clustering.cluster, picked)
        if keep.all():
            break
        positions, similarity = clustering.positions[keep], clustering.similarity[keep]
        step += 1
        steps.append({"step": step, "images": len(positions), "precision": edge[positions].mean(), "recall": edge[positions].sum() / total})
    return steps


def review(index: VectorIndex, edge: np.ndarray, seed: int) -> int:
    """Images viewed (the flagged seed not counted) until TARGET of the edge cases are collected."""
    target = math.ceil(TARGET * edge.sum())
    positives, negatives, seen = [seed], [], [seed]
    viewed = 0
    while len(positives) < target:
        hits = rank(index, index.vectors[positives], index.vectors[negatives] if negatives else None, PAGE,
                    exclude=np.array(seen), seed=len(seen))
        for position in index.positions([h.image_id for h in hits]):
            viewed += 1
            seen.append(position)
            (positives if edge[position] else negatives).append(position)
            if len(positives) >= target:
                break
    return viewed


def views_in_order(order: np.ndarray, edge: np.ndarray) -> int:
    target = math.ceil(TARGET * edge.sum())
    return int(np.searchsorted(np.cumsum(edge[order]), target) + 1)


def machine() -> str:
    return describe({"faiss": faiss.__version__, "numpy": np.__version__})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", default="/tmp/edgemine-bench-mining", help="demo lake folder (built if missing)")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=10, help="edge-case images flagged in turn")
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    config = Config(lake=args.lake, demo=replace(DemoConfig(), images=args.images))
    lake = Lake.from_config(config)
    started = time.monotonic()
    run_demo(config, show_progress=True)
    with LakeDB(lake) as db:
        index, _ = index_lake(db, config.index)
    backend = get_backend("cpu")
    edge, confidence = load_truth(lake, index)
    rng = np.random.default_rng(0)
    seeds = rng.choice(np.flatnonzero(edge), min(args.seeds, int(edge.sum())), replace=False)
    target = math.ceil(TARGET * edge.sum())

    ks = [10, 20, 50, 100]
    search = [search_quality(index, edge, s, ks) for s in seeds]
    narrow = [narrowing(index, edge, s, args.pool, args.clusters, backend) for s in seeds]
    reviewed = [review(index, edge, s) for s in seeds]
    lowest_confidence = views_in_order(np.argsort(confidence, kind="stable"), edge)
    at_random = float(np.mean([views_in_order(np.random.default_rng(r).permutation(len(edge)), edge) for r in range(20)]))

    result = {
        "machine": machine(),
        "images": len(index),
        "edge_cases": int(edge.sum()),
        "base_rate": float(edge.mean()),
        "seeds": len(seeds),
        "search": {k: {"recall": float(np.mean([s[k][0] for s in search])), "precision": float(np.mean([s[k][1] for s in search]))} for k in ks},
        "narrowing": narrow,
        "review": {
            "target": target,
            "edgemine_views": float(np.mean(reviewed)),
            "edgemine_views_min_max": [int(min(reviewed)), int(max(reviewed))],
            "edgemine_views_per_edge_case": float(np.mean(reviewed)) / target,
            "lowest_confidence_views": lowest_confidence,
            "random_views": at_random,
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2, default=float))
        return
    r = result["review"]
    print(f"\n{result['images']} demo images, {result['edge_cases']} edge cases ({100 * result['base_rate']:.1f}%), "
          f"{len(seeds)} flagged seeds; {result['machine']}\n")
    print("| top-k similar | recall | precision |\n|---:|---:|---:|")
    for k, v in result["search"].items():
        print(f"| {k} | {v['recall']:.2f} | {v['precision']:.2f} |")
    print(f"\nnarrowing (pool {args.pool}, {args.clusters} clusters), mean over seeds:\n")
    print("| step | images | precision | recall |\n|---|---:|---:|---:|")
    depth = max(len(n) for n in narrow)
    for i in range(depth):
        at = [n[min(i, len(n) - 1)] for n in narrow]
        name = "pool" if i == 0 else f"after pick {i}"
        print(f"| {name} | {np.mean([a['images'] for a in at]):.0f} | {np.mean([a['precision'] for a in at]):.2f} | "
              f"{np.mean([a['recall'] for a in at]):.2f} |")
    print(f"\nreview until {TARGET:.0%} of the edge cases ({target}) are collected:\n")
    print("| strategy | images viewed | per edge case | vs edgemine |\n|---|---:|---:|---:|")
    mine = r["edgemine_views"]
    for name, views in [("edgemine (similar, then classifier on marks)", mine),
                        ("lowest confidence first", r["lowest_confidence_views"]), ("random order", r["random_views"])]:
        print(f"| {name} | {views:.0f} | {views / target:.2f} | {views / mine:.1f}x |")
    print(f"\n(edgemine per seed: {r['edgemine_views_min_max'][0]}..{r['edgemine_views_min_max'][1]} views; {result['seconds']}s)")


if __name__ == "__main__":
    main()
