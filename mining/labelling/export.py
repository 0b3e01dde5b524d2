"""Export: images leave the lake for labelling, in the format an annotation tool reads.

``export_images`` takes image ids (a named set, a review's accepted images, a
narrowing session's current step, a SQL query: ``resolve_source``) and writes one
*batch*: the files of one format (mining.labelling.formats: one module per format) under
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
mining.labelling.label_studio with the same task JSON (mining.labelling.formats.label_studio_json).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import posixpath
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import fsspec

from mining.core import tables
from mining.core.config import Config, S3Config
from mining.core.errors import EdgemineError, ExportError, SourceError
from mining.core.lake import as_uri, is_s3, open_url, path_of, read_many
from mining.core.schema import ERRORS, EXPORTS, error_rows, make_rows
from mining.core.sql import LakeDB, quote_literal
from mining.core.summary import Summary
from mining.labelling import formats
from mining.labelling.formats import Item, LabelFormat, LabelStudio, writer_for
from mining.labelling.preannotate import (
    IMAGENET,
    ImageClassifier,
    check_format,
    check_version,
    parse_preannotate,
    preannotation_classes,
)
from mining.labelling.preannotate import apply as add_preannotations
from mining.review import sources

log = logging.getLogger(__name__)

JOB = "export"
BATCH_FILE = "batch.json"  # in every batch folder: which batch it holds (a second batch is refused there)
SOURCE_KINDS = ("set", "review", "session", "sql")
Progress = Callable[[int], None]
FORMATS = tuple(formats.FORMATS)  # the names of the export formats


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
    preannotate: str = ""
    files: list[str] = field(default_factory=list)

    def extra(self) -> dict[str, Any]:
        return {"images_per_second": round(self.exported / self.seconds, 1) if self.seconds > 0 else None}


def resolve_source(db: LakeDB, source: str) -> list[str]:
    """The image ids of an export source, in its order (mining.review.sources, the kinds below):

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
    """Every class the lake knows: predicted labels, detection labels, masks' classes, and labels imported."""
    rows = db.query("SELECT label FROM predictions WHERE label IS NOT NULL UNION SELECT label FROM detections "
                    "WHERE label IS NOT NULL UNION SELECT label FROM masks WHERE label IS NOT NULL "
                    "UNION SELECT label FROM labels ORDER BY label")
    return rows.column("label").to_pylist()


def batch_id(image_ids: Sequence[str], target: str, options: dict[str, Any]) -> str:
    """The batch's id: a hash of its sorted image ids, the target and the options."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"target": target, **options}, sort_keys=True).encode())
    for image_id in sorted(image_ids):
        digest.update(image_id.encode() + b"\n")
    return "b" + digest.hexdigest()[:15]


def object_images(db: LakeDB, detection_ids: Sequence[str]) -> list[str]:
    """The images of chosen detection boxes (object hits), each once, in the order of its first box.

    Raises ExportError naming the ids the lake's detections lack (nothing exported)."""
    ids = list(dict.fromkeys(detection_ids))
    rows = db.query("SELECT detection_id, any_value(image_id) AS image_id FROM detections "
                    "WHERE detection_id IN (SELECT unnest($ids)) GROUP BY detection_id", {"ids": ids}).to_pylist()
    found = {r["detection_id"]: r["image_id"] for r in rows}
    missing = [d for d in ids if d not in found]
    if missing:
        raise ExportError(f"{len(missing)} detection id(s) not in the lake: {', '.join(missing[:5])}; see them with: "
                          "edgemine sql \"SELECT detection_id, image_id, label FROM detections LIMIT 5\"")
    return list(dict.fromkeys(found[d] for d in ids))


