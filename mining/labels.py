"""Labels back into the lake: annotation files (or a Label Studio project) into ``labels``.

``import_labels`` reads one source in one of FORMATS: Label Studio's JSON export
(a file, or pulled from a server's project), COCO annotations, CVAT for images 1.1
XML, or a YOLO folder (``labels/*.txt`` and ``data.yaml``). Each annotation
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
import json
import math
import posixpath
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mining import tables
from mining.config import Config
from mining.errors import LabelError
from mining.lake import open_url, path_of
from mining.schema import ERRORS, IMAGE_ID_HEX, LABELS, error_rows, make_rows
from mining.sql import LakeDB, quote_literal
from mining.summary import Summary

JOB = "labels-import"
FORMATS = ("label-studio", "coco", "cvat", "yolo")
_IMAGE_ID = re.compile(rf"^[0-9a-f]{{{IMAGE_ID_HEX}}}$")
BOX_SLACK = 1.0  # pixels a box may stick out of its image (rounding in the tools) before it is refused


@dataclass
class Annotation:
    """One label as a file states it, before it is checked."""

    row: int  # its position in the file (errors name it)
    raw: str
    ref: str | None = None  # how the file names the image
    image_id: str | None = None  # our id, when the file carries it
    label: str | None = None
    box: list[float] | None = None  # [x1, y1, x2, y2] pixels
    yolo_box: list[float] | None = None  # normalised cx, cy, w, h (pixels need the image's size)
    annotator: str | None = None
    batch: str | None = None
    labelled_at: datetime | None = None
    error: str | None = None


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


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_label_studio(tasks: Any) -> list[Annotation]:
    """Label Studio's JSON export: per task, each annotation's ``rectanglelabels``
    (percent of ``original_width``/``original_height``) and ``choices`` results."""
    if not isinstance(tasks, list):
        raise LabelError("not a Label Studio JSON export: expected a list of tasks")
    found = []
    for t, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            found.append(Annotation(t, json.dumps(task)[:2000], error="task without data"))
            continue
        data = task["data"]
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                continue
            who = annotation.get("completed_by")
            annotator = (who.get("email") or str(who.get("id"))) if isinstance(who, dict) else (
                f"label-studio:{who}" if who is not None else None)
            when = _time(annotation.get("updated_at") or annotation.get("created_at"))
            for result in annotation.get("result") or []:
                raw = json.dumps(result)[:2000]
                a = Annotation(t, raw, ref=data.get("image"), image_id=data.get("edgemine_image_id"),
                               annotator=annotator, batch=data.get("edgemine_batch"), labelled_at=when)
                value = result.get("value") or {}
                kind = result.get("type")
                try:
                    if kind == "rectanglelabels":
                        names = value["rectanglelabels"]
                        w, h = float(result["original_width"]), float(result["original_height"])
                        x, y = float(value["x"]) * w / 100, float(value["y"]) * h / 100
                        a.box = [x, y, x + float(value["width"]) * w / 100, y + float(value["height"]) * h / 100]
                        a.label = names[0] if len(names) == 1 else None
                        a.error = None if len(names) == 1 else f"a box needs one label, got {names}"
                    elif kind == "choices":
                        choices = value["choices"]
                        a.label = choices[0] if len(choices) == 1 else None
                        a.error = None if len(choices) == 1 else f"one choice expected, got {choices}"
                    else:
                        continue  # other result kinds (text areas, ratings) are not labels
                except (KeyError, TypeError, ValueError, IndexError) as e:
                    a.error = f"malformed {kind} result ({type(e).__name__}: {e})"
                found.append(a)
    return found


def parse_coco(dataset: Any) -> list[Annotation]:
    """COCO annotations: ``bbox`` [x, y, w, h] per annotation, the class from ``categories``."""
    if not isinstance(dataset, dict) or not isinstance(dataset.get("annotations"), list) or "images" not in dataset:
        raise LabelError("not a COCO annotations file: expected images, annotations and categories")
    images = {im.get("id"): im for im in dataset.get("images") or [] if isinstance(im, dict)}
    categories = {c.get("id"): c.get("name") for c in dataset.get("categories") or [] if isinstance(c, dict)}
    batch = (dataset.get("info") or {}).get("edgemine_batch") if isinstance(dataset.get("info"), dict) else None
    found = []
    for n, ann in enumerate(dataset["annotations"]):
        raw = json.dumps(ann)[:2000]
        a = Annotation(n, raw, batch=batch)
        try:
            image = images.get(ann["image_id"])
            if image is None:
                a.error = f"annotation for COCO image id {ann['image_id']}, which the file's images lack"
            else:
                a.ref, a.image_id = image.get("file_name"), image.get("edgemine_image_id")
            if ann["category_id"] not in categories:
                a.error = a.error or f"unknown class: category_id {ann['category_id']} is not in the file's categories"
            a.label = categories.get(ann["category_id"])
            x, y, w, h = (float(v) for v in ann["bbox"])
            a.box = [x, y, x + w, y + h]
        except (KeyError, TypeError, ValueError) as e:
            a.error = a.error or f"malformed annotation ({type(e).__name__}: {e})"
        found.append(a)
    return found


def parse_cvat(data: bytes) -> list[Annotation]:
    """CVAT for images 1.1 XML: ``box`` (xtl, ytl, xbr, ybr) and ``tag`` per ``image``."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise LabelError(f"not a CVAT XML file: {e}") from None
    if root.tag != "annotations":
        raise LabelError(f"not a CVAT for images XML file: the root is <{root.tag}>, not <annotations>")
    task_name = root.findtext("./meta/task/name") or ""
    batch = task_name.removeprefix("edgemine ") if task_name.startswith("edgemine ") else None
    declared = {el.text for el in root.iterfind("./meta/task/labels/label/name")} | {
        el.text for el in root.iterfind("./meta/project/labels/label/name")}
    found = []
    n = 0
    for image in root.iter("image"):
        for shape in image:
            if shape.tag not in ("box", "tag"):
                continue
            a = Annotation(n, ET.tostring(shape, encoding="unicode")[:2000], ref=image.get("name"), label=shape.get("label"),
                           batch=batch)
            n += 1
            if declared and a.label not in declared:
                a.error = f"unknown class: label {a.label!r} is not in the file's labels"
            if shape.tag == "box":
                try:
                    a.box = [float(shape.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")]
                except (TypeError, ValueError):
                    a.error = a.error or "malformed box: xtl, ytl, xbr, ybr must be numbers"
            found.append(a)
    return found


def parse_yolo(fs: Any, folder: str) -> list[Annotation]:
    """A YOLO folder: ``data.yaml``'s names, ``labels/<image>.txt`` lines ``class cx cy w h``."""
    names = _yolo_names(fs, folder)
    batch = re.search(r"^edgemine_batch:\s*(\S+)\s*$", fs.cat_file(posixpath.join(folder, "data.yaml")).decode(), flags=re.M)
    label_dir = posixpath.join(folder, "labels")
    if not fs.exists(label_dir):
        raise LabelError(f"{folder}: no labels/ folder; a YOLO export has labels/*.txt beside data.yaml")
    found = []
    n = 0
    for path in sorted(p for p in fs.find(label_dir) if p.endswith(".txt")):
        stem = posixpath.splitext(posixpath.basename(path))[0]
        for line in fs.cat_file(path).decode().splitlines():
            if not line.strip():
                continue
            a = Annotation(n, f"{posixpath.basename(path)}: {line}", ref=stem, batch=batch.group(1) if batch else None)
            n += 1
            parts = line.split()
            try:
                if len(parts) != 5:
                    raise ValueError(f"{len(parts)} fields, expected class cx cy w h")
                cls = int(parts[0])
                a.yolo_box = [float(v) for v in parts[1:]]
                if cls not in names:
                    a.error = f"unknown class: class index {cls} is not in data.yaml's names"
                a.label = names.get(cls)
            except ValueError as e:
                a.error = f"malformed line ({e})"
            found.append(a)
    return found


def _yolo_names(fs: Any, folder: str) -> dict[int, str]:
    """data.yaml's ``names``: a mapping (``0: car``) or a list, parsed without a YAML library
    for the two layouts YOLO tools write."""
    try:
        text = fs.cat_file(posixpath.join(folder, "data.yaml")).decode()
    except FileNotFoundError:
        raise LabelError(f"{folder}: no data.yaml; a YOLO export has data.yaml (names) and labels/*.txt") from None
    inline = re.search(r"^names:\s*\[(.*)\]\s*$", text, flags=re.M)
    if inline:
        return {k: v.strip().strip("'\"") for k, v in enumerate(inline.group(1).split(",")) if v.strip()}
    block = text.split("names:", 1)[1] if "names:" in text else ""
    names = {}
    for k, line in enumerate(re.findall(r"^\s+(.+)$", block, flags=re.M)):
        key, sep, value = line.partition(":")
        if line.lstrip().startswith("- "):
            names[k] = json.loads(line.strip()[2:]) if line.strip()[2:].startswith('"') else line.strip()[2:]
        elif sep and key.strip().isdigit():
            value = value.strip()
            names[int(key)] = json.loads(value) if value.startswith('"') else value.strip("'")
    if not names:
        raise LabelError(f"{folder}/data.yaml has no names; expected names: {{0: car, 1: person}} or a list")
    return names


def read_source(source: str, fmt: str, config: Config, *, project: str | None = None) -> list[Annotation]:
    """The annotations in ``source`` (a file, a YOLO folder, or a Label Studio URL with ``project``)."""
    if fmt not in FORMATS:
        raise LabelError(f"unknown label format {fmt!r}; formats: {', '.join(FORMATS)}")
    if source.startswith(("http://", "https://")):
        if fmt != "label-studio" or not project:
            raise LabelError("an http(s) source is a Label Studio server: use --format label-studio and --project NAME")
        from mining.label_studio import pull_annotations

        return parse_label_studio(pull_annotations(source, project, token=config.export.label_studio_token))
    fs, path = open_url(source, config.s3)
    if fmt == "yolo":
        folder = posixpath.dirname(path) if path.endswith((".yaml", ".yml")) else path
        if not fs.exists(folder):
            raise LabelError(f"{source}: no such folder")
        return parse_yolo(fs, folder)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise LabelError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise LabelError(f"{source} is a folder; give the {fmt} file") from None
    if fmt == "cvat":
        return parse_cvat(data)
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise LabelError(f"{source} is not JSON ({e}); is it a {fmt} file?") from None
    return parse_label_studio(parsed) if fmt == "label-studio" else parse_coco(parsed)


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
        stems = {r: posixpath.splitext(posixpath.basename(path_of(r.split("?", 1)[0])))[0] for r in refs if r not in found}
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
    from mining.export import lake_classes

    classes = set(lake_classes(db))
    sizes = _sizes(db, sorted(set(ids.values())))
    now = datetime.now(UTC)
    rows: dict[str, dict[str, Any]] = {}
    refused = []
    for a in annotations:
        image_id = ids.get(a.image_id) if a.image_id else ids.get(a.ref or "")
        reason = a.error
        if reason is None and image_id is None:
            reason = f"image {a.image_id or a.ref} is not in the lake"
        if reason is None and not a.label:
            reason = "annotation without a label"
        if reason is None and a.label not in classes and not allow_new_classes:
            reason = (f"unknown class {a.label!r}: not one of the lake's classes ({', '.join(sorted(classes)) or 'none'}); "
                      "pass --allow-new-classes to take it")
        box = a.box
        if reason is None and a.yolo_box is not None:
            width, height = sizes.get(image_id, (None, None))
            if not width or not height:
                reason = "the image's size is unknown: YOLO boxes cannot be turned into pixels"
            else:
                cx, cy, w, h = a.yolo_box
                box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
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
    info = tables.commit_info(JOB, config.mining.user, source=where, format=fmt)
    errors = error_rows(JOB, refused, now)
    tables.replace(db.lake, ERRORS, errors, f"job = '{JOB}' AND source = {quote_literal(where)}", info)
    summary.add_errors(refused)
    values = list(rows.values())
    if values:
        table = make_rows(LABELS, len(values), **{c: [v[c] for v in values] for c in values[0]}, format=fmt, source=where,
                          imported_at=now)
        summary.imported = tables.insert_new(db.lake, LABELS, table, info)
    summary.already = len(values) - summary.imported
    summary.images = len({v["image_id"] for v in values})
    summary.batch = batch or (values[0]["batch"] if values else default_batch)
    if progress:
        progress(len(annotations))
    summary.seconds = time.monotonic() - started
    return summary


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
