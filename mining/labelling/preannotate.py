"""Pre-annotations: what an export sends beside each image for the annotator to edit.

``edgemine export --preannotate SPEC`` (docs/EXPORT.md "Pre-annotations") chooses it:

- ``predictions`` (the default): the newest prediction of any model version and its detections;
- ``model:VERSION``: the newest prediction of that model version (its label, boxes and masks);
- ``model:imagenet``: the top class of the open ImageNet classifier (EfficientNet-Lite0's own
  1,000-class head, embed/imagenet.py), for a new problem that has no model yet; the
  caller hands it in as an ``ImageClassifier`` (this library does not import torch);
- ``superpixels``: SLIC superpixels (scikit-image) as polygon regions labelled
  ``unassigned``, which the annotator merges or assigns a class;
- ``none``: the images alone (``--no-predictions``).

Formats carry what they can: regions go to COCO (``segmentation`` polygons) and Label
Studio (``polygonlabels``); an image-level class to Label Studio, CVAT, Prodigy and the
manifest. A format that cannot carry the pre-annotation asked for is refused before
anything is written (``check_format``).

Superpixels tile the image: every pixel is in exactly one region. SLIC's segments are
connected; a segment enclosed by another is merged into it (``superpixels``), so each
region has one outline and no hole. Outlines (``region_polygons``) follow the pixel
edges, so COCO's own rasteriser (pycocotools) gives back exactly the region's pixels.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from mining.core.config import PreannotateConfig, S3Config
from mining.core.errors import ExportError
from mining.core.lake import is_s3, open_url, path_of, read_many
from mining.core.sql import LakeDB
from mining.labelling.formats import FORMATS, Item, LabelFormat

log = logging.getLogger(__name__)

UNASSIGNED = "unassigned"  # the class of a superpixel region until the annotator assigns one
IMAGENET = "imagenet"  # model:imagenet, the open pretrained classifier
KINDS = ("predictions", "model:VERSION", f"model:{IMAGENET}", "superpixels", "none")
MAX_PIXELS = 100_000_000  # larger images are refused as decompression bombs (as [embed] max_pixels)
READ_CHUNK = 64  # images read and decoded at a time: bounds memory whatever the batch's size


class ImageClassifier(Protocol):
    """An image classifier for ``model:imagenet``: ``tag`` names it (the model version the
    pre-annotations carry); called with encoded images, it returns per image its top class
    and that class's probability, or the reason the image could not be classified."""

    tag: str

    def __call__(self, images: list[bytes]) -> list[tuple[str, float] | str]: ...


@dataclass(frozen=True)
class Preannotation:
    """One pre-annotation choice. ``kind``: predictions, model (``version`` set), imagenet,
    superpixels or none; ``spec`` is how the command line and the export's options say it."""

    kind: str
    version: str | None = None

    @property
    def spec(self) -> str:
        return f"model:{self.version}" if self.kind == "model" else (
            f"model:{IMAGENET}" if self.kind == IMAGENET else self.kind)

    @property
    def uses_predictions(self) -> bool:
        """Whether the lake's predictions are the pre-annotations (predictions, model:VERSION)."""
        return self.kind in ("predictions", "model")


def parse_preannotate(spec: str | None, *, predictions: bool = True) -> Preannotation:
    """The pre-annotation ``spec`` names (None: ``predictions``, or ``none`` when ``predictions`` is off).

    Raises ExportError for another spec, or a spec with predictions turned off."""
    if spec is None:
        return Preannotation("predictions" if predictions else "none")
    text = spec.strip()
    if not predictions and text != "none":
        raise ExportError(f"--no-predictions sends no pre-annotations, but --preannotate {spec} asks for some: "
                          "give one of them")
    if text in ("predictions", "superpixels", "none"):
        return Preannotation(text)
    if text.startswith("model:") and text[len("model:"):].strip():
        version = text[len("model:"):].strip()
        return Preannotation(IMAGENET) if version == IMAGENET else Preannotation("model", version)
    raise ExportError(f"unknown pre-annotation {spec!r}; give one of: {', '.join(KINDS)}")