def load_items(
    db: LakeDB, image_ids: Sequence[str], *, predictions: bool = True, model_version: str | None = None,
    detections: Sequence[str] | None = None,
) -> tuple[list[Item], list[dict[str, Any]]]:
    """The images to export, in the order given, with their newest prediction (of
    ``model_version`` when given) and its boxes; and the refused ones as error dicts
    (not in the lake, size unknown).
    ``detections``: the chosen boxes (detection ids): each image's boxes are then those of
    them on it, and only those (no label map)."""
    version = " AND model_version = $v" if model_version is not None else ""
    rows = db.query(
        "WITH wanted AS (SELECT unnest($ids) AS image_id, generate_subscripts($ids, 1) AS n), "
        "newest AS (SELECT image_id, arg_max(prediction_id, ts) AS prediction_id, "
        "arg_max(model_version, ts) AS model_version, "
        "arg_max(label, ts) AS label, arg_max(confidence, ts) AS confidence FROM predictions "
        f"WHERE image_id IN (SELECT image_id FROM wanted){version} GROUP BY image_id) "
        "SELECT w.image_id, i.uri, i.width, i.height, i.sha256, "
        "p.prediction_id, p.model_version, p.label, p.confidence "
        "FROM wanted w LEFT JOIN images i USING (image_id) LEFT JOIN newest p USING (image_id) ORDER BY w.n",
        {"ids": list(image_ids)} | ({"v": model_version} if model_version is not None else {}),
    ).to_pydict()
    boxes: dict[str, list[dict[str, Any]]] = {}
    semantic: dict[str, list[dict[str, Any]]] = {}
    prediction_ids = [p for p in rows["prediction_id"] if p is not None]
    chosen = _boxes(db, "image_id", "detection_id", detections) if detections is not None else None
    if chosen is None and predictions and prediction_ids:
        boxes = _boxes(db, "prediction_id", "prediction_id", prediction_ids)
        semantic = semantic_masks(db, prediction_ids)
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
        items.append(
            Item(
                image_id,
                uri,
                int(width),
                int(height),
                rows["sha256"][k],
                prediction_id=rows["prediction_id"][k],
                model_version=rows["model_version"][k],
                label=rows["label"][k],
                confidence=None if confidence is None else round(float(confidence), 6),
                boxes=chosen.get(image_id, []) if chosen is not None else boxes.get(rows["prediction_id"][k], []),
                masks=semantic.get(rows["prediction_id"][k], []) if predictions else [],
            )
        )
    return items, refused


def _boxes(db: LakeDB, by: str, column: str, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The detections whose ``column`` is one of ``ids`` (the newest predictions' ids, or the chosen
    detection ids of an export of objects), with their masks, per ``by`` (prediction_id or
    image_id), best score first."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for d in db.query(
        f"SELECT d.{by} AS key, d.box, d.label, d.score, m.height, m.width, m.counts, m.area FROM detections d "
        f"LEFT JOIN masks m ON m.detection_id = d.detection_id WHERE d.{column} IN (SELECT unnest($ids)) "
        f"ORDER BY d.{by}, d.score DESC, d.detection_id", {"ids": list(ids)}).to_pylist():
        if d["box"] is not None and d["label"] is not None:
            grouped.setdefault(d["key"], []).append({
                "box": [float(v) for v in d["box"]], "label": d["label"],
                "score": None if d["score"] is None else round(float(d["score"]), 6), **_mask_of(d)})
    return grouped


