"""What every format shares: the image an export writes (``Item``), the label an import
reads (``Annotation``), and the base class of a format (``LabelFormat``): its writer
(``files``) and, when labels come back in it, its reader (``read``/``parse``)."""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mining.core.errors import LabelError
from mining.core.lake import path_of


@dataclass
class Item:
    """One image as the writers see it. ``boxes``: the newest prediction's detections,
    each ``{"box": [x1, y1, x2, y2] (pixels), "label", "score"}`` and, with a mask,
    ``"mask"`` (COCO RLE ``{size: [h, w], counts}``) and ``"area"``; ``masks``: its label
    map's classes, each ``{"label", "mask", "area"}`` (semantic segmentation); ``regions``:
    pre-annotated regions to merge or assign (``--preannotate superpixels``), each ``{"label",
    "polygons": [[x1, y1, x2, y2, ...]] (pixels), "bbox": [x, y, w, h], "area"}``."""

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
    masks: list[dict[str, Any]] = field(default_factory=list)
    regions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def suffix(self) -> str:
        name = posixpath.basename(path_of(self.uri).split("?", 1)[0])
        ext = posixpath.splitext(name)[1].lower()
        return ext if ext and len(ext) <= 5 else ".jpg"


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
    mask: Any = None  # a COCO segmentation (RLE or polygons), checked against the image on import
    mask_kind: str = "instance"  # or "semantic": one class's pixels of a label map


class LabelFormat:
    """A format images leave the lake in for labelling, and labels may come back in.

    The writer (export): a subclass sets ``name`` and ``main_file`` and implements
    ``files``: one task's files (a list of Items) as {relative path: bytes}.
    ``copies_images``: the format pairs each image with a file of the same name, so
    the images are copied (YOLO). ``file_of``: the file that names an item.

    The reader (import), for a format with ``importable`` set: ``parse`` the bytes of a
    file into Annotations, or override ``read`` for a source that is not one file.

    What its writer carries of the pre-annotations (mining.labelling.preannotate refuses
    the others): ``carries_regions``, an item's ``regions`` as polygons;
    ``carries_image_class``, an item's ``label`` as a whole-image class."""

    name = ""
    main_file = ""
    copies_images = False
    importable = False
    carries_regions = False
    carries_image_class = False

    def __init__(self, classes: Sequence[str], *, batch: str, predictions: bool = True, regions: bool = False):
        self.classes = list(classes)
        self.class_ids = {c: k for k, c in enumerate(self.classes)}
        self.batch = batch
        self.predictions = predictions
        self.regions = regions  # the items carry regions (superpixels): a tool's config offers polygons

    def files(self, items: list[Item]) -> dict[str, bytes]:
        raise NotImplementedError

    def file_of(self, item: Item) -> str:
        """The file of a task (relative to the task's folder) that names ``item``."""
        return self.main_file

    @classmethod
    def read(cls, fs: Any, path: str, source: str) -> list[Annotation]:
        """The annotations of ``source`` (``path`` on ``fs``): its bytes, parsed."""
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            raise LabelError(f"{source}: file not found") from None
        except IsADirectoryError:
            raise LabelError(f"{source} is a folder; give the {cls.name} file") from None
        return cls.parse(data, source)

    @classmethod
    def parse(cls, data: bytes, source: str) -> list[Annotation]:
        """The annotations in a file's bytes; LabelError when it is not this format."""
        raise NotImplementedError


def compact_json(value: Any) -> bytes:
    """JSON without spaces, UTF-8 (the writers' encoding)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def load_json(data: bytes, source: str, fmt: str) -> Any:
    """A file's JSON; LabelError naming the format it should have been."""
    try:
        return json.loads(data)
    except RecursionError:
        raise LabelError(f"{source}: JSON nested too deeply to be a {fmt} file") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise LabelError(f"{source} is not JSON ({e}); is it a {fmt} file?") from None


_TEXT_FIELDS = ("ref", "image_id", "label", "annotator", "batch")


def checked(annotations: list[Annotation]) -> list[Annotation]:
    """Annotations whose fields have the types the import relies on. A file may say anything
    (a list where a file name belongs, a box of three numbers, NaN): such an annotation gets
    its error, and the field is dropped, so it is refused with its reason, never a crash."""
    for a in annotations:
        for name in _TEXT_FIELDS:
            value = getattr(a, name)
            if value is not None and not isinstance(value, str):
                a.error = a.error or f"malformed annotation: {name} is {type(value).__name__}, not text"
                setattr(a, name, None)
        for name in ("box", "yolo_box"):
            box = getattr(a, name)
            if box is not None and not _four_numbers(box):
                a.error = a.error or f"malformed annotation: {name} {box!r} is not four finite numbers"
                setattr(a, name, None)
        if a.labelled_at is not None and not isinstance(a.labelled_at, datetime):
            a.labelled_at = None
    return annotations


def _four_numbers(box: Any) -> bool:
    return (isinstance(box, list | tuple) and len(box) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box))