def check_format(pre: Preannotation, fmt: type[LabelFormat]) -> None:
    """Refuse a format that cannot carry ``pre`` (ExportError naming those that can)."""
    if pre.kind == "superpixels" and not fmt.carries_regions:
        can = [name for name, f in FORMATS.items() if f.carries_regions]
        raise ExportError(f"the {fmt.name} format cannot carry superpixel regions (polygons): "
                          f"use --format {' or '.join(can)}, or another --preannotate")
    if pre.kind == IMAGENET and not fmt.carries_image_class:
        can = [name for name, f in FORMATS.items() if f.carries_image_class]
        raise ExportError(f"the {fmt.name} format has no image-level class for model:{IMAGENET}'s top class: "
                          f"use --format {', '.join(can)}, or another --preannotate")


def check_version(db: LakeDB, version: str) -> None:
    """Refuse ``model:VERSION`` when the lake holds no prediction of that version (listing those it has)."""
    found = db.query("SELECT count(*) AS n FROM predictions WHERE model_version = $v", {"v": version})
    if found.column("n")[0].as_py():
        return
    versions = db.query("SELECT DISTINCT model_version FROM predictions WHERE model_version IS NOT NULL "
                        "ORDER BY model_version LIMIT 20").column("model_version").to_pylist()
    raise ExportError(f"the lake has no predictions of model version {version!r}; versions: "
                      f"{', '.join(versions) or 'none (ingest or score predictions first)'}, or model:{IMAGENET}")


# -- superpixels ----------------------------------------------------------------
def superpixels(pixels: np.ndarray, config: PreannotateConfig = PreannotateConfig()) -> np.ndarray:
    """SLIC superpixels of an image, each a connected region without holes.

    Args:
        pixels: uint8 (H, W, 3) RGB, or (H, W) grey.
        config: ``segments`` asked, ``compactness``, ``sigma`` (mining.core.config.PreannotateConfig).

    Returns:
        int32 (H, W): each pixel's region, numbered 0..k-1 (k near ``segments``)."""
    from scipy import ndimage
    from skimage.segmentation import slic

    grey = pixels.ndim == 2
    labels = slic(pixels, n_segments=config.segments, compactness=config.compactness, sigma=config.sigma,
                  start_label=0, channel_axis=None if grey else -1, enforce_connectivity=True).astype(np.int32)
    # A region inside another's hole joins it: every region then has one outline (polygons have no holes).
    for region, where in enumerate(ndimage.find_objects(labels + 1)):
        if where is None:
            continue
        window = labels[where]
        window[ndimage.binary_fill_holes(window == region)] = region
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)


def region_polygons(labels: np.ndarray, label: str = UNASSIGNED) -> list[dict[str, Any]]:
    """Each region of a label map as COCO polygons along its pixel edges.

    Args:
        labels: int (H, W), regions numbered from 0 (``superpixels``).

    Returns:
        per region, in number order: ``{"label", "polygons": [[x1, y1, x2, y2, ...]] (pixels, COCO's
        coordinates: a pixel (r, c) spans x c..c+1), "bbox": [x, y, w, h], "area": pixels}``."""
    from scipy import ndimage
    from skimage.measure import approximate_polygon, find_contours

    regions = []
    for region, where in enumerate(ndimage.find_objects(labels + 1)):
        if where is None:
            continue
        rows, cols = where
        inside = np.pad(labels[where] == region, 1).astype(np.uint8)
        polygons = []
        # Level 0.5 between pixel centres runs along the pixel edges (cutting corners at their midpoints,
        # which keeps every inside centre in and every outside centre out); tolerance 0 drops collinear points.
        for contour in find_contours(inside, 0.5):
            contour = approximate_polygon(contour, tolerance=0)
            x = contour[:, 1] - 1 + 0.5 + cols.start
            y = contour[:, 0] - 1 + 0.5 + rows.start
            polygons.append(np.round(np.stack([x, y], axis=1), 3).ravel().tolist())
        regions.append({"label": label, "polygons": polygons,
                        "bbox": [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start],
                        "area": int(inside.sum())})
    return regions


