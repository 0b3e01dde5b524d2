"""From image bytes to model input and thumbnail, or to the reason there is none.

Two decoders, one result:
- ``decode`` (CPU, in loader workers): Pillow, with JPEG DCT scaling (``draft``)
  so a 1080p frame is decoded at a quarter of its size when that still covers
  the model's input; then torchvision's uint8 resize.
- ``decode_jpegs_on`` (the model's device): torchvision's batched ``decode_jpeg``,
  nvJPEG on CUDA; an image it refuses is decoded by ``decode`` instead, which
  then gives the reason.
Both finish with ``prepare``: the weights' standard resize and centre crop, and
a thumbnail of the decoded image.

Every failure is an ImageError whose ``reason`` goes to the lake's errors table.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from embed.backbones import Preprocessing
from mining.core.errors import InputError


class ImageError(InputError):
    """An image that cannot be embedded; ``reason`` says why, for the errors table."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageOptions:
    preprocessing: Preprocessing = Preprocessing()
    max_pixels: int = 100_000_000
    thumbnail_size: int = 128
    thumbnail_quality: int = 85


@dataclass
class Prepared:
    """pixels: uint8 (3, crop, crop) RGB; thumbnail: uint8 (3, h, w) RGB, long side
    at most ``thumbnail_size``. Both on the device that decoded the image."""

    pixels: torch.Tensor
    thumbnail: torch.Tensor


def check_bytes(data: bytes | BaseException, sha256: str | None) -> bytes:
    """The bytes as read from storage (mining.core.lake.read_many), refused if missing,
    empty, or no longer the content the images table registered (its image_id
    would be wrong)."""
    if isinstance(data, FileNotFoundError):
        raise ImageError("missing: the file is no longer at its URI")
    if isinstance(data, BaseException):
        raise ImageError(f"unreadable: {type(data).__name__}: {data}")
    if not data:
        raise ImageError("empty file")
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ImageError("changed since ingest: the content's sha256 differs; rerun `edgemine ingest images`")
    return data


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open ``data`` lazily (header only) and apply the pixel limit before any decoding."""
    try:
        with warnings.catch_warnings():
            # The limit that applies is ours (max_pixels), checked just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageError(f"decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise ImageError("not an image: Pillow cannot identify the format") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"corrupt header: {e}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"decompression bomb: {width}x{height} = {width * height:,} pixels is over max_pixels "
            f"{max_pixels:,}; raise [embed] max_pixels to accept such images"
        )
    if width == 0 or height == 0:
        raise ImageError(f"corrupt header: size {width}x{height}")
    return image


def is_jpeg(image: Image.Image) -> bool:
    return image.format == "JPEG"


def decode(data: bytes, options: ImageOptions) -> Prepared:
    """Decode on the CPU with Pillow and prepare (see module doc)."""
    image = open_image(data, options.max_pixels)
    scale = options.preprocessing.resize / min(image.size)
    if scale < 1:
        # JPEG only: decode at 1/2, 1/4 or 1/8 scale, never below the requested size.
        image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    try:
        rgb = image.convert("RGB")
    except OSError as e:
        reason = "truncated" if "truncated" in str(e) else "corrupt"
        raise ImageError(f"{reason}: {e}") from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"corrupt: {e}") from None
    return prepare(F.pil_to_tensor(rgb), options)


def prepare(rgb: torch.Tensor, options: ImageOptions) -> Prepared:
    """rgb: uint8 (3, H, W) on any device. Resize the short side, centre crop; the
    thumbnail comes from the same decoded pixels."""
    [prepared] = prepare_same_size(rgb.unsqueeze(0), options)
    return prepared


def prepare_same_size(rgb: torch.Tensor, options: ImageOptions) -> list[Prepared]:
    """``prepare`` for a stack of images of one size, uint8 (n, 3, H, W): one resize
    call for all, which on a GPU is one kernel launch instead of n."""
    p = options.preprocessing
    pixels = F.center_crop(F.resize(rgb, [p.resize], antialias=True), [p.crop])
    height, width = rgb.shape[-2:]
    long_side = max(height, width)
    if long_side > options.thumbnail_size:
        factor = options.thumbnail_size / long_side
        size = [max(1, round(height * factor)), max(1, round(width * factor))]
        thumbnails = F.resize(rgb, size, antialias=True)
    else:
        thumbnails = rgb
    return [Prepared(pixels=x.contiguous(), thumbnail=t.contiguous()) for x, t in zip(pixels, thumbnails)]


def decode_jpegs_on(
    device: torch.device, jpegs: list[torch.Tensor], options: ImageOptions
) -> list[Prepared | ImageError]:
    """Decode JPEG bytes (1-D uint8 tensors) in one batched call on ``device``."""
    if not jpegs:
        return []
    try:
        images = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        # One bad file fails the whole batched call: decode one by one, and let
        # Pillow give the reason for those the device decoder refuses.
        return [_decode_one_on(device, jpeg, options) for jpeg in jpegs]
    # Camera frames mostly share a few sizes: resize each size's images together.
    by_size: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault(tuple(image.shape), []).append(index)
    results: list[Prepared | ImageError] = [None] * len(images)  # type: ignore[list-item]
    for indices in by_size.values():
        stacked = torch.stack([images[i] for i in indices])
        for i, prepared in zip(indices, prepare_same_size(stacked, options)):
            results[i] = prepared
    return results


def _decode_one_on(device: torch.device, jpeg: torch.Tensor, options: ImageOptions) -> Prepared | ImageError:
    try:
        return prepare(decode_jpeg(jpeg, mode=ImageReadMode.RGB, device=device), options)
    except RuntimeError:
        try:
            prepared = decode(jpeg.numpy().tobytes(), options)
        except ImageError as e:
            return e
        return Prepared(prepared.pixels.to(device), prepared.thumbnail.to(device))


@dataclass(frozen=True)
class Thumbnail:
    """A row of the thumbnails table."""

    image_id: str
    jpeg: bytes
    width: int
    height: int


def make_thumbnails(items: list, prepared: list[Prepared], quality: int) -> list[Thumbnail]:
    """Encoded thumbnails of the ``items`` (with ``image_id`` and ``needs_thumbnail``)
    that need one, from their prepared images."""
    wanted = [(item, p.thumbnail) for item, p in zip(items, prepared) if item.needs_thumbnail]
    encoded = encode_thumbnails([t for _, t in wanted], quality)
    return [Thumbnail(item.image_id, jpeg, t.shape[2], t.shape[1]) for (item, t), jpeg in zip(wanted, encoded)]


def encode_thumbnails(thumbnails: list[torch.Tensor], quality: int) -> list[bytes]:
    """JPEG-encode uint8 (3, h, w) tensors, batched (on CUDA too)."""
    if not thumbnails:
        return []
    encoded = encode_jpeg(thumbnails, quality=quality)
    # One device-to-host copy for the batch, not one per thumbnail.
    flat = torch.cat(encoded).cpu().numpy()
    offsets = np.cumsum([0] + [len(e) for e in encoded])
    return [flat[start:end].tobytes() for start, end in zip(offsets[:-1], offsets[1:])]
