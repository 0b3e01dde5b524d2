"""Benchmark: mining quality over every kind of edge case the demo generator
hides (jobs.demo_data.EDGE_KINDS: glare, an unseen class, a new camera, snow,
small half-hidden objects), one demo lake per kind, whose ground truth
(``demo_truth``) says which images are the edge case.

Per kind, each of ``--seeds`` edge-case images is flagged in turn, then a
simulated reviewer looks at the next 20 images offered, marks the edge cases
positive and the rest negative, and the next 20 are ranked with everything marked
so far by mining.search.similar.rank (what `edgemine similar SEEDS --not NEGATIVES` runs).
The number: images viewed (the flagged one not counted) per edge image collected,
until 90% of the edge cases are collected; against, in the same run, reviewing
predictions by lowest confidence, in random order, and the ceiling: a classifier
trained with every label (5-fold cross-validated logistic regression on the loop's
features and signals), every image ranked by its out-of-fold score. The headline is
the mean over the kinds. ``--loop NAME=VALUE`` changes a field of the loop's
settings (mining.search.feedback.LoopSettings) and ``--page`` the page size, to choose
them. Optionally (``--narrowing``) also top-k search quality and a simulated
narrowing session per kind.

Lakes are built once under ``--cache`` (one per kind, size, seed, backbone and
weights) and reused; the arrays ranking needs (vectors, truth, the model's
confidence, doubt and predicted class) are saved beside them as ``<kind>.npz`` (the
default lakes) or ``<lake>.npz``, so a second run only ranks, without opening the lakes.

    python tests/benchmarks/bench_mining.py [--images 1500] [--seeds 5] [--kinds glare snow]
        [--backbone resnet18|resnet34|efficientnet-lite0] [--weights random|imagenet|PATH]
        [--page 20] [--loop whiten=0 prior_score=16 ...] [--cache /tmp/bench-mining] [--json]
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
from embed.backbones import BACKBONES  # noqa: E402
from jobs.demo import run_demo  # noqa: E402
from jobs.demo_data import EDGE_KINDS  # noqa: E402
from mining.core.config import Config, DemoConfig, EmbedConfig  # noqa: E402
from mining.core.lake import Lake  # noqa: E402
from mining.core.sql import LakeDB  # noqa: E402
from mining.search.backends import get_backend  # noqa: E402
from mining.search.clustering import cluster_pool, take_pool  # noqa: E402
from mining.search.feedback import LOOP, LoopSettings, mean_direction, whitening  # noqa: E402
from mining.search.index import IndexSpec, VectorIndex  # noqa: E402
from mining.search.index_sync import index_lake  # noqa: E402
from mining.search.similar import model_uncertainty, predicted_classes, rank  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

PAGE = 20
TARGET = 0.9
MOSAIC = 8
DEFAULT_BACKBONE = EmbedConfig().backbone
CEILING_C = (0.01, 0.1, 1.0)  # the ceiling's logistic regressions: inverse L2 strength


def load_truth(lake: Lake, index: VectorIndex) -> tuple[np.ndarray, np.ndarray]:
    """Per index position: is it the edge case, and its lowest prediction confidence."""
    with LakeDB(lake) as db:
        rows = db.query(
            "SELECT image_id, is_edge_case, "
            "(SELECT min(confidence) FROM predictions p WHERE p.image_id = t.image_id) AS confidence "
            "FROM demo_truth t"
        ).to_pylist()
    truth = {r["image_id"]: r for r in rows}
    edge = np.array([truth[i]["is_edge_case"] for i in index.ids])
    confidence = np.array([truth[i]["confidence"] if truth[i]["confidence"] is not None else 1.0 for i in index.ids])
    return edge, confidence


def lake_name(kind: str, images: int, data_seed: int, backbone: str, weights: str) -> str:
    """The cached lake's folder name: one per kind, size, data seed, backbone and weights
    (the default backbone keeps the name it had before backbones were chosen)."""
    tag = weights if weights in ("random", "imagenet") else Path(weights).stem
    return f"{kind}-{images}-s{data_seed}-{tag}" + ("" if backbone == DEFAULT_BACKBONE else f"-{backbone}")


def build_lake(cache: Path, kind: str, images: int, weights: str, data_seed: int,
               backbone: str = DEFAULT_BACKBONE) -> tuple[VectorIndex, dict]:
    """The demo lake of one kind (built once under ``cache``), its index, truth and the
    model's uncertainty and predicted class per index position. The arrays ranking
    needs are saved beside the lake once it is built, and read back on a later run."""
    name = lake_name(kind, images, data_seed, backbone, weights)
    default = name == lake_name(kind, 1500, 0, DEFAULT_BACKBONE, "random")
    arrays = cache / (f"{kind}.npz" if default else f"{name}.npz")  # the default's name from before
    keys = ("edge", "confidence", "uncertainty", "predicted")
    config = Config(lake=str(cache / name), embed=replace(EmbedConfig(), backbone=backbone),
                    demo=replace(DemoConfig(), images=images, kind=kind, weights=weights, seed=data_seed,
                                        round=False))
    lake = Lake.from_config(config)
    if arrays.exists():
        saved = dict(np.load(arrays))
        if "predicted" not in saved:  # saved before the predicted class was used: read it from the built lake
            with LakeDB(lake) as db:
                index, _ = index_lake(db, config.index)
                assert np.array_equal(index.vectors, saved["vectors"]), f"{arrays} is not {lake.uri}'s index: delete it"
                saved["predicted"] = predicted_classes(db, index)
            np.savez(arrays, **saved)
        ids = np.array([f"{i:020x}" for i in range(len(saved["vectors"]))])
        index = VectorIndex(ids, saved["vectors"], IndexSpec("flat"))
        return index, {key: saved[key] for key in keys}
    run_demo(config, show_progress=False)
    with LakeDB(lake) as db:
        index, _ = index_lake(db, config.index)
        uncertainty, predicted = model_uncertainty(db, index), predicted_classes(db, index)
    edge, confidence = load_truth(lake, index)
    np.savez(arrays, vectors=index.vectors, edge=edge, confidence=confidence, uncertainty=uncertainty,
             predicted=predicted)
    return index, {"edge": edge, "confidence": confidence, "uncertainty": uncertainty, "predicted": predicted}


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
    steps = [
        {
            "step": "pool",
            "images": len(positions),
            "precision": edge[positions].mean(),
            "recall": edge[positions].sum() / total,
        }
    ]
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
        steps.append(
            {
                "step": step,
                "images": len(positions),
                "precision": edge[positions].mean(),
                "recall": edge[positions].sum() / total,
            }
        )
    return steps


def review(index: VectorIndex, edge: np.ndarray, seed: int, uncertainty: np.ndarray | None = None,
           predicted: np.ndarray | None = None, page: int = PAGE, settings: LoopSettings = LOOP) -> int:
    """Images viewed (the flagged seed not counted) until TARGET of the edge cases are collected."""
    target = math.ceil(TARGET * edge.sum())
    positives, negatives, seen = [seed], [], [seed]
    viewed = 0
    while len(positives) < target:
        # What `edgemine similar POSITIVES --not NEGATIVES` ranks (mining.search.similar.find_similar).
        hits = rank(index, index.vectors[positives], index.vectors[negatives] if negatives else None, page,
                    exclude=np.array(seen), seed=len(seen), uncertainty=uncertainty, predicted=predicted,
                    positive_positions=np.array(positives), negative_positions=np.array(negatives, np.int64),
                    settings=settings)
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


def ceiling(index: VectorIndex, truth: dict, settings: LoopSettings = LOOP, folds: int = 5) -> float:
    """Images viewed to collect TARGET of the edge cases when every label is known: a
    class-balanced logistic regression on what the loop's classifier sees (the
    whitened embedding, the predicted class) plus the doubt it adds as a prior (each
    as far as ``settings`` uses it),
    cross-validated (``folds``, stratified), every image ranked by its out-of-fold
    score; the best over the regularisations CEILING_C (chosen with the truth: an
    upper bound, not a method)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    features = index.vectors
    if settings.whiten:
        mean, projection = whitening(index.vectors, settings.whiten)
        features = (features - mean) @ projection
        features /= np.linalg.norm(features, axis=1, keepdims=True)  # as the loop's classifier sees them
    signals = [truth["predicted"]] if settings.predicted_feature else []
    signals += [truth["uncertainty"]] if settings.prior_score or settings.prior_feature else []
    features = np.concatenate([features, *signals], 1)
    edge = truth["edge"].astype(int)
    views = []
    for c in CEILING_C:
        scores = np.zeros(len(edge))
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(features, edge):
            scaler = StandardScaler().fit(features[train])
            model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
            model.fit(scaler.transform(features[train]), edge[train])
            scores[test] = model.decision_function(scaler.transform(features[test]))
        views.append(views_in_order(np.lexsort((np.arange(len(edge)), -scores)), truth["edge"]))
    return min(views)


