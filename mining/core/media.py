"""Pictures for people: thumbnails from the lake, an original with its detection
boxes and masks drawn, and a cluster's mosaic. Pillow and pycocotools only (no torch),
so the UI starts fast.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from mining.core.config import S3Config
from mining.core.errors import SearchError
from mining.core.lake import open_url
from mining.core.masks import decode
from mining.core.sql import LakeDB, quote_ident

logger = logging.getLogger(__name__)

BOX_COLOURS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500")
MASK_OPACITY = 0.45  # a mask's fill over the image: its pixels stay visible beneath


def thumbnails(db: LakeDB, image_ids: list[str]) -> dict[str, bytes]:
    """JPEG thumbnail bytes per image id; ids without a thumbnail are left out."""
    if not image_ids:
        return {}
    rows = db.query("SELECT image_id, jpeg FROM thumbnails WHERE image_id IN (SELECT unnest($ids))",
                    {"ids": list(image_ids)})
    return dict(zip(rows.column("image_id").to_pylist(), rows.column("jpeg").to_pylist()))


def image_facts(db: LakeDB, image_ids: list[str], columns: Sequence[str] = ()) -> pa.Table:
    """Per image, in the order given: its latest prediction's label and confidence, the
    value of each of ``columns`` (prediction columns such as ``customer_flag``, from
    [ui] caption_columns) in that prediction, NULL where the lake has no such column, and
    ``labels``: the distinct labels annotators gave it (the ``labels`` table), NULL if none."""
    present = set(db.query("DESCRIBE predictions").column("column_name").to_pylist())
    extra = "".join(
        f", arg_max(p.{quote_ident(c)}, p.ts) AS {quote_ident(c)}" if c in present else f", NULL AS {quote_ident(c)}"
        for c in columns
    )
    return db.query(
        "WITH l AS (SELECT image_id, list(DISTINCT label ORDER BY label) AS labels FROM labels "
        "WHERE image_id IN (SELECT unnest($ids)) GROUP BY image_id) "
        f"SELECT i.image_id, arg_max(p.label, p.ts) AS label, arg_max(p.confidence, p.ts) AS confidence{extra}, "
        "any_value(l.labels) AS labels "
        "FROM (SELECT unnest($ids) AS image_id, generate_subscripts($ids, 1) AS n) i "
        "LEFT JOIN (SELECT * FROM predictions WHERE image_id IN (SELECT unnest($ids))) p USING (image_id) "
        "LEFT JOIN l USING (image_id) GROUP BY i.image_id, i.n ORDER BY i.n",
        {"ids": list(image_ids)},
    )


@dataclass
class ImageDetails:
    """One image as the full-size view shows it."""

    image_id: str
    uri: str
    width: int | None
    height: int | None
    predictions: list[dict[str, Any]]  # newest first
    boxes: list[dict[str, Any]] = field(default_factory=list)  # of the newest prediction: box, label, score, mask?
    masks: list[dict[str, Any]] = field(default_factory=list)  # its label map's classes: label, mask


def image_details(db: LakeDB, image_id: str) -> ImageDetails:
    images = db.query("SELECT uri, width, height FROM images WHERE image_id = $id", {"id": image_id}).to_pylist()
    if not images:
        raise SearchError(
            f'no image {image_id} in the lake; check the id (edgemine sql "SELECT image_id FROM images LIMIT 5")'
        )
    predictions = db.query(
        "SELECT prediction_id, model_version, ts, label, confidence FROM predictions "
        "WHERE image_id = $id ORDER BY ts DESC",
        {"id": image_id},
    ).to_pylist()
    boxes, semantic = [], []
    if predictions:
        newest = {"p": predictions[0]["prediction_id"]}
        boxes = [_with_mask(r) for r in db.query(
            "SELECT d.box, d.label, d.score, m.height, m.width, m.counts FROM detections d "
            "LEFT JOIN masks m ON m.detection_id = d.detection_id WHERE d.prediction_id = $p "
            "ORDER BY d.score DESC, d.detection_id", newest).to_pylist()]
        semantic = [_with_mask(r) for r in db.query(
            "SELECT label, height, width, counts FROM masks WHERE prediction_id = $p AND kind = 'semantic' "
            "ORDER BY label", newest).to_pylist()]
    return ImageDetails(image_id, images[0]["uri"], images[0]["width"], images[0]["height"], predictions, boxes,
                        semantic)


def _with_mask(row: dict[str, Any]) -> dict[str, Any]:
    """A row with columns height, width, counts as one with ``mask`` (COCO RLE), when it has one."""
    height, width, counts = row.pop("height"), row.pop("width"), row.pop("counts")
    return row | ({"mask": {"size": [height, width], "counts": counts}} if counts is not None else {})


def read_image(uri: str, s3: S3Config) -> bytes:
    """The original image's bytes, from a local path or S3."""
    fs, path = open_url(uri, s3)
    with fs.open(path, "rb") as f:
        return f.read()


