"""Export: images leave the lake for labelling, in the format an annotation tool reads.

``export_images`` takes image ids (a named set, a review's accepted images, a
narrowing session's current step, a SQL query: ``resolve_source``) and writes one
*batch*: the files of one format (one writer class per format, below) under
``<target>/<batch name>/``, split into tasks of ``task_size`` images, and one row
per image in ``exports``. Images travel by reference (a presigned HTTPS URL for
``s3://`` images, the path for local ones), copied only when asked.

Exactly once. A batch's id is derived from its sorted image ids, the target and
the options, so the same export asked again is the same batch. Its files are
written first; the ``exports`` rows are then added in one Delta transaction
(``tables.insert_new`` on ``batch, image_id``), and that commit is what makes the
batch exist. A run killed before it leaves files no row points at, which the rerun
writes again and commits; a rerun after it finds the batch and changes nothing.
Images already sent to the same target are left out unless ``resend``.

Label Studio servers (``--to http(s)://HOST --project NAME``) are written by
mining.label_studio with the same task JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import posixpath
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fsspec

from mining import sources, tables
from mining.config import Config, S3Config
from mining.errors import EdgemineError, ExportError, SourceError
from mining.lake import as_uri, is_s3, open_url, path_of, read_many
from mining.schema import ERRORS, EXPORTS, error_rows, make_rows
from mining.sql import LakeDB, quote_literal
from mining.summary import Summary

log = logging.getLogger(__name__)

JOB = "export"
BATCH_FILE = "batch.json"  # in every batch folder: which batch it holds (a second batch is refused there)
SOURCE_KINDS = ("set", "review", "session", "sql")
Progress = Callable[[int], None]


@dataclass
class Item:
    """One image as the writers see it. ``boxes``: the newest prediction's detections,
    each ``{"box": [x1, y1, x2, y2] (pixels), "label", "score"}``."""

    image_id: str
    uri: str
    width: int
    height: int
    sha256: str | None = None
    ref: str = ""  # how the written files name the image: a URL, a path, or images/<id>.<ext> when copied
    prediction_id: str | None = None
    model_version: str | None = None
    label: str | None = None
    confidence: float | None = None
    boxes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def suffix(self) -> str:
        name = posixpath.basename(path_of(self.uri).split("?", 1)[0])
        ext = posixpath.splitext(name)[1].lower()
        return ext if ext and len(ext) <= 5 else ".jpg"


# -- writers: one per format ---------------------------------------------------
class Writer:
    """Writes the files of one task (a list of Items) into a folder.

    Subclasses set ``name`` and ``main_file`` and implement ``files``: the task's files
    as {relative path: bytes}. ``copies_images``: the format pairs each image with a
    file of the same name, so the images are copied (YOLO)."""

    name = ""
    main_file = ""
    copies_images = False

    def __init__(self, classes: Sequence[str], *, batch: str, predictions: bool = True):
        self.classes = list(classes)
        self.class_ids = {c: k for k, c in enumerate(self.classes)}
        self.batch = batch
        self.predictions = predictions

    def files(self, items: list[Item]) -> dict[str, bytes]:
        raise NotImplementedError


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _result_id(image_id: str, n: int) -> str:
    """A result id unique within the task (Label Studio's own are 10 characters)."""
    return hashlib.sha1(f"{image_id}:{n}".encode()).hexdigest()[:10]


class LabelStudio(Writer):
    """Label Studio tasks JSON: ``data.image`` (the reference), our image id and batch in
    ``data`` (the key imports and pushes find tasks by), the newest prediction as
    pre-annotations (``choices`` for its label, ``rectanglelabels`` in percent of
    ``original_width``/``original_height`` for its boxes), and the labelling config."""

    name = "label-studio"
    main_file = "tasks.json"

    def task(self, item: Item) -> dict[str, Any]:
        task: dict[str, Any] = {"data": {"image": item.ref, "edgemine_image_id": item.image_id, "edgemine_batch": self.batch}}
        if self.predictions and item.model_version is not None:
            result = []
            if item.label is not None:
                result.append({"id": _result_id(item.image_id, 0), "from_name": "class", "to_name": "image",
                               "type": "choices", "value": {"choices": [item.label]}})
            for n, b in enumerate(item.boxes, start=1):
                x1, y1, x2, y2 = b["box"]
                result.append({
                    "id": _result_id(item.image_id, n), "from_name": "label", "to_name": "image", "type": "rectanglelabels",
                    "original_width": item.width, "original_height": item.height, "image_rotation": 0,
                    "value": {"x": 100 * x1 / item.width, "y": 100 * y1 / item.height, "width": 100 * (x2 - x1) / item.width,
                              "height": 100 * (y2 - y1) / item.height, "rotation": 0, "rectanglelabels": [b["label"]]},
                    "score": b["score"]})
            task["predictions"] = [{"model_version": item.model_version, "score": item.confidence, "result": result}]
        return task

    def files(self, items: list[Item]) -> dict[str, bytes]:
        return {self.main_file: _json([self.task(i) for i in items]), "config.xml": self.config_xml().encode()}

    def config_xml(self) -> str:
        """The labelling config: the image, a single choice of class, and boxes of any class."""
        view = ET.Element("View")
        ET.SubElement(view, "Image", name="image", value="$image")
        choices = ET.SubElement(view, "Choices", name="class", toName="image", choice="single", showInline="true")
        for c in self.classes:
            ET.SubElement(choices, "Choice", value=c)
        rectangles = ET.SubElement(view, "RectangleLabels", name="label", toName="image")
        for c in self.classes:
            ET.SubElement(rectangles, "Label", value=c)
        ET.indent(view)
        return ET.tostring(view, encoding="unicode") + "\n"


class Coco(Writer):
    """COCO: images (``file_name`` the reference, our id in ``edgemine_image_id``),
    categories (ids from 1), the newest prediction's boxes as pseudo-label annotations
    (``bbox`` [x, y, w, h], ``area``, ``iscrowd`` 0), and their scores as a COCO
    results file (``results.json``)."""

    name = "coco"
    main_file = "annotations.json"

    def files(self, items: list[Item]) -> dict[str, bytes]:
        images, annotations, results = [], [], []
        for n, item in enumerate(items, start=1):
            images.append({"id": n, "file_name": item.ref, "width": item.width, "height": item.height,
                           "edgemine_image_id": item.image_id})
            if not self.predictions:
                continue
            for b in item.boxes:
                x1, y1, x2, y2 = b["box"]
                bbox = [x1, y1, x2 - x1, y2 - y1]
                category = self.class_ids[b["label"]] + 1  # COCO reserves 0
                annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": category, "bbox": bbox,
                                    "area": bbox[2] * bbox[3], "iscrowd": 0, "edgemine_score": b["score"]})
                results.append({"image_id": n, "category_id": category, "bbox": bbox, "score": b["score"]})
        dataset = {
            "info": {"description": f"edgemine export batch {self.batch}", "version": "1.0",
                     "date_created": datetime.now(UTC).isoformat(), "edgemine_batch": self.batch},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": c, "supercategory": "object"} for k, c in enumerate(self.classes)],
        }
        written = {self.main_file: _json(dataset)}
        if self.predictions:
            written["results.json"] = _json(results)
        return written


