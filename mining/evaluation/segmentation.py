"""Segmentation metrics per model version and slice (docs/METRICS.md), written to ``metrics``
beside the classification and box metrics, and the samples their regression alarms compare.

- Instance masks: COCO mask mAP through pycocotools' COCOeval (``iouType="segm"``, the
  box metrics' code in mining.evaluation.detection): ``mask_map``, ``mask_map50``,
  ``mask_map75``, ``mask_map_small``... and ``mask_map`` per class. Truth: the masks of each
  image's newest labels; found: the masks of the version's newest prediction's detections.
- Semantic masks (label maps): per class IoU = the pixels both the truth and the version
  give the class / the pixels either gives it, summed over the slice's images (``iou``,
  label the class), and their mean over the classes (``miou``).

Regressions (mining.evaluation.metrics.check_regressions) compare, per slice, each truth
instance's 0/1 "found": a detection of its class whose mask overlaps it at IoU >= 0.5, each
detection used once, the most confident first (``mask_recall50``), and each image's mean IoU
over its classes (``miou``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mining.core import masks
from mining.core.sql import LakeDB, quote_literal
from mining.evaluation.detection import coco_metrics
from mining.evaluation.slices import FRAME_FROM, Slice, frame_ctes

MATCH_IOU = 0.5  # the IoU at which a truth instance counts as found (mask_recall50)


def has_masks(db: LakeDB, kind: str) -> bool:
    """Whether the lake has masks of ``kind`` (instance, semantic) both in labels and in predictions."""
    found = db.query("SELECT count(label_id) AS labels, count(prediction_id) AS predictions FROM masks "
                     "WHERE kind = $k", {"k": kind}).to_pylist()[0]
    return bool(found["labels"]) and bool(found["predictions"])


def masks_in_slice(db: LakeDB, version: str, one: Slice, kind: str) -> tuple[list[dict], list[dict]]:
    """(truth masks, the version's masks) of ``kind`` on the slice's images that have truth
    masks of that kind: dicts of ``image_id``, ``label``, ``mask`` (RLE), ``area``, and for
    the version's instance masks ``score``."""
    inside = (f"WITH {frame_ctes()}, inside AS (SELECT p.image_id, p.prediction_id FROM {FRAME_FROM} "
              f"WHERE p.model_version = {quote_literal(version)} AND ({one.sql})), "
              "truth_masks AS (SELECT n.image_id, n.label, n.label_id, m.height, m.width, m.counts, m.area "
              "FROM newest n JOIN inside USING (image_id) JOIN masks m ON m.label_id = n.label_id "
              f"WHERE m.kind = {quote_literal(kind)})")
    truth = db.query(f"{inside} SELECT * FROM truth_masks ORDER BY image_id, label_id").to_pylist()
    if kind == "instance":
        sql = (f"{inside} SELECT d.image_id, d.label, d.score, m.height, m.width, m.counts, m.area FROM detections d "
               "JOIN inside USING (prediction_id) JOIN masks m ON m.detection_id = d.detection_id "
               "WHERE d.image_id IN (SELECT image_id FROM truth_masks) ORDER BY d.image_id, d.detection_id")
    else:
        sql = (f"{inside} SELECT m.image_id, m.label, m.height, m.width, m.counts, m.area FROM masks m "
               "JOIN inside USING (prediction_id) WHERE m.kind = 'semantic' "
               "AND m.image_id IN (SELECT image_id FROM truth_masks) ORDER BY m.image_id, m.label")
    found = db.query(sql).to_pylist()
    return [_with_rle(r) for r in truth], [_with_rle(r) for r in found]


def _with_rle(row: dict) -> dict:
    row["mask"] = {"size": [row.pop("height"), row.pop("width")], "counts": row.pop("counts")}
    return row


def semantic_metrics(truth: list[dict], found: list[dict]) -> list[tuple[str, str | None, float | None, int]]:
    """(metric, label, value, n) rows: ``iou`` per class (intersection over union of the pixels,
    summed over the images) and ``miou``, their mean; ``n`` the images the class is in (truth
    or found), for miou the images."""
    per_image = _by_image(truth, found)
    if not per_image:
        return [("miou", None, None, 0)]
    inter: dict[str, int] = {}
    union: dict[str, int] = {}
    images: dict[str, int] = {}
    for truth_of, found_of in per_image.values():
        for c in set(truth_of) | set(found_of):
            i, u = _overlap(truth_of.get(c), found_of.get(c))
            inter[c], union[c], images[c] = inter.get(c, 0) + i, union.get(c, 0) + u, images.get(c, 0) + 1
    ious = {c: inter[c] / union[c] for c in union if union[c]}
    rows = [("iou", c, ious.get(c), images[c]) for c in sorted(union)]
    return rows + [("miou", None, float(np.mean(list(ious.values()))) if ious else None, len(per_image))]


def image_mious(truth: list[dict], found: list[dict]) -> dict[str, float]:
    """Each image's mean IoU over the classes its truth or the version gives it."""
    result = {}
    for image_id, (truth_of, found_of) in _by_image(truth, found).items():
        ious = [i / u for i, u in (_overlap(truth_of.get(c), found_of.get(c)) for c in set(truth_of) | set(found_of))
                if u]
        result[image_id] = float(np.mean(ious)) if ious else 1.0
    return result


def _by_image(truth: list[dict], found: list[dict]) -> dict[str, tuple[dict, dict]]:
    """image_id -> ({class: truth RLE}, {class: found RLE}) for the images with truth."""
    per_image: dict[str, tuple[dict, dict]] = {}
    for m in truth:
        per_image.setdefault(m["image_id"], ({}, {}))[0][m["label"]] = m["mask"]
    for m in found:
        if m["image_id"] in per_image:
            per_image[m["image_id"]][1][m["label"]] = m["mask"]
    return per_image


def _overlap(a: dict | None, b: dict | None) -> tuple[int, int]:
    """(intersection, union) in pixels of two RLEs of one image (None: an empty mask)."""
    if a is None or b is None:
        return 0, masks.area(a or b) if (a or b) else 0
    x, y = masks.decode(a).astype(bool), masks.decode(b).astype(bool)
    return int((x & y).sum()), int((x | y).sum())


def instances_found(truth: list[dict], found: list[dict], iou: float = MATCH_IOU) -> np.ndarray:
    """0/1 per truth instance (in ``truth``'s order): matched by a found mask of its class and
    image at IoU >= ``iou``, greedily, the most confident found mask first, each used once."""
    hit = np.zeros(len(truth), np.int64)
    by_key: dict[tuple[str, str], list[int]] = {}
    for k, m in enumerate(truth):
        by_key.setdefault((m["image_id"], m["label"]), []).append(k)
    ranked = sorted(found, key=lambda m: -(m.get("score") if m.get("score") is not None else 1.0))
    for m in ranked:
        candidates = [k for k in by_key.get((m["image_id"], m["label"]), []) if not hit[k]]
        if not candidates:
            continue
        overlaps = masks.iou([truth[k]["mask"] for k in candidates], [m["mask"]])[:, 0]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou:
            hit[candidates[best]] = 1
    return hit


def segmentation_rows(db: LakeDB, versions: Sequence[str], slices: Sequence[Slice]) -> list[tuple]:
    """(model_version, slice, metric, label, value, n) rows of the mask metrics, for every
    version with masks and every slice."""
    rows = []
    masked = set(db.query("SELECT DISTINCT model_version FROM masks WHERE model_version IS NOT NULL")
                 .column("model_version").to_pylist())
    for kind, compute in (("instance", lambda t, f: coco_metrics(t, f, "segm")), ("semantic", semantic_metrics)):
        if not has_masks(db, kind):
            continue
        for v in [v for v in versions if v in masked]:
            for one in slices:
                truth, found = masks_in_slice(db, v, one, kind)
                if truth:
                    rows += [(v, one.name, *r) for r in compute(truth, found)]
    return rows


def regression_samples(db: LakeDB, version: str, baseline: str,
                       one: Slice) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Per mask metric (``mask_recall50``, ``miou``) the slice's samples of both versions, as
    check_regressions compares them: (metric, ids (a number per truth instance or image,
    sorted), is_b (the version's, not the baseline's), values)."""
    found = []
    for metric, kind in (("mask_recall50", "instance"), ("miou", "semantic")):
        if not has_masks(db, kind):
            continue
        samples: dict[tuple[str, bool], float] = {}
        for v in (baseline, version):
            truth, predicted = masks_in_slice(db, v, one, kind)
            if kind == "instance":
                values = instances_found(truth, predicted)
                samples |= {(f"{t['image_id']}|{t['label_id']}", v == version): float(x) for t, x in zip(truth, values)}
            else:
                samples |= {(image_id, v == version): x for image_id, x in image_mious(truth, predicted).items()}
        if not samples:
            continue
        keys = sorted(samples)
        names = {k: n for n, k in enumerate(sorted({k for k, _ in keys}))}
        found.append((metric, np.array([names[k] for k, _ in keys], np.int64), np.array([b for _, b in keys]),
                      np.array([samples[k] for k in keys], np.float64)))
    return found
