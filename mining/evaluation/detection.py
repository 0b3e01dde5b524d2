"""Detection metrics per model version and slice: COCO mAP through pycocotools' own COCOeval.

Ground truth: the boxes of each image's newest labels (as for classification, mining.evaluation.slices);
detections: the boxes of the newest prediction per image and model version (the
``detections`` table). Boxes are ``[x1, y1, x2, y2]`` in pixels in the lake and
``[x, y, w, h]`` for COCO. Only images with labelled boxes count; an image the
version found nothing on still counts (its boxes are missed).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

from mining.core.sql import LakeDB, quote_literal
from mining.evaluation.slices import FRAME_FROM, Slice, frame_ctes

# COCOeval.stats positions (pycocotools' summarize()) -> our metric names.
STATS = {0: "map", 1: "map50", 2: "map75", 3: "map_small", 4: "map_medium", 5: "map_large", 8: "ar100"}


def has_boxes(db: LakeDB) -> bool:
    """Whether the lake has labelled boxes and detections to compare."""
    labelled = db.query("SELECT count(*) AS n FROM labels WHERE box IS NOT NULL").column("n")[0].as_py()
    return bool(labelled) and bool(db.query("SELECT count(*) AS n FROM detections").column("n")[0].as_py())


def boxes_in_slice(db: LakeDB, version: str, one: Slice) -> tuple[list[dict], list[dict]]:
    """(ground-truth boxes, detections) of the version's labelled images in the slice: dicts of
    ``image_id``, ``label``, ``box`` (x1, y1, x2, y2) and, for detections, ``score``."""
    inside = (f"WITH {frame_ctes()}, inside AS (SELECT p.image_id, p.prediction_id FROM {FRAME_FROM} "
              f"WHERE p.model_version = {quote_literal(version)} AND len(t.box_areas) > 0 AND ({one.sql}))")
    truth = db.query(f"{inside} SELECT n.image_id, n.label, n.box FROM newest n JOIN inside USING (image_id) "
                     "WHERE n.box IS NOT NULL ORDER BY n.image_id, n.label_id").to_pylist()
    found = db.query(f"{inside} SELECT d.image_id, d.label, d.box, d.score FROM detections d "
                     "JOIN inside USING (prediction_id) ORDER BY d.image_id, d.detection_id").to_pylist()
    return truth, found


def coco_metrics(truth: list[dict], found: list[dict], iou_type: str = "bbox",
                 ) -> list[tuple[str, str | None, float | None, int]]:
    """(metric, label, value, n) rows: COCOeval stats overall and mAP@[.5:.95] per class.
    ``n`` is the number of ground-truth boxes. ``iou_type`` "segm" compares masks instead:
    each dict then has ``mask`` (COCO RLE) and truth's ``area`` (its pixels), and the
    metrics are named ``mask_map``, ``mask_map50``... (mining.evaluation.segmentation)."""
    prefix = "mask_" if iou_type == "segm" else ""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not truth:
        return [(prefix + "map", None, None, 0)]
    classes = sorted({b["label"] for b in truth} | {b["label"] for b in found})
    category = {c: k + 1 for k, c in enumerate(classes)}
    images = {i: k + 1 for k, i in enumerate(sorted({b["image_id"] for b in truth}))}
    gt = COCO()
    sizes = {b["image_id"]: b["mask"]["size"] for b in truth if "mask" in b}  # segm: COCO reads masks at their size
    gt.dataset = {"images": [{"id": k} | ({"height": sizes[i][0], "width": sizes[i][1]} if i in sizes else {})
                             for i, k in images.items()],
                  "categories": [{"id": k, "name": c} for c, k in category.items()],
                  "annotations": [_coco_box(b, images, category) | {"id": n + 1, "iscrowd": 0}
                                  for n, b in enumerate(truth)]}
    for a, b in zip(gt.dataset["annotations"], truth):
        a["area"] = b["area"] if iou_type == "segm" else a["bbox"][2] * a["bbox"][3]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt.createIndex()
        kept = [_coco_box(b, images, category) | {"score": b["score"]} for b in found if b["image_id"] in images]
        if not kept:
            return [(prefix + name, None, 0.0, len(truth)) for name in STATS.values()]
        evaluator = COCOeval(gt, gt.loadRes(kept), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    rows = [(prefix + name, None, _stat(evaluator.stats[k]), len(truth)) for k, name in STATS.items()]
    precision = evaluator.eval["precision"]  # [iou thresholds, recall points, classes, area ranges, max dets]
    support = {c: sum(b["label"] == c for b in truth) for c in classes}
    for c, k in category.items():
        p = precision[:, :, k - 1, 0, -1]
        rows.append((prefix + "map", c, float(p[p > -1].mean()) if (p > -1).any() else None, support[c]))
    return rows


def _coco_box(b: dict, images: dict, category: dict) -> dict:
    found = {"image_id": images[b["image_id"]], "category_id": category[b["label"]]}
    if "mask" in b:  # segm: no bbox, or loadRes would take the results for boxes (it derives one from the mask)
        return found | {"segmentation": b["mask"]}
    x1, y1, x2, y2 = b["box"]
    return found | {"bbox": [x1, y1, x2 - x1, y2 - y1]}


def _stat(value: float) -> float | None:
    return None if value < 0 else float(value)  # COCOeval says -1 where a range has no ground truth


def detection_rows(db: LakeDB, versions: Sequence[str], slices: Sequence[Slice]) -> list[tuple]:
    """(model_version, slice, metric, label, value, n) rows for every version and slice."""
    rows = []
    detected = set(db.query("SELECT DISTINCT model_version FROM detections").column("model_version").to_pylist())
    for v in [v for v in versions if v in detected]:
        for one in slices:
            truth, found = boxes_in_slice(db, v, one)
            rows += [(v, one.name, *r) for r in coco_metrics(truth, found)]
    return rows