class Cvat(Writer):
    """CVAT for images 1.1 XML: the labels in ``meta``, one ``image`` (name: the
    reference) per item with the newest prediction's boxes and its label as a tag."""

    name = "cvat"
    main_file = "annotations.xml"

    def files(self, items: list[Item]) -> dict[str, bytes]:
        root = ET.Element("annotations")
        ET.SubElement(root, "version").text = "1.1"
        task = ET.SubElement(ET.SubElement(root, "meta"), "task")
        for tag, text in (("id", "0"), ("name", f"edgemine {self.batch}"), ("size", str(len(items))),
                          ("mode", "annotation"), ("overlap", "0"), ("start_frame", "0"),
                          ("stop_frame", str(max(0, len(items) - 1)))):
            ET.SubElement(task, tag).text = text
        labels = ET.SubElement(task, "labels")
        for c in self.classes:
            label = ET.SubElement(labels, "label")
            ET.SubElement(label, "name").text = c
            ET.SubElement(label, "type").text = "any"
            ET.SubElement(label, "attributes")
        for n, item in enumerate(items):
            image = ET.SubElement(root, "image", id=str(n), name=item.ref, width=str(item.width), height=str(item.height))
            if not self.predictions:
                continue
            if item.label is not None:
                ET.SubElement(image, "tag", label=item.label, source="auto")
            for b in item.boxes:
                x1, y1, x2, y2 = b["box"]
                ET.SubElement(image, "box", label=b["label"], source="auto", occluded="0", z_order="0",
                              xtl=f"{x1:.2f}", ytl=f"{y1:.2f}", xbr=f"{x2:.2f}", ybr=f"{y2:.2f}")
        ET.indent(root)
        out = io.BytesIO()
        ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
        return {self.main_file: out.getvalue()}