def semantic_masks(db: LakeDB, prediction_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per prediction, its label map's classes: ``{label, mask (RLE), area}``, by class."""
    found: dict[str, list[dict[str, Any]]] = {}
    for m in db.query("SELECT prediction_id, label, height, width, counts, area FROM masks WHERE kind = 'semantic' "
                      "AND prediction_id IN (SELECT unnest($p)) ORDER BY prediction_id, label",
                      {"p": prediction_ids}).to_pylist():
        found.setdefault(m["prediction_id"], []).append({"label": m["label"], **_mask_of(m)})
    return found


def _mask_of(row: dict[str, Any]) -> dict[str, Any]:
    """A row's mask (columns height, width, counts, area) as ``{mask: RLE, area}``, or nothing."""
    if row["counts"] is None:
        return {}
    return {"mask": {"size": [row["height"], row["width"]], "counts": row["counts"]}, "area": row["area"]}


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
                  drop_duplicates: bool = False, preannotate: str | None = None,
                  classify: ImageClassifier | None = None, progress: Progress | None = None,
                  detections: Sequence[str] | None = None) -> ExportSummary:
    """Export ``image_ids`` as one batch of format ``fmt`` to ``target`` (a folder or
    ``s3://`` URI: files under ``<target>/<name>/``; or a Label Studio URL with
    ``project``); ``exports`` gets one row per image, in one transaction, last.

    Args:
        image_ids: the images, in the order the tasks list them (``resolve_source``).
        fmt: a key of mining.labelling.formats.FORMATS (label-studio, coco, cvat, yolo, prodigy, manifest).
        name: the batch's folder name (default: its id).
        source: what the images are (``set:glare``), recorded with each row.
        task_size: images per task (default ``[export] task_size``; 0: one task).
        predictions: write the newest prediction as pre-annotations.
        copy_images: copy the images beside the files rather than refer to them.
        resend: send images already sent to this target again.
        drop_duplicates: send one image per near-duplicate group (`edgemine duplicates`), the first in order.
        preannotate: what goes beside each image (mining.labelling.preannotate): ``predictions`` (the
            default), ``model:VERSION``, ``model:imagenet`` (needs ``classify``), ``superpixels`` or ``none``.
        classify: the ImageNet classifier of ``model:imagenet`` (embed.imagenet.ImageNetClassifier).
        progress: called with the number of images written, as they are.
        detections: objects (detection ids, e.g. object hits): ``image_ids`` are then their images
            (``object_images``), each sent once with the chosen boxes, and only those, as pre-annotations.

    Returns:
        an ExportSummary (``status`` exported, unchanged or nothing-new).

    Raises:
        ExportError: unknown format, no images, a folder holding another batch, every
            image refused, S3 credentials or Label Studio missing, a pre-annotation the format
            cannot carry or a model version the lake lacks (nothing committed)."""
    started = time.monotonic()
    writer_cls = writer_for(fmt)
    pre = parse_preannotate(preannotate, predictions=predictions)
    check_format(pre, writer_cls)
    if pre.kind == "model" and pre.version is not None:
        check_version(db, pre.version)
    task_size = config.export.task_size if task_size is None else task_size
    if task_size < 0:
        raise ExportError(f"task size must be at least 0 (0: one task), got {task_size}")
    ids = list(dict.fromkeys(image_ids))
    if not ids:
        raise ExportError(f"the source {source or ''} has no images: nothing exported".replace("  ", " "))
    dropped = 0
    if drop_duplicates:
        from mining.search.duplicates import first_of_each_group

        keep = first_of_each_group(db, ids)
        if keep is None:
            raise ExportError(
                "no near-duplicate groups yet: run `edgemine duplicates` first, or leave out --drop-duplicates"
            )
        dropped, ids = len(ids) - len(keep), [ids[k] for k in keep]
    label_studio = target.startswith(("http://", "https://"))
    if label_studio:
        if not issubclass(writer_cls, LabelStudio):
            raise ExportError(f"an http(s) target is a Label Studio server: use --format label-studio, not {fmt}")
        if not project:
            raise ExportError("a Label Studio target needs a project: --project NAME (created when missing)")
        target = f"{target.rstrip('/')}?project={project}"
    else:
        target = _checked_target(target)
    if name is not None:
        _check_batch_name(name)
    copy_images = copy_images or writer_cls.copies_images
    options = {"format": fmt, "predictions": predictions, "copy_images": copy_images, "task_size": task_size,
               "resend": resend}
    if detections is not None:  # other boxes of the same frames are another batch
        options["detections"] = hashlib.sha256("\n".join(sorted(set(detections))).encode()).hexdigest()[:16]
    if preannotate is not None:  # recorded (and in the batch's id) only when chosen: older batches keep their ids
        options["preannotate"] = pre.spec
    batch = batch_id(ids, target, options)
    name = name or batch
    summary = ExportSummary(batch=batch, name=name, format=fmt, target=target, images=len(ids),
                            duplicates_dropped=dropped, preannotate=pre.spec)
    folder = "" if label_studio else posixpath.join(target, name)
    summary.folder = folder or target
    if folder and db.lake.overlaps(folder):
        raise ExportError(f"the export folder {folder} is the lake, inside it or holds it (symlinks followed); "
                          "export to a folder outside the lake (the lake is written by edgemine's jobs only)")

    if db.query("SELECT count(*) AS n FROM exports WHERE batch = $b", {"b": batch}).column("n")[0].as_py():
        summary.status = "unchanged"
        summary.exported = (
            db.query("SELECT count(*) AS n FROM exports WHERE batch = $b", {"b": batch}).column("n")[0].as_py()
        )
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
    items, refused = load_items(db, todo, predictions=pre.uses_predictions, model_version=pre.version,
                                detections=detections)
    present = existing_files([i.uri for i in items], db.lake.s3)
    refused += [{"uri": i.uri, "reason": "the image's file is gone"} for i in items if i.uri not in present]
    items, unusable = add_preannotations(db, [i for i in items if i.uri in present], pre, config.preannotate, classify)
    refused += unusable
    at = datetime.now(UTC)
    info = tables.commit_info(JOB, config.mining.user, batch=batch, target=target, format=fmt)
    # Replaced, not appended: a rerun of a killed batch records its refusals once.
    errors = error_rows(JOB, [{**r, "source": batch} for r in refused], at)
    tables.replace(db.lake, ERRORS, errors, f"job = '{JOB}' AND source = {quote_literal(batch)}", info)
    summary.add_errors(refused)
    if not items:
        raise ExportError(f"none of the {len(todo)} images can be exported (see edgemine sql \"SELECT uri, reason FROM "
                          f"errors WHERE source = '{batch}'\"); nothing committed")

    classes = lake_classes(db)
    classes += [c for c in preannotation_classes(items) if c not in classes]
    sends_labels = pre.uses_predictions or pre.kind == IMAGENET
    writer = writer_cls(classes, batch=batch, predictions=sends_labels, regions=pre.kind == "superpixels")
    size = task_size or len(items)
    tasks = [items[k:k + size] for k in range(0, len(items), size)]
    files_of: dict[str, str] = {}
    if label_studio:
        from mining.labelling.label_studio import push_tasks

        refs = References(db.lake.s3, config.export.url_expiry_s, config.export.local_files_root)
        for item in items:
            item.ref = refs(item.uri)
        pushed = push_tasks(
            target.split("?project=")[0],
            project,
            writer,
            tasks,
            token=config.export.label_studio_token,
            progress=progress,
        )
        files_of = {i.image_id: f"task/{pushed.get(i.image_id, '')}" for i in items}
        summary.files = [f"project {project}"]
    else:
        summary.files = _write_tasks(db, out_fs, out_root, writer, tasks, copy_images, config, files_of, progress)
        summary.files.append(BATCH_FILE)
        record = {
            "batch": batch,
            "name": name,
            "target": target,
            "format": fmt,
            "options": options,
            "images": len(items),
            "tasks": len(tasks),
            "source": source,
            "at": at.isoformat(),
            "who": config.mining.user,
        }
        _put(out_fs, posixpath.join(out_root, BATCH_FILE), json.dumps(record, indent=1).encode())

    task_of = {i.image_id: k for k, chunk in enumerate(tasks, start=1) for i in chunk}
    n = len(items)
    rows = make_rows(
        EXPORTS,
        n,
        batch=batch,
        name=name,
        target=target,
        format=fmt,
        image_id=[i.image_id for i in items],
        task=[task_of[i.image_id] for i in items],
        file=[files_of[i.image_id] for i in items],
        ref=[i.ref for i in items],
        model_version=[i.model_version if sends_labels else None for i in items],
        source=source,
        options=json.dumps(options, sort_keys=True),
        at=at,
        who=config.mining.user,
    )
    tables.insert_new(db.lake, EXPORTS, rows, info)  # the commit that makes the batch exist
    summary.status, summary.exported, summary.tasks = "exported", n, len(tasks)
    summary.seconds = time.monotonic() - started
    return summary


_BATCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TARGET_SCHEMES = ("", "file", "s3", "s3a")


def _checked_target(target: str) -> str:
    """A folder target as recorded: without a trailing slash (``/`` stays ``/``); only a local
    folder or an s3:// URI (what the annotators' side can read later, unlike memory://)."""
    scheme = urlsplit(target).scheme.lower()
    if scheme not in _TARGET_SCHEMES:
        raise ExportError(f"--to {target}: export to a folder, an s3:// URI, or a Label Studio http(s) URL "
                          f"(not {scheme}://)")
    return target.rstrip("/") or "/"


def _check_batch_name(name: str) -> None:
    """A batch name is one plain folder name: no path, so the batch stays under its target."""
    if not _BATCH_NAME.fullmatch(name):
        raise ExportError(f"--batch {name!r}: a batch name is one folder name of letters, digits, '.', '_' and "
                          "'-', starting with a letter or digit (at most 128), with no '/' or '..'")


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


def _write_tasks(db: LakeDB, fs: fsspec.AbstractFileSystem, root: str, writer: LabelFormat, tasks: list[list[Item]],
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
        for item in items:
            files_of[item.image_id] = prefix + writer.file_of(item)
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