# -- applying a pre-annotation to an export's items ---------------------------------
def apply(db: LakeDB, items: list[Item], pre: Preannotation, config: PreannotateConfig,
          classify: ImageClassifier | None = None) -> tuple[list[Item], list[dict[str, Any]]]:
    """Add the pre-annotations that come from the pixels (superpixels, model:imagenet) to ``items``.

    Returns the items that have them and the refused ones as error dicts (``uri``, ``reason``):
    a file that cannot be decoded, or whose size is not the lake's. Other kinds: ``items`` as given.

    Raises ExportError for model:imagenet without a classifier."""
    if pre.kind not in ("superpixels", IMAGENET):
        return items, []
    if pre.kind == IMAGENET and classify is None:
        raise ExportError(f"model:{IMAGENET} runs the ImageNet classifier: use `edgemine export`, or pass "
                          "classify=embed.imagenet.ImageNetClassifier() to export_images")
    kept, refused = [], []
    for start in range(0, len(items), READ_CHUNK):
        chunk = items[start:start + READ_CHUNK]
        contents = _read(chunk, db.lake.s3)
        if classify is not None and pre.kind == IMAGENET:
            _add_classes(chunk, contents, classify, kept, refused)
        else:
            _add_superpixels(chunk, contents, config, kept, refused)
    return kept, refused


def _add_classes(items: list[Item], contents: list[bytes | BaseException], classify: ImageClassifier,
                 kept: list[Item], refused: list[dict[str, Any]]) -> None:
    """Each item's top class (its label, confidence and model version become the classifier's)."""
    readable = [(item, data) for item, data in zip(items, contents) if isinstance(data, bytes)]
    refused += [{"uri": item.uri, "reason": f"unreadable: {type(data).__name__}: {data}"}
                for item, data in zip(items, contents) if not isinstance(data, bytes)]
    for (item, _), answer in zip(readable, classify([data for _, data in readable])):
        if isinstance(answer, str):
            refused.append({"uri": item.uri, "reason": answer})
            continue
        item.label, item.confidence = answer[0], round(float(answer[1]), 6)
        item.model_version, item.boxes, item.masks = classify.tag, [], []
        kept.append(item)


def _add_superpixels(items: list[Item], contents: list[bytes | BaseException], config: PreannotateConfig,
                     kept: list[Item], refused: list[dict[str, Any]]) -> None:
    """Each item's superpixels as regions."""
    for item, data in zip(items, contents):
        try:
            pixels = decode_rgb(data, item)
        except ExportError as e:
            refused.append({"uri": item.uri, "reason": str(e)})
            continue
        item.regions = region_polygons(superpixels(pixels, config))
        kept.append(item)


def preannotation_classes(items: Sequence[Item]) -> list[str]:
    """The classes the items' pre-annotations name beyond predictions' (``unassigned``, ImageNet's), sorted."""
    found = {r["label"] for i in items for r in i.regions}
    found |= {i.label for i in items if i.label is not None}
    return sorted(found)


def decode_rgb(data: bytes | BaseException, item: Item) -> np.ndarray:
    """An image's bytes as uint8 (H, W, 3) RGB; ExportError with the reason when they are not
    the image the lake registered (unreadable, not an image, another size)."""
    if isinstance(data, BaseException):
        raise ExportError(f"unreadable: {type(data).__name__}: {data}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise ExportError(f"decompression bomb: {image.width}x{image.height} pixels")
            pixels = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ExportError(f"not a readable image ({type(e).__name__}: {e})") from None
    if pixels.shape[:2] != (item.height, item.width):
        raise ExportError(f"the file is {pixels.shape[1]}x{pixels.shape[0]}, the lake says "
                          f"{item.width}x{item.height}: re-ingest it (`edgemine ingest images`)")
    return pixels


def _read(items: list[Item], s3: S3Config) -> list[bytes | BaseException]:
    """The items' file contents, in order (or the exception reading each raised)."""
    found: dict[int, bytes | BaseException] = {}
    for remote in (False, True):
        group = [(k, i) for k, i in enumerate(items) if is_s3(i.uri) == remote]
        if group:
            fs = open_url(group[0][1].uri, s3)[0]
            for (k, _), data in zip(group, read_many(fs, [path_of(i.uri) for _, i in group])):
                found[k] = data
    return [found[k] for k in range(len(items))]