class Yolo(Writer):
    """YOLO: ``images/<id>.<ext>`` (copied: YOLO readers pair each image with the label
    file of the same name), ``labels/<id>.txt`` (``class cx cy w h``, normalised to
    0-1), and ``data.yaml`` with the class names."""

    name = "yolo"
    main_file = "data.yaml"
    copies_images = True

    def files(self, items: list[Item]) -> dict[str, bytes]:
        written = {}
        for item in items:
            lines = []
            for b in item.boxes if self.predictions else ():
                x1, y1, x2, y2 = b["box"]
                cx, cy = (x1 + x2) / 2 / item.width, (y1 + y2) / 2 / item.height
                w, h = (x2 - x1) / item.width, (y2 - y1) / item.height
                lines.append(f"{self.class_ids[b['label']]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
            written[f"labels/{item.image_id}.txt"] = "".join(lines).encode()
        names = "".join(f"  {k}: {json.dumps(c)}\n" for k, c in enumerate(self.classes))
        written[self.main_file] = (f"path: .\ntrain: images\nval: images\nedgemine_batch: {self.batch}\n"
                                   f"nc: {len(self.classes)}\nnames:\n{names}").encode()
        return written


class Prodigy(Writer):
    """Prodigy JSONL, as its image recipes read it: ``image``, ``width``, ``height``,
    the boxes as ``spans`` with ``points`` (pixels, four corners), the label as
    ``label``, our id and batch in ``meta``."""

    name = "prodigy"
    main_file = "tasks.jsonl"

    def files(self, items: list[Item]) -> dict[str, bytes]:
        lines = []
        for item in items:
            task: dict[str, Any] = {"image": item.ref, "width": item.width, "height": item.height,
                                    "meta": {"image_id": item.image_id, "batch": self.batch}}
            if self.predictions and item.model_version is not None:
                task["meta"] |= {"model_version": item.model_version, "score": item.confidence}
                if item.label is not None:
                    task["label"] = item.label
                task["spans"] = [{"label": b["label"], "score": b["score"],
                                  "points": [[b["box"][0], b["box"][1]], [b["box"][0], b["box"][3]],
                                             [b["box"][2], b["box"][3]], [b["box"][2], b["box"][1]]]}
                                 for b in item.boxes]
            lines.append(_json(task))
        return {self.main_file: b"\n".join(lines) + b"\n"}


class Manifest(Writer):
    """JSONL, one line per image: ``image_id``, ``url`` the vendor fetches, ``width``,
    ``height``, ``sha256`` and the newest ``prediction`` (label, confidence, boxes)."""

    name = "manifest"
    main_file = "manifest.jsonl"

    def files(self, items: list[Item]) -> dict[str, bytes]:
        lines = []
        for item in items:
            prediction = None
            if self.predictions and item.model_version is not None:
                prediction = {"model_version": item.model_version, "label": item.label, "confidence": item.confidence,
                              "boxes": item.boxes}
            lines.append(_json({"image_id": item.image_id, "url": item.ref, "width": item.width, "height": item.height,
                                "sha256": item.sha256, "prediction": prediction}))
        return {self.main_file: b"\n".join(lines) + b"\n"}


WRITERS: dict[str, type[Writer]] = {w.name: w for w in (LabelStudio, Coco, Cvat, Yolo, Prodigy, Manifest)}
FORMATS = tuple(WRITERS)


def writer_for(fmt: str) -> type[Writer]:
    """The writer class of ``fmt``; ExportError listing the formats for another name."""
    try:
        return WRITERS[fmt]
    except KeyError:
        raise ExportError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}") from None


