"""Segmentation masks as COCO run-length encoding (RLE), through pycocotools' own codec.

A mask is stored as its compressed COCO RLE: ``{"size": [height, width], "counts": str}``
(the ``masks`` table keeps ``height``, ``width`` and ``counts``). These functions turn what
files carry into that form, checking it against the image's size, and back into pixels:

- ``parse_mask``: a COCO ``segmentation`` (compressed or uncompressed RLE, or polygons
  ``[[x1, y1, x2, y2, ...], ...]`` in pixels) as a compressed RLE, or why it is not one;
- ``label_map_masks``: a semantic label map (an ``(h, w)`` array of class indices) as one
  RLE per class present;
- ``decode`` (an RLE to a ``(h, w)`` uint8 array of 0/1), ``encode`` (the reverse),
  ``area`` (pixels set) and ``bbox`` ([x1, y1, x2, y2] in pixels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

Rle = dict[str, Any]  # {"size": [h, w], "counts": str}


def encode(mask: np.ndarray) -> Rle:
    """A ``(h, w)`` array (nonzero: inside) as a compressed RLE with text counts."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode(rle: Rle) -> np.ndarray:
    """An RLE (``counts`` text or bytes) as a ``(h, w)`` uint8 array of 0/1."""
    from pycocotools import mask as coco_mask

    return coco_mask.decode(_coco(rle))


def area(rle: Rle) -> int:
    """The pixels an RLE covers."""
    from pycocotools import mask as coco_mask

    return int(coco_mask.area(_coco(rle)))


def bbox(rle: Rle) -> list[float]:
    """The mask's bounding box [x1, y1, x2, y2] in pixels (zeros for an empty mask)."""
    from pycocotools import mask as coco_mask

    x, y, w, h = (float(v) for v in coco_mask.toBbox(_coco(rle)))
    return [x, y, x + w, y + h]


def iou(a: Sequence[Rle], b: Sequence[Rle]) -> np.ndarray:
    """IoU of every mask of ``a`` with every mask of ``b``: float64 ``(len(a), len(b))``."""
    from pycocotools import mask as coco_mask

    if not a or not b:
        return np.zeros((len(a), len(b)))
    return np.asarray(coco_mask.iou([_coco(r) for r in a], [_coco(r) for r in b], [0] * len(b)), np.float64)


def parse_mask(value: Any, height: int | None, width: int | None) -> Rle | str:
    """A COCO ``segmentation`` as a compressed RLE of an image ``height`` x ``width``; or why not.

    RLE: ``{"size": [h, w], "counts": str or [int...]}``, its size the image's; polygons:
    a list of ``[x1, y1, x2, y2, ...]`` (pixels). Without the image's size nothing is a mask."""
    from pycocotools import mask as coco_mask

    if not height or not width:
        return "the image's size is unknown (registered without one): its mask cannot be checked"
    if isinstance(value, dict):
        return _parse_rle(value, height, width)
    if not isinstance(value, list) or not value:
        return "segmentation must be an RLE {size: [h, w], counts} or a list of polygons [[x1, y1, x2, y2, ...]]"
    for polygon in value:
        if not (isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0
                and all(_is_number(v) for v in polygon)):
            return "each polygon must be [x1, y1, x2, y2, x3, y3, ...]: at least three points of finite numbers"
    rles = coco_mask.frPyObjects([[float(v) for v in p] for p in value], height, width)
    merged = coco_mask.merge(rles)
    return {"size": [height, width], "counts": merged["counts"].decode("ascii")}


def _parse_rle(value: dict, height: int, width: int) -> Rle | str:
    from pycocotools import mask as coco_mask

    size, counts = value.get("size"), value.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        return "RLE size must be [height, width], two positive whole numbers"
    if size != [height, width]:
        return f"RLE size {size} is not the image's [height, width] [{height}, {width}]"
    h, w = size
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            return "uncompressed RLE counts must be whole numbers >= 0"
        if sum(counts) != h * w:
            return f"uncompressed RLE counts add up to {sum(counts)} pixels, not the mask's {h * w}"
        rle = coco_mask.frPyObjects({"size": size, "counts": counts}, h, w)
        return {"size": size, "counts": rle["counts"].decode("ascii")}
    if not isinstance(counts, str) or not counts:
        return "RLE counts must be COCO's compressed text or a list of run lengths"
    if not all(48 <= ord(c) < 112 for c in counts):
        return "RLE counts is not COCO's compressed text (characters 0 to o)"
    runs = _runs(counts)
    if runs is None or sum(runs) != h * w:
        return f"RLE counts do not cover the mask's {h * w} pixels ({h} x {w}) in runs of zero or more"
    return {"size": size, "counts": counts}


def _runs(counts: str) -> list[int] | None:
    """The run lengths of a compressed RLE, read as pycocotools' rleFrString reads them; None
    for a truncated text or a negative run. Checked before any decoding: pycocotools' C
    decoder writes each run without bounds checks, so runs that overflow the mask must never reach it."""
    runs: list[int] = []
    i = 0
    while i < len(counts):
        x, shift, more = 0, 0, True
        while more:
            if i >= len(counts):
                return None
            c = ord(counts[i]) - 48
            x |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            i += 1
            shift += 1
            if not more and c & 0x10:
                x |= -1 << (5 * shift)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            return None
        runs.append(x)
    return runs


def label_map_masks(label_map: np.ndarray, classes: Sequence[str]) -> dict[str, Rle] | str:
    """A semantic label map (``(h, w)`` integers, the class index per pixel) as {class: RLE}
    for each class present; or why not (a value beyond the class list)."""
    values = np.unique(label_map)
    beyond = [int(v) for v in values if v < 0 or v >= len(classes)]
    if beyond:
        return (f"pixel value(s) {', '.join(map(str, beyond[:5]))} beyond the {len(classes)} classes of --classes "
                f"(values 0 to {len(classes) - 1})")
    return {classes[int(v)]: encode(label_map == v) for v in values}


def mask_rows(masks: list[dict[str, Any]], **common: Any) -> pa.Table:
    """Rows of the ``masks`` table: each dict has the table's columns (those it lacks null) and
    ``rle``, the mask; ``common``: values every row shares (``source``, ``ingested_at``)."""
    from mining.core.schema import MASKS, make_rows

    rles = [m["rle"] for m in masks]
    names = [f.name for f in MASKS.schema if f.name not in ("height", "width", "counts", "area", *common)]
    return make_rows(MASKS, len(masks), **{n: [m.get(n) for m in masks] for n in names},
                     height=[r["size"][0] for r in rles], width=[r["size"][1] for r in rles],
                     counts=[r["counts"] for r in rles], area=[area(r) for r in rles], **common)


def _coco(rle: Rle) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
