"""Detector outputs as they come: a folder of YOLO text files and a COCO results file, read
as prediction rows (`edgemine ingest predictions --format yolo|coco-results`, docs/INGEST.md).

Neither carries the model version, nor always a time, and both name images by a file name
or a number, so ``Detector`` holds what the command line adds. ``reader_for`` gives the
per-file loop (jobs/ingest_files.py) a reader that turns one input into ``Batch``es of rows
shaped like a JSONL prediction with detections, one row per image:

- YOLO: one ``<image stem>.txt`` per image below the folder, a line ``class cx cy w h [conf]``
  per box (fractions of the image's width and height); the class names from ``--classes``
  (data.yaml or a names file, one per line), else the class numbers are the labels;
- COCO results: a JSON array of ``{image_id, category_id, bbox [x, y, w, h] (pixels), score}``;
  the names of categories and images from ``--categories`` (a COCO dataset file, or a JSON
  object ``{category id: name}``).

The row's label and confidence are its top-scoring box's class and score (1.0 for a box
without one; an image with no box: no label, confidence 1.0); the boxes stay each with its
own. Working columns go to the row checker (jobs/ingest_predictions.py), which knows the
lake: ``__image_name``, matched against the lake's image ids, file names and stems,
``__box_in_fractions``, YOLO's boxes, turned into pixels with the image's size there, and
``__source_file``, the YOLO file a row came from, which its error names. A line
or entry that cannot be taken is a ``Reject`` with its reason; the rest of the input lands.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from jobs.ingest_files import Read
from jobs.readers import Batch, InputFormatError, Reject
from mining.core.errors import InputError, LabelError
from mining.core.lake import Lake, open_url
from mining.labelling.formats.coco_json import coco_categories, coco_images
from mining.labelling.formats.yolo_folder import parse_yolo_names

DETECTOR_FORMATS = ("yolo", "coco-results", "png-masks")
SKIPPED_FILES = ("classes.txt",)  # a YOLO labels folder often holds its class names (LabelImg's layout)
_TOLERANCE = 1e-5  # YOLO writes 6 decimals: a box's edge may stray this far outside the image
# ``mask``: a COCO results entry's ``segmentation`` as JSON text, checked against the image by the row checker.
_DETECTION = pa.struct([("box", pa.list_(pa.float64())), ("label", pa.string()), ("score", pa.float64()),
                        ("mask", pa.string())])
# A label map's classes, each as a COCO RLE (mining.core.masks) of the image's size.
_SEMANTIC = pa.struct([("label", pa.string()), ("height", pa.int32()), ("width", pa.int32()), ("counts", pa.string())])
ROW_SCHEMA = pa.schema([
    ("__image_name", pa.string()),
    ("image_id", pa.string()),
    ("model_version", pa.string()),
    ("ts", pa.timestamp("us", tz="UTC")),
    ("label", pa.string()),
    ("confidence", pa.float64()),
    ("detections", pa.list_(_DETECTION)),
    ("__box_in_fractions", pa.bool_()),
    ("__source_file", pa.string()),
    ("__semantic", pa.list_(_SEMANTIC)),
])


@dataclass(frozen=True)
class Detector:
    """What a detector's files do not say: the model's version, when it ran (default: each
    file's modification time), and the names of its classes: ``classes`` a YOLO data.yaml or
    names file, ``categories`` a COCO dataset file or a JSON object {category id: name}."""

    model_version: str
    ts: datetime | None = None
    classes: str | None = None
    categories: str | None = None


def parse_ts(text: str) -> datetime:
    """``--ts``: ISO 8601 (no zone means UTC) or epoch seconds; InputError otherwise."""
    try:
        ts = datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        try:
            ts = datetime.fromisoformat(text)
        except ValueError:
            raise InputError(f"--ts {text!r} is not a time: use ISO 8601 (2026-11-21T08:30:00Z) "
                             "or epoch seconds") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def reader_for(lake: Lake, fmt: str, detector: Detector) -> tuple[Read, str]:
    """The reader of ``fmt`` (one of DETECTOR_FORMATS) with the detector's settings, and those
    settings as text (what an input was read with: read again when they change). InputError for
    settings that do not fit the format or a class-names file that cannot be read."""
    if not detector.model_version or not detector.model_version.strip():
        raise InputError(f"--format {fmt} needs --model-version: a detector's files do not say which model wrote them")
    if fmt == "yolo" and detector.categories:
        raise InputError("--categories is for --format coco-results; YOLO's class names are given with --classes")
    if fmt == "png-masks" and not detector.classes:
        raise InputError("--format png-masks needs --classes: a names file (one class a line, the class of pixel "
                         "value 0 first) or a data.yaml")
    if fmt == "png-masks" and detector.categories:
        raise InputError("--categories is for --format coco-results; a label map's class names are given with "
                         "--classes")
    if fmt == "coco-results" and detector.classes:
        raise InputError("--classes is for --format yolo; a COCO results file's names are given with --categories")
    names_file = detector.classes or detector.categories
    text = _read_text(lake, names_file) if names_file else None
    settings = f"{fmt} model_version={detector.model_version} ts={detector.ts and detector.ts.isoformat()}"
    settings += f" names={hashlib.sha1(text.encode()).hexdigest()[:16] if text else None}"
    if fmt == "png-masks":
        classes = yolo_class_names(text, names_file)

        def read(uri: str, fs: Any, path: str, _fmt: str, chunk_rows: int) -> Iterator[Batch]:
            return read_label_maps(uri, fs, path, detector, classes, chunk_rows)
    elif fmt == "yolo":
        names = yolo_class_names(text, names_file) if text else None
        skipped = {*SKIPPED_FILES, posixpath.basename(names_file or "")}

        def read(uri: str, fs: Any, path: str, _fmt: str, chunk_rows: int) -> Iterator[Batch]:
            return read_yolo_folder(uri, fs, path, detector, names, chunk_rows, skipped=skipped)
    else:
        categories, images = coco_names(text, names_file) if text else (None, None)

        def read(uri: str, fs: Any, path: str, _fmt: str, chunk_rows: int) -> Iterator[Batch]:
            return read_coco_results(fs, path, detector, categories, images, chunk_rows)
    return read, settings


def _read_text(lake: Lake, uri: str) -> str:
    fs, path = open_url(uri, lake.s3)
    try:
        return fs.cat_file(path).decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{uri}: no such file (the class names)") from None
    except (IsADirectoryError, UnicodeDecodeError, OSError) as e:
        raise InputError(f"{uri}: cannot read the class names ({type(e).__name__}: {e})") from None


# -- class names -----------------------------------------------------------------
def yolo_class_names(text: str, where: str) -> dict[int, str]:
    """``--classes``: a data.yaml (its ``names``, as mining.labelling's YOLO reader parses them) or
    a names file (``coco.names``, ``classes.txt``: one name a line, class 0 first)."""
    if where.lower().endswith((".yaml", ".yml")):
        try:
            return parse_yolo_names(text, where)
        except (LabelError, ValueError) as e:
            raise InputError(f"--classes {e}") from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or "" in names:
        raise InputError(f"--classes {where}: expected one class name a line (class 0 first) without blank lines, "
                         "or a data.yaml with names")
    return dict(enumerate(names))


def coco_names(text: str, where: str) -> tuple[dict[str, str], dict[str, dict] | None]:
    """``--categories``: a COCO dataset file (its ``categories``, and its ``images`` to name the
    results' image ids) or a JSON object {category id: name}; ids as text, so 3 and "3" agree."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise InputError(f"--categories {where} is not JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("categories"), list):
        categories = {_id_text(k): v for k, v in coco_categories(data).items()}
        images = {_id_text(k): im for k, im in coco_images(data).items()} if "images" in data else None
    elif isinstance(data, dict) and data and all(isinstance(v, str) for v in data.values()):
        categories, images = dict(data), None
    else:
        raise InputError(f"--categories {where}: expected a COCO dataset file (with categories) "
                         'or a JSON object of category id: name ({"1": "car", "2": "person"})')
    if None in categories or not all(isinstance(v, str) and v for v in categories.values()):
        raise InputError(f"--categories {where}: each category needs an id (a number or text) and a name")
    return categories, images


def _id_text(value: Any) -> str | None:
    """A COCO id as text (3 and "3" agree); None for what is no id (a bool, a float, a list...)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


# -- YOLO ----------------------------------------------------------------------
def read_yolo_folder(uri: str, fs: Any, path: str, detector: Detector, names: dict[int, str] | None,
                     chunk_rows: int, *, skipped: set[str]) -> Iterator[Batch]:
    """The .txt files below a folder, in name order, as prediction rows, ``chunk_rows`` files a
    batch; a row's number is its file's place in that order, a bad line's its line number."""
    files = files_in_chunks(uri, fs, path, chunk_rows, suffix=".txt", skipped=skipped,
                            what="--format yolo reads a folder of YOLO text files (one <image stem>.txt per image)")
    for chunk in files:
        rows, numbers, rejects = [], [], []
        for file in chunk:
            row = _yolo_file(file.data, file.uri, names, rejects)
            if row is not None:
                rows.append(_row(file.stem, None, detector, detector.ts or _modified(file.info), row, fractions=True)
                            | {"__source_file": file.uri})
                numbers.append(file.number)
        yield Batch(pa.Table.from_pylist(rows, ROW_SCHEMA), pa.array(numbers, pa.int64()), rejects)


@dataclass(frozen=True)
class ListedFile:
    """A file of a detector's folder: its place in name order (from 1), URI, bytes and listing info."""

    number: int
    uri: str
    data: bytes
    info: dict

    @property
    def stem(self) -> str:
        """The file's name without its suffix: the image it is about."""
        return posixpath.splitext(posixpath.basename(self.uri))[0]


def files_in_chunks(uri: str, fs: Any, path: str, chunk_rows: int, *, suffix: str, what: str,
                    skipped: set[str] = frozenset()) -> Iterator[list[ListedFile]]:
    """The ``suffix`` files below the folder ``path`` (``uri`` as the user gave it), in name order,
    read ``chunk_rows`` at a time; an InputFormatError (saying ``what`` the format reads) when
    ``path`` is no folder or holds none."""
    if not fs.isdir(path):
        raise InputFormatError(f"{what}; give the folder")
    listing = sorted((p, info) for p, info in fs.find(path, detail=True).items()
                     if p.lower().endswith(suffix) and posixpath.basename(p) not in skipped)
    if not listing:
        raise InputFormatError(f"no {suffix} file below the folder: {what}")
    base = uri.rstrip("/")
    for start in range(0, len(listing), chunk_rows):
        chunk = listing[start:start + chunk_rows]
        contents = fs.cat([p for p, _ in chunk])
        yield [ListedFile(number, base + "/" + posixpath.relpath(p, path), contents[p], info)
               for number, (p, info) in enumerate(chunk, start=start + 1)]


def _yolo_file(data: bytes, file_uri: str, names: dict[int, str] | None, rejects: list[Reject]) -> list[dict] | None:
    """A YOLO file's boxes, its bad lines added to ``rejects``; None when it has lines and none is good."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        rejects.append(Reject(None, data[:200].decode("utf-8", "replace"), "not UTF-8 text: not a YOLO file", file_uri))
        return None
    boxes, lines = [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        lines += 1
        box = yolo_box(line, names)
        if isinstance(box, str):
            rejects.append(Reject(number, line, f"{posixpath.basename(file_uri)} line {number}: {box}", file_uri))
        else:
            boxes.append(box)
    return boxes if boxes or not lines else None


def yolo_box(line: str, names: dict[int, str] | None) -> dict | str:
    """One line ``class cx cy w h [conf]`` as a detection, its box [x1, y1, x2, y2] in fractions
    of the image; or why it is not one."""
    parts = line.split()
    if len(parts) not in (5, 6):
        return (f"{len(parts)} fields, expected class cx cy w h [conf] "
                "(segmentation polygons are not read as boxes)")
    try:
        cls = int(parts[0])
    except ValueError:
        return f"class {parts[0]!r} is not a class number"
    try:
        values = [float(v) for v in parts[1:]]
    except ValueError:
        return "cx cy w h [conf] must be numbers"
    if not all(math.isfinite(v) for v in values):
        return "NaN or infinite value"
    cx, cy, w, h = values[:4]
    score = values[4] if len(values) == 5 else None
    if w <= 0 or h <= 0:
        return f"box of zero or negative size (w {w:g}, h {h:g})"
    corners = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    if not all(-_TOLERANCE <= v <= 1 + _TOLERANCE for v in (*values[:4], *corners)):
        return "box outside the image: cx cy w h are fractions of the image's width and height, in [0, 1]"
    if score is not None and not 0 <= score <= 1:
        return f"conf {score:g} outside [0, 1]"
    if cls < 0 or (names is not None and cls not in names):
        known = f"--classes names 0 to {max(names)}" if names else "class numbers start at 0"
        return f"unknown class {cls}: {known}"
    label = names[cls] if names is not None else str(cls)
    return {"box": [min(max(v, 0.0), 1.0) for v in corners], "label": label, "score": score}


# -- COCO results ----------------------------------------------------------------
def read_coco_results(fs: Any, path: str, detector: Detector, categories: dict[str, str] | None,
                      images: dict[str, dict] | None, chunk_rows: int) -> Iterator[Batch]:
    """A COCO results file (read whole: it is one JSON array) as one row per image, ``chunk_rows``
    images a batch; a row's number is its image's first entry's (1-based), a bad entry's its own."""
    with fs.open(path, "rb", compression="infer") as f:
        data = f.read()
    try:
        entries = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InputFormatError(f"not a COCO results file: not JSON ({str(e)[:200]})") from None
    if not isinstance(entries, list):
        hint = " (this is a COCO dataset: give it as --categories)" if isinstance(entries, dict) and \
            "annotations" in entries else ""
        raise InputFormatError("not a COCO results file: expected a JSON array of "
                               f"{{image_id, category_id, bbox, score}}{hint}")
    ts = detector.ts or _modified(fs.info(path))
    per_image: dict[tuple[str | None, str | None], tuple[int, list[dict]]] = {}
    rejects = []
    for number, entry in enumerate(entries, start=1):
        found = coco_detection(entry, categories, images)
        if isinstance(found, str):
            rejects.append(Reject(number, json.dumps(entry)[:2000], f"entry {number}: {found}"))
        else:
            image, box = found
            per_image.setdefault(image, (number, []))[1].append(box)
    groups = sorted((number, image, boxes) for image, (number, boxes) in per_image.items())
    if not groups:
        yield Batch(pa.Table.from_pylist([], ROW_SCHEMA), pa.array([], pa.int64()), rejects)
    for start in range(0, len(groups), chunk_rows):
        chunk = groups[start:start + chunk_rows]
        rows = [_row(name, image_id, detector, ts, boxes, fractions=False) for _, (name, image_id), boxes in chunk]
        numbers = pa.array([number for number, _, _ in chunk], pa.int64())
        yield Batch(pa.Table.from_pylist(rows, ROW_SCHEMA), numbers, rejects if start == 0 else [])


def coco_detection(entry: Any, categories: dict[str, str] | None,
                   images: dict[str, dict] | None) -> tuple[tuple[str | None, str | None], dict] | str:
    """One results entry as ((the image's name, its lake id if the dataset gives it), a detection
    with box [x1, y1, x2, y2] in pixels); or why it is not one."""
    if not isinstance(entry, dict):
        return f"not an object but {type(entry).__name__}"
    missing = [k for k in ("image_id", "category_id", "bbox") if k not in entry]
    if missing:
        return f"missing {', '.join(missing)}"
    image, category = _id_text(entry["image_id"]), _id_text(entry["category_id"])
    if image is None or category is None:
        return "image_id and category_id must be numbers or text"
    bbox, score = entry["bbox"], entry.get("score")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return "bbox must be [x, y, width, height], four numbers"
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return f"bbox of zero or negative size (width {w:g}, height {h:g})"
    if score is not None and not (_is_number(score) and 0 <= score <= 1):
        return "score must be a number in [0, 1]"
    if categories is not None and category not in categories:
        return f"unknown category_id {category}: not among --categories"
    named = _image_name(image, isinstance(entry["image_id"], str), images)
    if isinstance(named, str):
        return named
    label = categories[category] if categories is not None else category
    segmentation = entry.get("segmentation")
    mask = None if segmentation is None else json.dumps(segmentation)
    return named, {"box": [x, y, x + w, y + h], "label": label, "score": None if score is None else float(score),
                   "mask": mask}


def _image_name(image: str, is_text: bool, images: dict[str, dict] | None) -> tuple[str | None, str | None] | str:
    """How a results entry's image is found in the lake: (a name: image id, file name or stem;
    the lake's id when the dataset carries it, as edgemine's COCO export writes it)."""
    if images is not None:
        found = images.get(image)
        if found is None:
            return f"image_id {image} is not among --categories' images"
        name, ours = found.get("file_name"), found.get("edgemine_image_id")
        name = posixpath.basename(name) if isinstance(name, str) and name else None
        ours = ours if isinstance(ours, str) and ours else None
        if name is None and ours is None:
            return f"image {image} of --categories has no file_name"
        return name, ours
    if not is_text:
        return (f"image_id {image} is a number: give --categories a COCO dataset file whose images "
                "name it (id and file_name)")
    return posixpath.basename(image), None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# -- PNG label maps ----------------------------------------------------------------
def read_label_maps(uri: str, fs: Any, path: str, detector: Detector, classes: dict[int, str],
                    chunk_rows: int) -> Iterator[Batch]:
    """The .png files below a folder, in name order, each an image's semantic label map (the
    class index per pixel) as a prediction row whose ``__semantic`` holds one RLE per class
    present; ``chunk_rows`` files a batch, a row's number its file's place in that order."""
    names = [classes[k] for k in sorted(classes)]
    files = files_in_chunks(uri, fs, path, chunk_rows, suffix=".png",
                            what="--format png-masks reads a folder of PNG label maps (one <image stem>.png per image)")
    for chunk in files:
        rows, numbers, rejects = [], [], []
        for file in chunk:
            semantic = label_map_row(file.data, names)
            if isinstance(semantic, str):
                rejects.append(Reject(file.number, "", f"{posixpath.basename(file.uri)}: {semantic}", file.uri))
                continue
            rows.append({"__image_name": file.stem, "model_version": detector.model_version,
                         "ts": detector.ts or _modified(file.info), "label": _largest_class(semantic, names),
                         "confidence": 1.0, "detections": [], "__box_in_fractions": False,
                         "__source_file": file.uri, "__semantic": semantic})
            numbers.append(file.number)
        yield Batch(pa.Table.from_pylist(rows, ROW_SCHEMA), pa.array(numbers, pa.int64()), rejects)


def label_map_row(data: bytes, names: list[str]) -> list[dict] | str:
    """A PNG label map's classes, each ``{label, height, width, counts, area}``; or why it is not one."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from mining.core.masks import area, label_map_masks

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode not in ("L", "P", "I", "I;16"):
                return (f"a {image.mode} image, not a label map: a PNG of one channel (mode L, P or I) whose pixel "
                        "values are class indices")
            pixels = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        return f"not a readable PNG ({type(e).__name__}: {str(e)[:200]})"
    found = label_map_masks(pixels, names)
    if isinstance(found, str):
        return found
    return [{"label": label, "height": rle["size"][0], "width": rle["size"][1], "counts": rle["counts"],
             "area": area(rle)} for label, rle in found.items()]


def _largest_class(semantic: list[dict], names: list[str]) -> str | None:
    """The row's label: the class covering the most pixels, class 0 (background by convention) only when alone."""
    others = [c for c in semantic if c["label"] != names[0]] or semantic
    return max(others, key=lambda c: c["area"])["label"] if others else None


# -- shared --------------------------------------------------------------------
def _row(name: str | None, image_id: str | None, detector: Detector, ts: datetime, boxes: list[dict], *,
         fractions: bool) -> dict:
    """One image's prediction row: its label and confidence those of its top-scoring box."""
    top = max(boxes, key=lambda b: 1.0 if b["score"] is None else b["score"], default=None)
    confidence = 1.0 if top is None or top["score"] is None else top["score"]
    return {"__image_name": name, "image_id": image_id, "model_version": detector.model_version, "ts": ts,
            "label": top and top["label"], "confidence": confidence, "detections": boxes,
            "__box_in_fractions": fractions}


def _modified(info: dict[str, Any]) -> datetime:
    """A file's modification time (local: mtime; S3: LastModified), else now."""
    changed = info.get("mtime") or info.get("LastModified")
    if isinstance(changed, int | float):
        return datetime.fromtimestamp(changed, UTC)
    if isinstance(changed, datetime):
        return changed if changed.tzinfo else changed.replace(tzinfo=UTC)
    return datetime.now(UTC)