# -- what a batch holds ---------------------------------------------------------
@dataclass
class ExportSummary(Summary):
    """What an export did. ``status``: ``exported`` (a new batch), ``unchanged`` (this
    batch was exported before: nothing written), ``nothing-new`` (every image was sent
    to this target before: use resend). ``skipped``: images left out because they
    were sent to the same target before; ``duplicates_dropped``: near-duplicates left
    out (``drop_duplicates``). ``errors``: images refused (file gone, not in
    the lake, size unknown), each a row of ``errors``."""

    job: str = JOB
    batch: str = ""
    name: str = ""
    format: str = ""
    target: str = ""
    folder: str = ""
    status: str = ""
    images: int = 0
    exported: int = 0
    skipped: int = 0
    duplicates_dropped: int = 0
    tasks: int = 0
    files: list[str] = field(default_factory=list)

    def extra(self) -> dict[str, Any]:
        return {"images_per_second": round(self.exported / self.seconds, 1) if self.seconds > 0 else None}


def resolve_source(db: LakeDB, source: str) -> list[str]:
    """The image ids of an export source, in its order (mining.sources, the kinds below):

    - ``set:NAME``: a named set, by rank;
    - ``review:NAME``: a review's accepted images, earliest accepted first;
    - ``session:NAME``: a narrowing session's current step, most similar to the seeds first;
    - ``sql:QUERY``: a read-only query returning an ``image_id`` column.

    Raises ExportError for another form, an unknown name, or a query without image_id."""
    try:
        return sources.resolve(db, source, kinds=SOURCE_KINDS).ids
    except SourceError as e:
        raise ExportError(str(e)) from None


def where_source(where: str) -> str:
    """The ``sql:`` source of a --where predicate over images i LEFT JOIN predictions p."""
    return sources.where_spec(where)


def lake_classes(db: LakeDB) -> list[str]:
    """Every class the lake knows: predicted labels, detection labels, and labels imported."""
    rows = db.query("SELECT label FROM predictions WHERE label IS NOT NULL UNION SELECT label FROM detections "
                    "WHERE label IS NOT NULL UNION SELECT label FROM labels ORDER BY label")
    return rows.column("label").to_pylist()


def batch_id(image_ids: Sequence[str], target: str, options: dict[str, Any]) -> str:
    """The batch's id: a hash of its sorted image ids, the target and the options."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"target": target, **options}, sort_keys=True).encode())
    for image_id in sorted(image_ids):
        digest.update(image_id.encode() + b"\n")
    return "b" + digest.hexdigest()[:15]


def load_items(db: LakeDB, image_ids: Sequence[str], *, predictions: bool = True) -> tuple[list[Item], list[dict[str, Any]]]:
    """The images to export, in the order given, with their newest prediction and its
    boxes; and the refused ones as error dicts (not in the lake, size unknown)."""
    rows = db.query(
        "WITH wanted AS (SELECT unnest($ids) AS image_id, generate_subscripts($ids, 1) AS n), "
        "newest AS (SELECT image_id, arg_max(prediction_id, ts) AS prediction_id, arg_max(model_version, ts) AS model_version, "
        "arg_max(label, ts) AS label, arg_max(confidence, ts) AS confidence FROM predictions "
        "WHERE image_id IN (SELECT image_id FROM wanted) GROUP BY image_id) "
        "SELECT w.image_id, i.uri, i.width, i.height, i.sha256, p.prediction_id, p.model_version, p.label, p.confidence "
        "FROM wanted w LEFT JOIN images i USING (image_id) LEFT JOIN newest p USING (image_id) ORDER BY w.n",
        {"ids": list(image_ids)},
    ).to_pydict()
    boxes: dict[str, list[dict[str, Any]]] = {}
    prediction_ids = [p for p in rows["prediction_id"] if p is not None]
    if predictions and prediction_ids:
        found = db.query("SELECT prediction_id, box, label, score FROM detections WHERE prediction_id IN (SELECT unnest($p)) "
                         "ORDER BY prediction_id, score DESC", {"p": prediction_ids}).to_pydict()
        for pid, box, label, score in zip(found["prediction_id"], found["box"], found["label"], found["score"]):
            if box is not None and label is not None:
                boxes.setdefault(pid, []).append({"box": [float(v) for v in box], "label": label,
                                                  "score": None if score is None else round(float(score), 6)})
    items, refused = [], []
    for k, image_id in enumerate(rows["image_id"]):
        uri, width, height = rows["uri"][k], rows["width"][k], rows["height"][k]
        if uri is None:
            refused.append({"uri": image_id, "reason": f"image {image_id} is not in the lake"})
            continue
        if not width or not height:
            refused.append({"uri": uri, "reason": "the image's size is unknown (it was registered without one)"})
            continue
        confidence = rows["confidence"][k]
        items.append(Item(image_id, uri, int(width), int(height), rows["sha256"][k], prediction_id=rows["prediction_id"][k],
                          model_version=rows["model_version"][k], label=rows["label"][k],
                          confidence=None if confidence is None else round(float(confidence), 6),
                          boxes=boxes.get(rows["prediction_id"][k], [])))
    return items, refused


def existing_files(uris: Sequence[str], s3: S3Config) -> set[str]:
    """Which of ``uris`` exist: one listing per folder (not one request per file)."""
    by_folder: dict[tuple[str, str], list[str]] = {}
    for uri in uris:
        protocol = "s3" if is_s3(uri) else "file"
        by_folder.setdefault((protocol, posixpath.dirname(path_of(uri))), []).append(uri)
    found = set()
    filesystems: dict[str, fsspec.AbstractFileSystem] = {}
    for (protocol, folder), members in by_folder.items():
        fs = filesystems.get(protocol) or filesystems.setdefault(protocol, open_url(members[0], s3)[0])
        try:
            listed = {p.rstrip("/") for p in fs.ls(folder, detail=False)}
        except (FileNotFoundError, NotADirectoryError):
            continue
        found |= {u for u in members if fs._strip_protocol(u).rstrip("/") in listed}
    return found


class References:
    """How written files name images not copied: a presigned HTTPS URL for ``s3://``
    images (valid ``expiry_s``), ``/data/local-files/?d=...`` for local images under
    Label Studio's document root (``local_root``), else the local path."""

    def __init__(self, s3: S3Config, expiry_s: int, local_root: str = ""):
        self.s3, self.expiry_s = s3, expiry_s
        self.local_root = local_root.rstrip("/")
        self._fs: fsspec.AbstractFileSystem | None = None

    def __call__(self, uri: str) -> str:
        if is_s3(uri):
            if self._fs is None:
                self._fs = open_url(uri, self.s3)[0]
            with _s3_credentials("sign the images' URLs"):
                return self._fs.url(path_of(uri), expires=self.expiry_s)
        if self.local_root and uri.startswith(self.local_root + "/"):
            return "/data/local-files/?d=" + uri[len(self.local_root) + 1:]
        return uri


