"""Labels back into the lake: annotation files (or a Label Studio project) into ``labels``.

``import_labels`` reads one source in a format with a reader (mining.labelling.formats:
Label Studio's JSON export, a file or pulled from a server's project; COCO
annotations; CVAT for images 1.1 XML; a YOLO folder). Each annotation
becomes a row of ``labels`` (image, label, box in pixels or none, annotator,
batch, format, when), or a row of ``errors`` with the reason: an image the lake
does not have, a malformed box, an unknown class. The rest land.

How an image is found: our id where the file carries it (``edgemine_image_id`` in
Label Studio tasks and COCO images, a YOLO file named by it), else the reference
an export wrote (``exports.ref``), else a registered file's URI, else a file name
whose stem is an image id.

Exactly once: ``label_id`` is derived from (image, annotator, batch, label, box),
and rows are added only for ids the table lacks (``tables.insert_new``), so
importing the same file twice adds nothing; its error rows are replaced.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mining.core import tables
from mining.core.config import Config
from mining.core.errors import LabelError
from mining.core.lake import open_url, path_of
from mining.core.masks import bbox, mask_rows, parse_mask
from mining.core.schema import ERRORS, IMAGE_ID_HEX, LABELS, MASKS, error_rows, make_rows
from mining.core.sql import LakeDB, quote_literal
from mining.core.summary import Summary
from mining.labelling import brush_rle
from mining.labelling.formats import Annotation, reader_for
from mining.labelling.formats.format_base import checked
from mining.labelling.formats.label_studio_json import LabelStudio, parse_label_studio

JOB = "labels-import"
_IMAGE_ID = re.compile(rf"^[0-9a-f]{{{IMAGE_ID_HEX}}}$")
BOX_SLACK = 1.0  # pixels a box may stick out of its image (rounding in the tools) before it is refused


@dataclass
class LabelsSummary(Summary):
    """``imported``: new rows of ``labels``; ``already``: rows the table had (the same
    file imported again); ``errors``: annotations refused, each a row of ``errors``."""

    job: str = JOB
    source: str = ""
    format: str = ""
    batch: str = ""
    annotations: int = 0
    imported: int = 0
    already: int = 0
    images: int = 0


def label_id(image_id: str, annotator: str, batch: str, label: str, box: list[float] | None) -> str:
    """A label's id: a hash of (image, annotator, batch, label, box rounded to 0.01 px)."""
    box_text = "-" if box is None else ",".join(f"{v:.2f}" for v in box)
    return hashlib.sha256(f"{image_id}|{annotator}|{batch}|{label}|{box_text}".encode()).hexdigest()[:24]


def read_source(source: str, fmt: str, config: Config, *, project: str | None = None) -> list[Annotation]:
    """The annotations in ``source`` (a file, a YOLO folder, or a Label Studio URL with ``project``)."""
    label_format = reader_for(fmt)
    if source.startswith(("http://", "https://")):
        if not issubclass(label_format, LabelStudio) or not project:
            raise LabelError("an http(s) source is a Label Studio server: use --format label-studio and --project NAME")
        from mining.labelling.label_studio import pull_annotations

        return checked(parse_label_studio(pull_annotations(source, project, token=config.export.label_studio_token)))
    fs, path = open_url(source, config.s3)
    return checked(label_format.read(fs, path, source))


def resolve_images(db: LakeDB, annotations: list[Annotation]) -> dict[str, str]:
    """reference or id as the file gives it -> the lake's image id, for those found."""
    given = {a.image_id for a in annotations if a.image_id}
    refs = {a.ref for a in annotations if a.ref and not a.image_id}
    found: dict[str, str] = {}
    if given:
        known = db.query("SELECT image_id FROM images WHERE image_id IN (SELECT unnest($ids))", {"ids": sorted(given)})
        found |= {i: i for i in known.column("image_id").to_pylist()}
    if refs:
        rows = db.query(
            "WITH r AS (SELECT unnest($refs) AS ref) "
            "SELECT r.ref, coalesce(any_value(e.image_id), any_value(f.image_id)) AS image_id FROM r "
            "LEFT JOIN exports e ON e.ref = r.ref LEFT JOIN image_files f ON f.uri = r.ref GROUP BY r.ref",
            {"refs": sorted(refs)}).to_pydict()
        found |= {r: i for r, i in zip(rows["ref"], rows["image_id"]) if i}
        stems = {
            r: posixpath.splitext(posixpath.basename(path_of(r.split("?", 1)[0])))[0] for r in refs if r not in found
        }
        candidates = sorted({s for s in stems.values() if _IMAGE_ID.match(s)})
        if candidates:
            known = set(db.query("SELECT image_id FROM images WHERE image_id IN (SELECT unnest($ids))",
                                 {"ids": candidates}).column("image_id").to_pylist())
            found |= {r: s for r, s in stems.items() if s in known}
    return found


