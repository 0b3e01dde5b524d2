"""Benchmark: export a large set for labelling, and import its labels back.

A synthetic local lake of ``--images`` images (written by the project's own writer,
mining.core.tables: one prediction and two detection boxes per image; an empty file per
image, so the export's check that files exist lists a real folder) is exported by
reference, in one task, to COCO and to Label Studio JSON with `mining.labelling.export`
(what `edgemine export` runs: sources, checks, the batch's files, the `exports`
commit). Beside it, in the same run, what a user would otherwise write: one SQL
query for the same rows (images, newest prediction, its boxes) and a plain loop
building the same COCO dict, then ``json.dump``. Then the COCO file's annotations
are imported back into ``labels`` (`edgemine labels import`), and imported again
(nothing added). FiftyOne publishes no export rate to compare with.

    python tests/benchmarks/bench_export.py [--images 100000] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from mining.core import tables  # noqa: E402
from mining.core.config import Config  # noqa: E402
from mining.core.lake import Lake  # noqa: E402
from mining.core.schema import DETECTIONS, IMAGES, PREDICTIONS, make_rows  # noqa: E402
from mining.core.sql import LakeDB  # noqa: E402
from mining.labelling.export import export_images  # noqa: E402
from mining.labelling.labels import import_labels  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

CLASSES = np.array(["car", "truck", "person", "bicycle"])
WIDTH, HEIGHT = 640, 480
TS = datetime(2026, 10, 1, tzinfo=UTC)


def build(lake: Lake, folder: Path, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    ids = [hashlib.sha256(str(i).encode()).hexdigest()[:20] for i in range(n)]
    uris = [str(folder / f"{i}.jpg") for i in ids]
    for uri in uris:
        open(uri, "wb").close()
    info = tables.commit_info("bench")
    tables.append(lake, IMAGES, make_rows(IMAGES, n, image_id=ids, uri=uris, width=WIDTH, height=HEIGHT,
                                          sha256=[i * 3 + "0000" for i in ids], format="JPEG", ingested_at=TS), info)
    ts = pa.array([TS] * n, pa.timestamp("us", tz="UTC"))
    labels = CLASSES[rng.integers(0, len(CLASSES), n)]
    pids = np.char.add("p", np.arange(n).astype(str))
    tables.append(
        lake,
        PREDICTIONS,
        make_rows(
            PREDICTIONS,
            n,
            prediction_id=pids,
            image_id=ids,
            model_version="v7",
            ts=ts,
            label=labels,
            confidence=rng.random(n).astype(np.float32),
            date=TS.date(),
        ),
        info,
    )
    x1 = rng.uniform(0, WIDTH / 2, 2 * n)
    y1 = rng.uniform(0, HEIGHT / 2, 2 * n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(10, WIDTH / 2, 2 * n), y1 + rng.uniform(10, HEIGHT / 2, 2 * n)], 1)
    box = pa.FixedSizeListArray.from_arrays(pa.array(boxes.astype(np.float32).ravel()), 4)
    tables.append(
        lake,
        DETECTIONS,
        make_rows(
            DETECTIONS,
            2 * n,
            detection_id=np.char.add("d", np.arange(2 * n).astype(str)),
            prediction_id=np.repeat(pids, 2),
            image_id=np.repeat(ids, 2),
            model_version="v7",
            ts=pa.array([TS] * (2 * n), pa.timestamp("us", tz="UTC")),
            box=box,
            label=CLASSES[rng.integers(0, len(CLASSES), 2 * n)],
            score=rng.random(2 * n).astype(np.float32),
            date=TS.date(),
        ),
        info,
    )
    return ids


def plain_coco(lake: Lake, ids: list[str], path: Path) -> None:
    """What a user would write: one query, a loop, json.dump."""
    with LakeDB(lake) as db:
        rows = db.query(
            "WITH newest AS (SELECT image_id, arg_max(prediction_id, ts) AS prediction_id "
            "FROM predictions GROUP BY image_id) "
            "SELECT i.image_id, i.uri, i.width, i.height, list({'box': d.box, 'label': d.label, 'score': d.score}) "
            "FILTER (d.box IS NOT NULL) AS boxes FROM images i JOIN newest n USING (image_id) "
            "LEFT JOIN detections d USING (prediction_id) WHERE i.image_id IN (SELECT unnest($ids)) "
            "GROUP BY ALL ORDER BY i.image_id",
            {"ids": ids},
        ).to_pylist()
    categories = {c: k + 1 for k, c in enumerate(sorted(CLASSES))}
    images, annotations = [], []
    for n, row in enumerate(rows, start=1):
        images.append({"id": n, "file_name": row["uri"], "width": row["width"], "height": row["height"]})
        for b in row["boxes"] or []:
            x1, y1, x2, y2 = b["box"]
            annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": categories[b["label"]],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": v, "name": k} for k, v in categories.items()]}, f)


def timed(run) -> tuple[float, object]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        lake = Lake(str(root / "lake"))
        t_build, ids = timed(lambda: build(lake, root / "images", args.images))
        config = Config(lake=lake.uri)
        results: dict[str, object] = {"images": args.images, "build_s": round(t_build, 1)}
        with LakeDB(lake) as db:
            for fmt in ("coco", "label-studio"):
                seconds, summary = timed(lambda fmt=fmt: export_images(db, ids, fmt=fmt, target=str(root / "out" / fmt),
                                                                       config=config, source="bench"))
                assert summary.exported == args.images, summary
                results[f"export {fmt}"] = {"s": round(seconds, 2), "images_per_s": round(args.images / seconds)}
        seconds, _ = timed(lambda: plain_coco(lake, ids, root / "plain.json"))
        results["plain json.dump loop (COCO)"] = {"s": round(seconds, 2), "images_per_s": round(args.images / seconds)}
        coco = next((root / "out" / "coco").glob("*/annotations.json"))
        with LakeDB(lake) as db:
            seconds, summary = timed(lambda: import_labels(db, str(coco), fmt="coco", config=config, annotator="bench"))
            assert summary.imported == 2 * args.images and summary.errors == 0, summary
            results["import coco labels"] = {"s": round(seconds, 2), "labels": summary.imported,
                                             "labels_per_s": round(summary.imported / seconds)}
            seconds, summary = timed(lambda: import_labels(db, str(coco), fmt="coco", config=config, annotator="bench"))
            assert summary.imported == 0
            results["import again (nothing added)"] = {"s": round(seconds, 2)}
        import deltalake
        import duckdb

        results["machine"] = describe({"duckdb": duckdb.__version__, "deltalake": deltalake.__version__,
                                       "pyarrow": pa.__version__, "numpy": np.__version__})
        results["load"] = os.getloadavg()[0]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for k, v in results.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