def export_images(db: LakeDB, image_ids: Sequence[str], *, fmt: str, target: str, config: Config,
                  name: str | None = None, source: str = "", task_size: int | None = None, predictions: bool = True,
                  copy_images: bool = False, resend: bool = False, project: str | None = None,
                  drop_duplicates: bool = False, progress: Progress | None = None) -> ExportSummary:
    """Export ``image_ids`` as one batch of format ``fmt`` to ``target`` (a folder or
    ``s3://`` URI: files under ``<target>/<name>/``; or a Label Studio URL with
    ``project``); ``exports`` gets one row per image, in one transaction, last.

    Args:
        image_ids: the images, in the order the tasks list them (``resolve_source``).
        fmt: a key of WRITERS (label-studio, coco, cvat, yolo, prodigy, manifest).
        name: the batch's folder name (default: its id).
        source: what the images are (``set:glare``), recorded with each row.
        task_size: images per task (default ``[export] task_size``; 0: one task).
        predictions: write the newest prediction as pre-annotations.
        copy_images: copy the images beside the files rather than refer to them.
        resend: send images already sent to this target again.
        drop_duplicates: send one image per near-duplicate group (`edgemine duplicates`), the first in order.
        progress: called with the number of images written, as they are.

    Returns:
        an ExportSummary (``status`` exported, unchanged or nothing-new).

    Raises:
        ExportError: unknown format, no images, a folder holding another batch, every
            image refused, S3 credentials or Label Studio missing (nothing committed)."""
    started = time.monotonic()
    writer_cls = writer_for(fmt)
    task_size = config.export.task_size if task_size is None else task_size
    if task_size < 0:
        raise ExportError(f"task size must be at least 0 (0: one task), got {task_size}")
    ids = list(dict.fromkeys(image_ids))
    if not ids:
        raise ExportError(f"the source {source or ''} has no images: nothing exported".replace("  ", " "))
    dropped = 0
    if drop_duplicates:
        from mining.duplicates import first_of_each_group

        keep = first_of_each_group(db, ids)
        if keep is None:
            raise ExportError("no near-duplicate groups yet: run `edgemine duplicates` first, or leave out --drop-duplicates")
        dropped, ids = len(ids) - len(keep), [ids[k] for k in keep]
    label_studio = target.startswith(("http://", "https://"))
    if label_studio:
        if fmt != "label-studio":
            raise ExportError(f"an http(s) target is a Label Studio server: use --format label-studio, not {fmt}")
        if not project:
            raise ExportError("a Label Studio target needs a project: --project NAME (created when missing)")
        target = f"{target.rstrip('/')}?project={project}"
    else:
        target = target.rstrip("/")
    copy_images = copy_images or writer_cls.copies_images
    options = {"format": fmt, "predictions": predictions, "copy_images": copy_images, "task_size": task_size,
               "resend": resend}
    batch = batch_id(ids, target, options)
    name = name or batch
    summary = ExportSummary(batch=batch, name=name, format=fmt, target=target, images=len(ids),
                            duplicates_dropped=dropped)
    folder = "" if label_studio else posixpath.join(target, name)
    summary.folder = folder or target

    if db.query("SELECT count(*) AS n FROM exports WHERE batch = $b", {"b": batch}).column("n")[0].as_py():
        summary.status = "unchanged"
        summary.exported = db.query("SELECT count(*) AS n FROM exports WHERE batch = $b", {"b": batch}).column("n")[0].as_py()
        summary.seconds = time.monotonic() - started
        return summary
    sent = set() if resend else set(db.query(
        "SELECT DISTINCT image_id FROM exports WHERE target = $t AND image_id IN (SELECT unnest($ids))",
        {"t": target, "ids": ids}).column("image_id").to_pylist())
    todo = [i for i in ids if i not in sent]
    summary.skipped = len(ids) - len(todo)
    if not todo:
        summary.status = "nothing-new"
        summary.seconds = time.monotonic() - started
        return summary

    out_fs, out_root = (None, "") if label_studio else open_url(folder, db.lake.s3)
    if out_fs is not None:
        with _s3_credentials("write the export"):
            _claim_folder(out_fs, out_root, target, batch)
    items, refused = load_items(db, todo, predictions=predictions)
    present = existing_files([i.uri for i in items], db.lake.s3)
    refused += [{"uri": i.uri, "reason": "the image's file is gone"} for i in items if i.uri not in present]
    items = [i for i in items if i.uri in present]
    at = datetime.now(UTC)
    info = tables.commit_info(JOB, config.mining.user, batch=batch, target=target, format=fmt)
    # Replaced, not appended: a rerun of a killed batch records its refusals once.
    errors = error_rows(JOB, [{**r, "source": batch} for r in refused], at)
    tables.replace(db.lake, ERRORS, errors, f"job = '{JOB}' AND source = {quote_literal(batch)}", info)
    summary.add_errors(refused)
    if not items:
        raise ExportError(f"none of the {len(todo)} images can be exported (see edgemine sql \"SELECT uri, reason FROM "
                          f"errors WHERE source = '{batch}'\"); nothing committed")

    writer = writer_cls(lake_classes(db), batch=batch, predictions=predictions)
    size = task_size or len(items)
    tasks = [items[k:k + size] for k in range(0, len(items), size)]
    files_of: dict[str, str] = {}
    if label_studio:
        from mining.label_studio import push_tasks

        refs = References(db.lake.s3, config.export.url_expiry_s, config.export.local_files_root)
        for item in items:
            item.ref = refs(item.uri)
        pushed = push_tasks(target.split("?project=")[0], project, writer, tasks, token=config.export.label_studio_token,
                            progress=progress)
        files_of = {i.image_id: f"task/{pushed.get(i.image_id, '')}" for i in items}
        summary.files = [f"project {project}"]
    else:
        summary.files = _write_tasks(db, out_fs, out_root, writer, tasks, copy_images, config, files_of, progress)
        summary.files.append(BATCH_FILE)
        record = {"batch": batch, "name": name, "target": target, "format": fmt, "options": options,
                  "images": len(items), "tasks": len(tasks), "source": source, "at": at.isoformat(), "who": config.mining.user}
        _put(out_fs, posixpath.join(out_root, BATCH_FILE), json.dumps(record, indent=1).encode())

    task_of = {i.image_id: k for k, chunk in enumerate(tasks, start=1) for i in chunk}
    n = len(items)
    rows = make_rows(EXPORTS, n, batch=batch, name=name, target=target, format=fmt, image_id=[i.image_id for i in items],
                     task=[task_of[i.image_id] for i in items], file=[files_of[i.image_id] for i in items],
                     ref=[i.ref for i in items], model_version=[i.model_version if predictions else None for i in items],
                     source=source, options=json.dumps(options, sort_keys=True), at=at, who=config.mining.user)
    tables.insert_new(db.lake, EXPORTS, rows, info)  # the commit that makes the batch exist
    summary.status, summary.exported, summary.tasks = "exported", n, len(tasks)
    summary.seconds = time.monotonic() - started
    return summary


