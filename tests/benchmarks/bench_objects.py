"""Benchmark: objects as rows (issue 27), on the demo lake whose edge case is a tiny, half
hidden object in a normal-looking frame (``small_occluded``), embedded with the backbone the
demo config selects (EfficientNet-Lite0, ImageNet weights).

(a) Speed: `embed --objects` (every detection box of the newest prediction per image cut,
    upsampled and embedded: jobs.embed_objects) against the whole-image embed
    (jobs.embed_images) on the same frames, the same loaded model, in the same run:
    boxes/s, frames/s, and their ratio to images/s.
(b) Mining: from one flagged box of an edge-case image (its main object, the small
    occluded one), a simulated reviewer marks pages of 20 (bench_mining.review: what
    `edgemine similar POSITIVES --not NEGATIVES` ranks) until 90% of the edge-case images
    are collected: over the object index (a view is one box; an edge image is collected
    when its small object is shown) against the image index from that box's image (a view
    is one image). Views per edge image collected, averaged over ``--seeds`` flagged
    edge cases; beside them the ceiling (bench_mining.ceiling: a classifier trained with
    every label, cross-validated) of each, lowest confidence (image confidence; box score)
    and random order.

The lake is built once under ``--cache`` and reused (its object embeddings and timings are
redone every run, with ``--overwrite``).

    python tests/benchmarks/bench_objects.py [--images 600] [--rounds 1] [--seeds 5]
        [--cache /tmp/bench-objects] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from embed.model import load_backbone  # noqa: E402
from jobs.demo import run_demo  # noqa: E402
from jobs.embed_images import embed_lake  # noqa: E402
from jobs.embed_objects import embed_objects  # noqa: E402
from mining.core.config import Config, DemoConfig, EmbedConfig, IndexConfig, ObjectsConfig  # noqa: E402
from mining.core.lake import Lake  # noqa: E402
from mining.core.sql import LakeDB  # noqa: E402
from mining.search.index_sync import index_lake  # noqa: E402
from mining.search.similar import model_uncertainty, predicted_classes  # noqa: E402
from tests.benchmarks.bench_mining import TARGET, ceiling, review, views_in_order  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

BACKBONE, WEIGHTS = "efficientnet-lite0", "imagenet"


def build_lake(cache: Path, images: int, data_seed: int) -> Config:
    """The small_occluded demo lake, embedded with EfficientNet-Lite0 (built once under ``cache``)."""
    config = Config(lake=str(cache / f"small_occluded-{images}-s{data_seed}-lite0"),
                    embed=replace(EmbedConfig(), backbone=BACKBONE, weights=WEIGHTS, device="cpu"),
                    demo=replace(DemoConfig(), images=images, kind="small_occluded", weights=WEIGHTS,
                                 seed=data_seed, round=False))
    if not (Path(config.lake) / "embeddings").exists():
        run_demo(config, show_progress=False)
    return config


def speed(config: Config, rounds: int) -> dict:
    """Whole-image embed against object embed on the same frames, one model loaded for both,
    alternating rounds; the best round of each."""
    lake = Lake.from_config(config)
    backbone = load_backbone(BACKBONE, WEIGHTS, device="cpu")
    images, objects = [], []
    for _ in range(rounds):
        whole = embed_lake(lake, config.embed, overwrite=True, backbone=backbone, show_progress=False)
        images.append(whole.embedded / whole.seconds)
        boxes = embed_objects(lake, config.embed, config.objects, overwrite=True, backbone=backbone,
                              show_progress=False)
        frames = _frames(lake)
        objects.append((boxes.embedded / boxes.seconds, frames / boxes.seconds, boxes.embedded, frames))
    best_objects = max(objects)
    return {"images_per_s": max(images), "images_rounds": images,
            "boxes_per_s": best_objects[0], "frames_per_s_objects": best_objects[1],
            "boxes": best_objects[2], "frames": best_objects[3],
            "boxes_rounds": [o[0] for o in objects],
            "boxes_vs_images": best_objects[0] / max(images), "frames_vs_images": best_objects[1] / max(images),
            "load_average": os.getloadavg()[0]}


def _frames(lake: Lake) -> int:
    with LakeDB(lake) as db:
        return db.query("SELECT count(DISTINCT image_id) AS n FROM object_embeddings").column("n")[0].as_py()


def mining(config: Config, seeds: int) -> dict:
    """Views per edge image collected to 90%, object search against image search, from the same flagged cases."""
    lake = Lake.from_config(config)
    with LakeDB(lake) as db:
        images, _ = index_lake(db, IndexConfig(device="cpu"))
        objects, _ = index_lake(db, IndexConfig(device="cpu"), objects=True)
        truth = {r["image_id"]: r for r in db.query(
            "SELECT image_id, is_edge_case, (SELECT min(confidence) FROM predictions p "
            "WHERE p.image_id = t.image_id) AS confidence FROM demo_truth t").to_pylist()}
        boxes = {r["detection_id"]: r for r in db.query(
            "SELECT o.detection_id, o.image_id, d.score, d.detection_id = d.prediction_id || '-0' AS main "
            "FROM object_embeddings o JOIN detections d USING (detection_id) "
            "WHERE o.backbone = $b", {"b": BACKBONE}).to_pylist()}
        image_truth = {"edge": np.array([truth[i]["is_edge_case"] for i in images.ids]),
                       "uncertainty": model_uncertainty(db, images), "predicted": predicted_classes(db, images)}
    confidence = np.array([truth[i]["confidence"] or 1.0 for i in images.ids])
    # An object is the edge case when it is the main object of an edge-case image (the small, half hidden one).
    box_edge = np.array([bool(boxes[d]["main"]) and truth[boxes[d]["image_id"]]["is_edge_case"] for d in objects.ids])
    box_score = np.array([boxes[d]["score"] for d in objects.ids])
    object_truth = {"edge": box_edge, "uncertainty": np.zeros((len(objects), 3), np.float32),
                    "predicted": np.zeros((len(objects), 1), np.float32)}
    edge_images = int(image_truth["edge"].sum())
    assert box_edge.sum() == edge_images, "every edge-case image has its small object among the boxes"
    target = math.ceil(TARGET * edge_images)

    rng = np.random.default_rng(0)
    flagged = rng.choice(np.flatnonzero(box_edge), min(seeds, edge_images), replace=False)
    by_object, by_image = [], []
    for box in flagged:
        image_position = images.positions([boxes[objects.ids[box]]["image_id"]])[0]
        by_object.append(review(objects, box_edge, int(box)))
        by_image.append(review(images, image_truth["edge"], int(image_position), image_truth["uncertainty"],
                               image_truth["predicted"]))
    at_random = lambda edge: float(np.mean([views_in_order(np.random.default_rng(r).permutation(len(edge)), edge)  # noqa: E731
                                            for r in range(20)]))
    return {
        "images": len(images), "boxes": len(objects), "edge_images": edge_images, "target": target,
        "seeds": len(flagged),
        "objects_per_edge": float(np.mean(by_object)) / target, "objects_views": [int(v) for v in by_object],
        "images_per_edge": float(np.mean(by_image)) / target, "images_views": [int(v) for v in by_image],
        "objects_ceiling_per_edge": ceiling(objects, object_truth) / target,
        "images_ceiling_per_edge": ceiling(images, image_truth) / target,
        "objects_lowest_score_per_edge": views_in_order(np.argsort(box_score, kind="stable"), box_edge) / target,
        "images_lowest_confidence_per_edge": views_in_order(np.argsort(confidence, kind="stable"),
                                                            image_truth["edge"]) / target,
        "objects_random_per_edge": at_random(box_edge) / target,
        "images_random_per_edge": at_random(image_truth["edge"]) / target,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="/tmp/bench-objects", help="folder of the demo lake (built if missing)")
    parser.add_argument("--images", type=int, default=600, help="demo images")
    parser.add_argument("--data-seed", type=int, default=0, help="the demo generator's seed")
    parser.add_argument("--seeds", type=int, default=5, help="edge-case boxes flagged in turn")
    parser.add_argument("--rounds", type=int, default=1, help="speed rounds (each embeds every frame and box)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import duckdb
    import faiss
    import torch

    started = time.monotonic()
    config = build_lake(Path(args.cache), args.images, args.data_seed)
    config = replace(config, objects=ObjectsConfig())
    result = {"machine": describe({"torch": torch.__version__, "faiss": faiss.__version__,
                                   "duckdb": duckdb.__version__}),
              "speed": speed(config, args.rounds), "mining": mining(config, args.seeds)}
    result["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(result, indent=2, default=float))
        return
    s, m = result["speed"], result["mining"]
    print(f"{result['machine']}; load average {s['load_average']:.1f}\n")
    print(f"embed whole images: {s['images_per_s']:.1f} images/s; embed --objects: {s['boxes_per_s']:.1f} boxes/s "
          f"({s['boxes']} boxes of {s['frames']} frames, {s['frames_per_s_objects']:.1f} frames/s): "
          f"{s['boxes_vs_images']:.2f}x in vectors/s, {s['frames_vs_images']:.2f}x in frames/s")
    print(f"\n{m['images']} images, {m['boxes']} boxes, {m['edge_images']} edge-case images, target {m['target']}, "
          f"{m['seeds']} flagged boxes. Views per edge image collected, to 90%:")
    print("| search | edgemine | per seed (views) | lowest confidence/score | random | ceiling |")
    print("|---|---:|---:|---:|---:|---:|")
    for what, label in (("objects", "object-level (boxes)"), ("images", "image-level (frames)")):
        low = m["objects_lowest_score_per_edge"] if what == "objects" else m["images_lowest_confidence_per_edge"]
        print(f"| {label} | {m[what + '_per_edge']:.2f} | {min(m[what + '_views'])}..{max(m[what + '_views'])} | "
              f"{low:.2f} | {m[what + '_random_per_edge']:.2f} | {m[what + '_ceiling_per_edge']:.2f} |")
    print(f"\nobject search vs image search: {m['images_per_edge'] / m['objects_per_edge']:.2f}x fewer views "
          f"({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
