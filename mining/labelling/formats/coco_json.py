"""COCO: the images, categories and the newest prediction's boxes (with their masks as
``segmentation`` RLE) and label maps (one RLE annotation per class) as annotations (and
their scores as a results file) out; the annotations' ``bbox`` and ``segmentation`` back in."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mining.core.errors import LabelError
from mining.core.masks import bbox as bbox_of
from mining.labelling.formats.format_base import Annotation, Item, LabelFormat, compact_json, load_json


class Coco(LabelFormat):
    """COCO: images (``file_name`` the reference, our id in ``edgemine_image_id``),
    categories (ids from 1), the newest prediction's boxes as pseudo-label annotations
    (``bbox`` [x, y, w, h], ``area``, ``iscrowd`` 0), and their scores as a COCO
    results file (``results.json``)."""

    name = "coco"
    main_file = "annotations.json"
    importable = True
    carries_regions = True

    def files(self, items: list[Item]) -> dict[str, bytes]:
        images, annotations, results = [], [], []
        for n, item in enumerate(items, start=1):
            images.append({"id": n, "file_name": item.ref, "width": item.width, "height": item.height,
                           "edgemine_image_id": item.image_id})
            for r in item.regions:  # regions to merge or assign (superpixels): polygons along pixel edges
                annotations.append({"id": len(annotations) + 1, "image_id": n,
                                    "category_id": self.class_ids[r["label"]] + 1, "segmentation": r["polygons"],
                                    "bbox": r["bbox"], "area": r["area"], "iscrowd": 0, "edgemine_kind": "region"})
            if not self.predictions:
                continue
            for b in item.boxes:
                x1, y1, x2, y2 = b["box"]
                bbox = [x1, y1, x2 - x1, y2 - y1]
                category = self.class_ids[b["label"]] + 1  # COCO reserves 0
                mask = {"segmentation": b["mask"]} if "mask" in b else {}
                annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": category, "bbox": bbox,
                                    "area": b.get("area", bbox[2] * bbox[3]), "iscrowd": 0,
                                    "edgemine_score": b["score"]} | mask)
                results.append({"image_id": n, "category_id": category, "bbox": bbox, "score": b["score"]} | mask)
            for m in item.masks:  # a label map: one annotation per class, as COCO-Stuff writes them
                annotations.append({"id": len(annotations) + 1, "image_id": n,
                                    "category_id": self.class_ids[m["label"]] + 1, "segmentation": m["mask"],
                                    "bbox": _xywh(bbox_of(m["mask"])), "area": m["area"], "iscrowd": 0,
                                    "edgemine_kind": "semantic"})
        dataset = {
            "info": {"description": f"edgemine export batch {self.batch}", "version": "1.0",
                     "date_created": datetime.now(UTC).isoformat(), "edgemine_batch": self.batch},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": c, "supercategory": "object"} for k, c in enumerate(self.classes)],
        }
        written = {self.main_file: compact_json(dataset)}
        if self.predictions:
            written["results.json"] = compact_json(results)
        return written

    @classmethod
    def parse(cls, data: bytes, source: str) -> list[Annotation]:
        return parse_coco(load_json(data, source, cls.name))


def parse_coco(dataset: Any) -> list[Annotation]:
    """COCO annotations: ``bbox`` [x, y, w, h] per annotation, the class from ``categories``, and
    ``segmentation`` (RLE or polygons) when it has one (the box then may be left out)."""
    if not isinstance(dataset, dict) or not isinstance(dataset.get("annotations"), list) or "images" not in dataset:
        raise LabelError("not a COCO annotations file: expected images, annotations and categories")
    images, categories = coco_images(dataset), coco_categories(dataset)
    batch = (dataset.get("info") or {}).get("edgemine_batch") if isinstance(dataset.get("info"), dict) else None
    found = []
    for n, ann in enumerate(dataset["annotations"]):
        raw = json.dumps(ann)[:2000]
        a = Annotation(n, raw, batch=batch)
        try:
            image = images.get(_key(ann["image_id"]))
            if image is None:
                a.error = f"annotation for COCO image id {ann['image_id']}, which the file's images lack"
            else:
                a.ref, a.image_id = image.get("file_name"), image.get("edgemine_image_id")
            if _key(ann["category_id"]) not in categories:
                a.error = a.error or f"unknown class: category_id {ann['category_id']} is not in the file's categories"
            a.label = categories.get(_key(ann["category_id"]))
            a.mask = ann.get("segmentation") or None
            a.mask_kind = "semantic" if ann.get("edgemine_kind") == "semantic" else "instance"
            if a.mask_kind == "instance" and ("bbox" in ann or a.mask is None):
                x, y, w, h = (float(v) for v in ann["bbox"])
                a.box = [x, y, x + w, y + h]
        except (KeyError, TypeError, ValueError) as e:
            a.error = a.error or f"malformed annotation ({type(e).__name__}: {e})"
        found.append(a)
    return found


def _xywh(box: list[float]) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]


def coco_images(dataset: dict) -> dict[Any, dict]:
    """A COCO dataset's ``images`` by id (each the image's object: ``file_name``, ``width``...)."""
    return {_key(im.get("id")): im for im in _list(dataset.get("images")) if isinstance(im, dict)}


def coco_categories(dataset: dict) -> dict[Any, Any]:
    """A COCO dataset's ``categories`` as {id: name}."""
    return {_key(c.get("id")): c.get("name") for c in _list(dataset.get("categories")) if isinstance(c, dict)}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _key(value: Any) -> Any:
    """An id as a dict key: JSON's lists and objects as their text (they are ids no file means)."""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value