def _claim_folder(fs: fsspec.AbstractFileSystem, folder: str, target: str, batch: str) -> None:
    """Refuse a batch folder (or a target) that holds another batch's files."""
    for place in (folder, posixpath.dirname(folder)):
        try:
            held = json.loads(fs.cat_file(posixpath.join(place, BATCH_FILE)))
        except FileNotFoundError:
            continue
        except (ValueError, OSError):
            held = {"batch": "?"}
        if held.get("batch") != batch or place != folder:
            raise ExportError(f"{as_uri(place, like=target)} already holds export batch {held.get('batch')} "
                              "(other images or options); export to another --to folder or --batch name")


def _write_tasks(db: LakeDB, fs: fsspec.AbstractFileSystem, root: str, writer: Writer, tasks: list[list[Item]],
                 copy_images: bool, config: Config, files_of: dict[str, str], progress: Progress | None) -> list[str]:
    refs = References(db.lake.s3, config.export.url_expiry_s, config.export.local_files_root)
    written = []
    for k, items in enumerate(tasks, start=1):
        prefix = "" if len(tasks) == 1 else f"task-{k:04d}/"
        if copy_images:
            _copy_images(fs, posixpath.join(root, prefix), items, db.lake.s3)
        else:
            for item in items:
                item.ref = refs(item.uri)
        for relative, data in writer.files(items).items():
            _put(fs, posixpath.join(root, prefix + relative), data)
            if not relative.startswith(("labels/", "images/")):  # the summary names the task's files, not each image's
                written.append(prefix + relative)
        main = prefix + writer.main_file
        for item in items:
            files_of[item.image_id] = f"{prefix}labels/{item.image_id}.txt" if isinstance(writer, Yolo) else main
        if progress:
            progress(len(items))
    return written


