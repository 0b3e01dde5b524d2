"""Detection boxes as model input: `edgemine embed --objects` (jobs/embed_objects.py).

- ``crop_region``: where to cut one box out of an image of a given size. The box is
  clipped to the image, padded by a fraction of its size on each side, and made a square
  around its centre (shifted to stay inside the image), so the backbone's centre crop
  keeps the whole object whatever its aspect; a box that is no box (NaN, zero area,
  outside the image) is an ImageError whose reason goes to the errors table.
- ``crop_pixels``: the regions of one decoded image, each through the backbone's normal
  preprocessing (resize the short side, centre crop): a 10-pixel object is upsampled to
  the input size, not lost in a whole-frame resize.
- ``CropBatches``: the DataLoader dataset (embed.reader's workers): fetch a batch's images,
  decode each once at full resolution, cut every requested box.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torchvision.transforms.v2.functional as F

from embed.backbones import Preprocessing
from embed.preprocess import ImageError, check_bytes, open_image
from embed.reader import ImageBatches, Request
from mining.core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CropOptions:
    """``padding``: context on each side, a fraction of the box's size; ``min_side``: pixels a
    box must keep on both sides once clipped to the image ([objects] in the config)."""

    preprocessing: Preprocessing = Preprocessing()
    padding: float = 0.15
    min_side: float = 1.0
    max_pixels: int = 100_000_000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.padding) and 0 <= self.padding <= 5):
            raise ConfigError(f"[objects] padding must be a fraction of the box between 0 and 5, got {self.padding}")
        if not self.min_side > 0:
            raise ConfigError(f"[objects] min_side must be a positive number of pixels, got {self.min_side}")


@dataclass(frozen=True)
class Region:
    """A box as cut: ``box`` the detection's [x1, y1, x2, y2] clipped to the image; the
    pixel rectangle taken around it (``top``, ``left``, ``height``, ``width``, integers)."""

    box: tuple[float, float, float, float]
    top: int
    left: int
    height: int
    width: int


def crop_region(box: Sequence[float] | None, width: int, height: int, options: CropOptions) -> Region:
    """The region to cut for ``box`` ([x1, y1, x2, y2] pixels) in a ``width`` x ``height`` image.

    Raises:
        ImageError: the box is missing, has a non-finite value, zero or negative area, lies
            outside the image, or keeps under ``options.min_side`` pixels once clipped."""
    if box is None or len(box) != 4:
        raise ImageError(f"bad box: {box!r} is not [x1, y1, x2, y2]")
    x1, y1, x2, y2 = (float("nan") if v is None else float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ImageError(f"bad box: [{x1}, {y1}, {x2}, {y2}] has a value that is not a finite number")
    if x2 <= x1 or y2 <= y1:
        raise ImageError(f"bad box: [{x1}, {y1}, {x2}, {y2}] has zero or negative area (x2 <= x1 or y2 <= y1)")
    cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
    if cx2 <= cx1 or cy2 <= cy1:
        raise ImageError(f"bad box: [{x1}, {y1}, {x2}, {y2}] lies outside the {width}x{height} image")
    if min(cx2 - cx1, cy2 - cy1) < options.min_side:
        raise ImageError(f"bad box: [{x1}, {y1}, {x2}, {y2}] keeps under [objects] min_side = {options.min_side} "
                         f"pixels inside the {width}x{height} image")
    side = max(cx2 - cx1, cy2 - cy1) * (1 + 2 * options.padding)
    left, cut_width = _span((cx1 + cx2) / 2, side, width)
    top, cut_height = _span((cy1 + cy2) / 2, side, height)
    return Region((cx1, cy1, cx2, cy2), top, left, cut_height, cut_width)


def _span(centre: float, side: float, limit: int) -> tuple[int, int]:
    """(start, length) in whole pixels of ``side`` around ``centre``, shifted to fit in [0, limit)."""
    length = min(max(1, math.ceil(side)), limit)
    start = min(max(0, math.floor(centre - length / 2)), limit - length)
    return start, length


def crop_pixels(rgb: torch.Tensor, regions: Sequence[Region], preprocessing: Preprocessing) -> torch.Tensor:
    """rgb: uint8 (3, H, W). Returns uint8 (len(regions), 3, crop, crop): each region cut and
    put through the backbone's preprocessing (short side to ``resize``, centre ``crop``)."""
    crops = [
        F.center_crop(F.resize(rgb[:, r.top : r.top + r.height, r.left : r.left + r.width], [preprocessing.resize],
                               antialias=True), [preprocessing.crop])
        for r in regions
    ]
    if not crops:
        return torch.zeros((0, 3, preprocessing.crop, preprocessing.crop), dtype=torch.uint8)
    return torch.stack(crops).contiguous()


@dataclass(frozen=True)
class ImageBoxes:
    """An image and the boxes to cut from it, as the plan found them."""

    image_id: str
    uri: str
    sha256: str | None
    detection_ids: tuple[str, ...]
    boxes: tuple[tuple[float, ...] | None, ...]


@dataclass
class CropBatch:
    """What a worker hands back for a Request of ImageBoxes: per crop, its ``detection_ids``,
    ``image_ids`` and ``boxes`` (as cut), ``pixels`` uint8 (n, 3, crop, crop) in that order;
    ``errors``: (image, detection_id, reason) for each box that could not be cut."""

    request: Request
    detection_ids: list[str] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    errors: list[tuple[ImageBoxes, str, str]] = field(default_factory=list)

    def pin_memory(self) -> CropBatch:
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


class CropBatches(ImageBatches):
    """``dataset[request]`` reads a batch of images (as ImageBatches does) and cuts their boxes.
    ``settings.options`` is the CropOptions."""

    def __getitem__(self, request: Request) -> CropBatch:
        out = CropBatch(request)
        options: CropOptions = self.settings.options
        pixels = []
        for item, data in zip(request.items, self._fetch(request.items)):
            try:
                rgb = decode_full(check_bytes(data, item.sha256), options.max_pixels)
            except ImageError as e:
                out.errors += [(item, d, e.reason) for d in item.detection_ids]
                continue
            except Exception as e:  # a decoder bug on one odd file must not end the run
                log.warning("unexpected %s decoding %s: %s", type(e).__name__, item.uri, e)
                out.errors += [(item, d, f"undecodable: {type(e).__name__}: {e}") for d in item.detection_ids]
                continue
            regions = []
            for detection_id, box in zip(item.detection_ids, item.boxes):
                try:
                    regions.append(crop_region(box, rgb.shape[2], rgb.shape[1], options))
                except ImageError as e:
                    out.errors.append((item, detection_id, e.reason))
                    continue
                out.detection_ids.append(detection_id)
                out.image_ids.append(item.image_id)
                out.boxes.append(regions[-1].box)
            pixels.append(crop_pixels(rgb, regions, options.preprocessing))
        if pixels:
            out.pixels = torch.cat(pixels)
        return out


def decode_full(data: bytes, max_pixels: int) -> torch.Tensor:
    """uint8 (3, H, W) RGB at full resolution (a small box needs every pixel), or ImageError."""
    image = open_image(data, max_pixels)
    try:
        rgb = image.convert("RGB")
    except OSError as e:
        reason = "truncated" if "truncated" in str(e) else "corrupt"
        raise ImageError(f"{reason}: {e}") from None
    except (ValueError, SyntaxError) as e:
        raise ImageError(f"corrupt: {e}") from None
    return F.pil_to_tensor(rgb)