def import_labels(db: LakeDB, source: str, *, fmt: str, config: Config, batch: str | None = None,
                  annotator: str | None = None, project: str | None = None, allow_new_classes: bool = False,
                  progress: Callable[[int], None] | None = None) -> LabelsSummary:
    """Import the labels of ``source`` (format ``fmt``) into ``labels``; bad annotations
    to ``errors``.

    Args:
        source: a file (local or s3://), a YOLO folder, or a Label Studio URL (with ``project``).
        batch: the batch the labels belong to (default: the export batch the file names, else the file).
        annotator: who labelled (default: the file's own, e.g. Label Studio's user; else "unknown").
        allow_new_classes: take classes the lake has not seen (else they go to errors).

    Returns:
        a LabelsSummary.

    Raises:
        LabelError: an unknown format, a file that is not that format (nothing written)."""
    started = time.monotonic()
    annotations = read_source(source, fmt, config, project=project)
    summary = LabelsSummary(source=source, format=fmt, annotations=len(annotations))
    where = f"{source}?project={project}" if project else source
    default_batch = batch or f"import:{posixpath.basename(where.rstrip('/'))}"
    ids = resolve_images(db, annotations)
    from mining.labelling.export import lake_classes

    classes = set(lake_classes(db))
    sizes = _sizes(db, sorted(set(ids.values())))
    now = datetime.now(UTC)
    rows: dict[str, dict[str, Any]] = {}
    label_masks: dict[str, dict[str, Any]] = {}
    refused = []
    for a in annotations:
        image_id = ids.get(a.image_id) if a.image_id else ids.get(a.ref or "")
        reason = a.error
        if reason is None and image_id is None:
            reason = f"image {a.image_id or a.ref} is not in the lake"
        if reason is None and not a.label:
            reason = "annotation without a label"
        if reason is None and a.label not in classes and not allow_new_classes:
            reason = (
                f"unknown class {a.label!r}: not one of the lake's classes ({', '.join(sorted(classes)) or 'none'}); "
                "pass --allow-new-classes to take it"
            )
        box = a.box
        if reason is None and a.yolo_box is not None:
            width, height = sizes.get(image_id, (None, None))
            if not width or not height:
                reason = "the image's size is unknown: YOLO boxes cannot be turned into pixels"
            else:
                cx, cy, w, h = a.yolo_box
                box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        rle = None
        if reason is None and a.mask is not None:
            width, height = sizes.get(image_id, (None, None))
            rle = _mask(a.mask, height, width)
            reason, rle = (f"bad mask: {rle}", None) if isinstance(rle, str) else (None, rle)
            if rle is not None and box is None and a.mask_kind == "instance":
                box = bbox(rle)
        if reason is None and box is not None:
            reason = _box_problem(box, sizes.get(image_id, (None, None)))
        if reason is not None:
            refused.append({"source": where, "row": a.row, "uri": a.ref or a.image_id, "reason": reason, "raw": a.raw})
            continue
        who = annotator or a.annotator or "unknown"
        batch_name = batch or a.batch or default_batch
        rounded = None if box is None else [round(v, 2) for v in box]
        key = label_id(image_id, who, batch_name, a.label, rounded)
        rows[key] = {"label_id": key, "image_id": image_id, "label": a.label, "box": rounded, "annotator": who,
                     "batch": batch_name, "labelled_at": a.labelled_at or now}
        if rle is not None:
            label_masks[key] = {"mask_id": key, "kind": a.mask_kind, "image_id": image_id, "label_id": key,
                                "label": a.label, "rle": rle}
    info = tables.commit_info(JOB, config.mining.user, source=where, format=fmt)
    errors = error_rows(JOB, refused, now)
    tables.replace(db.lake, ERRORS, errors, f"job = '{JOB}' AND source = {quote_literal(where)}", info)
    summary.add_errors(refused)
    values = list(rows.values())
    if values:
        table = make_rows(
            LABELS,
            len(values),
            **{c: [v[c] for v in values] for c in values[0]},
            format=fmt,
            source=where,
            imported_at=now,
        )
        if label_masks:  # before the labels: a kill between the two leaves masks of no label, redone on a rerun
            tables.insert_new(db.lake, MASKS, mask_rows(list(label_masks.values()), source=where, ingested_at=now),
                              info)
        summary.imported = tables.insert_new(db.lake, LABELS, table, info)
    summary.already = len(values) - summary.imported
    summary.images = len({v["image_id"] for v in values})
    summary.batch = batch or (values[0]["batch"] if values else default_batch)
    if progress:
        progress(len(annotations))
    summary.seconds = time.monotonic() - started
    return summary


def _mask(value: Any, height: int | None, width: int | None) -> dict[str, Any] | str:
    """An annotation's mask as a COCO RLE of the image, or why not: Label Studio's brush
    (``format`` rle) or a COCO segmentation."""
    if isinstance(value, dict) and value.get("format") == "rle":
        return brush_rle.to_coco(value, height, width)
    return parse_mask(value, height, width)


def _sizes(db: LakeDB, image_ids: list[str]) -> dict[str, tuple[int | None, int | None]]:
    if not image_ids:
        return {}
    rows = db.query("SELECT image_id, width, height FROM images WHERE image_id IN (SELECT unnest($ids))",
                    {"ids": image_ids}).to_pydict()
    return {i: (w, h) for i, w, h in zip(rows["image_id"], rows["width"], rows["height"])}


def _box_problem(box: list[float], size: tuple[int | None, int | None]) -> str | None:
    if len(box) != 4 or not all(isinstance(v, float | int) and math.isfinite(v) for v in box):
        return f"malformed box {box}: four finite numbers expected"
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return f"malformed box {[round(v, 2) for v in box]}: empty or inverted (x2 <= x1 or y2 <= y1)"
    width, height = size
    if width and height and (x1 < -BOX_SLACK or y1 < -BOX_SLACK or x2 > width + BOX_SLACK or y2 > height + BOX_SLACK):
        return f"box {[round(v, 2) for v in box]} lies outside the {width}x{height} image"
    return None


def label_rows(db: LakeDB, image_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per image, its newest labels and whether the newest prediction agrees (the ``labelled`` view)."""
    if not image_ids:
        return {}
    rows = db.query("SELECT image_id, label, labels, annotator, predicted_label, agrees, predicted_at FROM labelled "
                    "WHERE image_id IN (SELECT unnest($ids)) QUALIFY row_number() OVER (PARTITION BY image_id "
                    "ORDER BY predicted_at DESC NULLS LAST) = 1", {"ids": list(image_ids)})
    return {r["image_id"]: r for r in rows.to_pylist()}