def machine() -> str:
    return describe({"faiss": faiss.__version__, "numpy": np.__version__})


def loop_settings(changes: list[str]) -> LoopSettings:
    """mining.search.feedback.LOOP with ``NAME=VALUE`` changes (``--loop whiten=0``), each
    value parsed as the field's type."""
    settings = LOOP
    for change in changes:
        name, _, value = change.partition("=")
        current = getattr(LOOP, name)  # AttributeError names an unknown field
        parsed = value.lower() in ("1", "true", "yes") if isinstance(current, bool) else type(current)(value)
        settings = replace(settings, **{name: parsed})
    return settings


def measure_kind(kind: str, index: VectorIndex, truth: dict, args: argparse.Namespace, backend) -> dict:
    edge = truth["edge"]
    rng = np.random.default_rng(0)
    seeds = rng.choice(np.flatnonzero(edge), min(args.seeds, int(edge.sum())), replace=False)
    target = math.ceil(TARGET * edge.sum())
    settings = loop_settings(args.loop)
    reviewed = [review(index, edge, s, truth["uncertainty"], truth["predicted"], args.page, settings) for s in seeds]
    lowest_confidence = views_in_order(np.argsort(truth["confidence"], kind="stable"), edge)
    at_random = float(
        np.mean([views_in_order(np.random.default_rng(r).permutation(len(edge)), edge) for r in range(20)])
    )
    result = {
        "kind": kind,
        "images": len(index),
        "edge_cases": int(edge.sum()),
        "base_rate": float(edge.mean()),
        "seeds": len(seeds),
        "target": target,
        "edgemine_views": float(np.mean(reviewed)),
        "edgemine_views_min_max": [int(min(reviewed)), int(max(reviewed))],
        "edgemine_per_edge": float(np.mean(reviewed)) / target,
        "lowest_confidence_per_edge": lowest_confidence / target,
        "random_per_edge": at_random / target,
        "ceiling_per_edge": ceiling(index, truth, settings) / target,
    }
    if args.narrowing:
        ks = [10, 20, 50, 100]
        search = [search_quality(index, edge, s, ks) for s in seeds]
        result["search"] = {k: {"recall": float(np.mean([s[k][0] for s in search])),
                                "precision": float(np.mean([s[k][1] for s in search]))} for k in ks}
        result["narrowing"] = [narrowing(index, edge, s, args.pool, args.clusters, backend) for s in seeds]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cache", default="/tmp/bench-mining", help="folder of the demo lakes (one per kind, built if missing)"
    )
    parser.add_argument("--kinds", nargs="+", default=list(EDGE_KINDS), choices=EDGE_KINDS)
    parser.add_argument("--images", type=int, default=1500, help="images per lake")
    parser.add_argument("--data-seed", type=int, default=0, help="the demo generator's seed")
    parser.add_argument("--seeds", type=int, default=5, help="edge-case images flagged in turn, per kind")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=list(BACKBONES),
                        help="the embedding backbone (embed.backbones)")
    parser.add_argument("--weights", default="random",
                        help="embedding weights: random (seeded, offline), imagenet, or a checkpoint file")
    parser.add_argument("--page", type=int, default=PAGE, help="images the reviewer marks per page")
    parser.add_argument("--loop", nargs="*", default=[], metavar="NAME=VALUE",
                        help="the loop's settings changed from mining.search.feedback.LoopSettings, e.g. whiten=0")
    parser.add_argument("--narrowing", action="store_true", help="also top-k search quality and narrowing per kind")
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    started = time.monotonic()
    backend = get_backend("cpu")
    kinds = []
    for kind in args.kinds:
        index, truth = build_lake(Path(args.cache), kind, args.images, args.weights, args.data_seed, args.backbone)
        kinds.append(measure_kind(kind, index, truth, args, backend))
    mean = {key: float(np.mean([k[key] for k in kinds]))
            for key in ("edgemine_per_edge", "lowest_confidence_per_edge", "random_per_edge", "ceiling_per_edge")}
    result = {"machine": machine(), "backbone": args.backbone, "weights": args.weights, "page": args.page,
              "loop": args.loop, "kinds": kinds, "mean": mean,
              "seconds": round(time.monotonic() - started, 1)}
    if args.json:
        print(json.dumps(result, indent=2, default=float))
        return
    print(f"\n{args.images} demo images per kind, {args.seeds} flagged seeds per kind, "
          f"backbone {args.backbone}, weights {args.weights}, pages of {args.page}"
          f"{', loop ' + ' '.join(args.loop) if args.loop else ''}; "
          f"{result['machine']}\n")
    print("views per edge image collected, to 90% of them:\n")
    print("| kind | edge cases | edgemine | lowest confidence | random | ceiling | vs lowest conf. | vs random "
          "| vs ceiling |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in kinds:
        mine = k["edgemine_per_edge"]
        print(f"| {k['kind']} | {k['edge_cases']} ({100 * k['base_rate']:.1f}%) | {mine:.2f} "
              f"({k['edgemine_views_min_max'][0]}..{k['edgemine_views_min_max'][1]} views) | "
              f"{k['lowest_confidence_per_edge']:.2f} | {k['random_per_edge']:.2f} | {k['ceiling_per_edge']:.2f} | "
              f"{k['lowest_confidence_per_edge'] / mine:.1f}x | {k['random_per_edge'] / mine:.1f}x | "
              f"{mine / k['ceiling_per_edge']:.2f}x |")
    m = mean
    print(f"| **mean** | | **{m['edgemine_per_edge']:.2f}** | {m['lowest_confidence_per_edge']:.2f} | "
          f"{m['random_per_edge']:.2f} | {m['ceiling_per_edge']:.2f} | | | |")
    for k in kinds if args.narrowing else []:
        print(f"\n{k['kind']}: top-k similar to one flagged image\n\n| top-k | recall | precision |\n|---:|---:|---:|")
        for top, v in k["search"].items():
            print(f"| {top} | {v['recall']:.2f} | {v['precision']:.2f} |")
        print(f"\nnarrowing (pool {args.pool}, {args.clusters} clusters), mean over seeds:\n")
        print("| step | images | precision | recall |\n|---|---:|---:|---:|")
        narrow = k["narrowing"]
        for i in range(max(len(n) for n in narrow)):
            at = [n[min(i, len(n) - 1)] for n in narrow]
            print(f"| {'pool' if i == 0 else f'after pick {i}'} | {np.mean([a['images'] for a in at]):.0f} | "
                  f"{np.mean([a['precision'] for a in at]):.2f} | {np.mean([a['recall'] for a in at]):.2f} |")
    print(f"\n({result['seconds']}s)")


if __name__ == "__main__":
    main()