def _copy_images(fs: fsspec.AbstractFileSystem, folder: str, items: list[Item], s3: S3Config, chunk: int = 256) -> None:
    """Copy the items' images to ``folder/images/<id><ext>``; their ``ref`` becomes that relative path."""
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        by_protocol: dict[bool, list[Item]] = {}
        for item in part:
            by_protocol.setdefault(is_s3(item.uri), []).append(item)
        for group in by_protocol.values():
            source_fs = open_url(group[0].uri, s3)[0]
            for item, data in zip(group, read_many(source_fs, [path_of(i.uri) for i in group])):
                if isinstance(data, BaseException):
                    raise ExportError(f"could not read {item.uri} to copy it: {data}") from None
                item.ref = f"images/{item.image_id}{item.suffix}"
                _put(fs, posixpath.join(folder, item.ref), data)


def _put(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols:
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with _s3_credentials("write the export"):
        fs.pipe_file(path, data)


@contextlib.contextmanager
def _s3_credentials(what: str) -> Iterator[None]:
    """botocore's missing-credential errors as an ExportError saying what to set."""
    try:
        yield
    except EdgemineError:
        raise
    except Exception as e:  # noqa: BLE001 - only the credential errors are turned into what to set
        if type(e).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
            raise ExportError(f"no S3 credentials to {what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                              "(or [s3] key and secret in the config file)") from None
        raise


def list_batches(db: LakeDB) -> Any:
    """One row per export batch: name, format, target, images, tasks, who, when; newest first."""
    return db.query(
        "SELECT batch, any_value(name) AS name, any_value(format) AS format, any_value(target) AS target, "
        # "at" quoted: a bare AT is DuckDB's time-travel keyword.
        'count(*) AS images, max(task) AS tasks, any_value(source) AS source, any_value(who) AS who, max("at") AS "at" '
        'FROM exports GROUP BY batch ORDER BY "at" DESC')