def draw_boxes(data: bytes, boxes: list[dict[str, Any]], masks: Sequence[dict[str, Any]] = ()) -> Image.Image:
    """The image in ``data`` (RGB) with each box ([x1, y1, x2, y2] in pixels) outlined
    and labelled with its label and score. A box's ``mask`` (COCO RLE) and each of
    ``masks`` (a label map's classes: ``{label, mask}``) are filled translucently in the
    colour of their label, beneath the outlines."""
    # Stored pixel order, no EXIF rotation: the model (and so its boxes) saw the same.
    image = Image.open(io.BytesIO(data)).convert("RGB")
    colours: dict[str, str] = {}
    for shape in [*boxes, *masks]:  # a colour per label, the boxes' first
        colours.setdefault(shape["label"], BOX_COLOURS[len(colours) % len(BOX_COLOURS)])
    for shape in [*masks, *boxes]:  # a label map beneath the objects' masks
        if shape.get("mask") is not None:
            fill_mask(image, shape["mask"], colours[shape["label"]])
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 200))
    for box in boxes:
        colour = colours[box["label"]]
        x1, y1, x2, y2 = box["box"]
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{box['label']} {box['score']:.2f}" if box.get("score") is not None else str(box["label"])
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        lift = bottom - top + 2
        top = max(0, y1 - lift)  # a box at the top edge keeps its label inside the picture
        draw.rectangle((x1, top, x1 + right - left + 4, top + lift), fill=colour)
        draw.text((x1 + 2, top), text, fill="black")
    return image


def fill_mask(image: Image.Image, rle: dict[str, Any], colour: str) -> None:
    """Blend ``colour`` into ``image`` (in place) at ``MASK_OPACITY`` over the pixels of ``rle``;
    a mask of another size than the image is left out (logged): it is not of this picture."""
    height, width = rle["size"]
    if (width, height) != image.size:
        logger.warning("a %dx%d mask over a %dx%d image: not drawn", width, height, *image.size)
        return
    alpha = Image.fromarray(np.where(decode(rle) != 0, round(255 * MASK_OPACITY), 0).astype(np.uint8))
    image.paste(colour, (0, 0, width, height), alpha)


HIGHLIGHT = "#ffcc00"


def crop_box(data: bytes, box: Sequence[float]) -> bytes:
    """PNG bytes of the pixels of ``box`` ([x1, y1, x2, y2] in pixels, rounded outwards and
    clipped to the image) of the image in ``data``: an object as a grid shows it (lossless,
    so what is shown is the box's pixels). ValueError for a box with nothing inside the image."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    x1, y1, x2, y2 = (int(v) for v in (_floor(box[0]), _floor(box[1]), -_floor(-box[2]), -_floor(-box[3])))
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(image.width, x2), min(image.height, y2)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"the box {list(box)} holds no pixel of the {image.width}x{image.height} image")
    out = io.BytesIO()
    image.crop((x1, y1, x2, y2)).save(out, "PNG")
    return out.getvalue()


def highlight_box(data: bytes, box: Sequence[float], label: str = "") -> Image.Image:
    """The image in ``data`` (RGB) with the one ``box`` ([x1, y1, x2, y2] pixels) outlined thick in
    the highlight colour, the rest of the frame dimmed: which object of the frame a hit is."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    x1, y1, x2, y2 = (float(v) for v in box)
    dimmed = Image.blend(image, Image.new("RGB", image.size, "black"), 0.45)
    region = tuple(int(v) for v in (max(0, _floor(x1)), max(0, _floor(y1)), min(image.width, -_floor(-x2)),
                                    min(image.height, -_floor(-y2))))
    if region[2] > region[0] and region[3] > region[1]:
        dimmed.paste(image.crop(region), region[:2])
    draw = ImageDraw.Draw(dimmed)
    width = max(3, round(max(image.size) / 120))
    draw.rectangle((x1 - width, y1 - width, x2 + width, y2 + width), outline=HIGHLIGHT, width=width)
    if label:
        left, top, right, bottom = draw.textbbox((x1, y1), label)
        lift = bottom - top + 2
        top = max(0, y1 - width - lift)
        draw.rectangle((x1 - width, top, x1 - width + right - left + 4, top + lift), fill=HIGHLIGHT)
        draw.text((x1 - width + 2, top), label, fill="black")
    return dimmed


def _floor(value: float) -> int:
    return int(value // 1)


def mosaic(jpegs: list[bytes], *, columns: int = 3, tile: int = 128) -> Image.Image:
    """Thumbnails side by side in a grid of ``columns``, each fitted into a ``tile``
    square: one picture per cluster card instead of one element per image."""
    rows = max(1, -(-len(jpegs) // columns))
    sheet = Image.new("RGB", (columns * tile, rows * tile), "#f0f2f6")
    for n, data in enumerate(jpegs):
        thumb = Image.open(io.BytesIO(data)).convert("RGB")
        thumb.thumbnail((tile - 2, tile - 2))
        x, y = (n % columns) * tile, (n // columns) * tile
        sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
    return sheet


def to_jpeg(image: Image.Image, quality: int = 85) -> bytes:
    """JPEG bytes: a mosaic of photos encodes 5-10x faster, and smaller, than as PNG."""
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()
