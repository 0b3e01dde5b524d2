"""Image bytes to model input: formats, the reduced-size JPEG decode against a
full decode, the device decoder against Pillow, and every way an image is bad."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

from embed.model import load_backbone
from embed.preprocess import ImageError, ImageOptions, check_bytes, decode, decode_jpegs_on, encode_thumbnails
from jobs.demo_data import draw_scene, encode_jpeg, sample_scene, scene_rng
from tests.helpers import jpeg_bytes

OPTIONS = ImageOptions()


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def scene_jpeg(width: int, height: int, index: int = 1) -> bytes:
    rng = scene_rng(0, index)
    return encode_jpeg(draw_scene(sample_scene(rng, index, width, height, 0.0), rng, width, height))


def truncated_jpeg() -> bytes:
    data = scene_jpeg(320, 240)
    return data[: len(data) // 2]


def corrupt_jpeg() -> bytes:
    """Identified as a JPEG by its header, but its Huffman table is garbage: every
    decoder refuses it (damage to the image data alone, libjpeg often decodes with
    a warning)."""
    data = bytearray(scene_jpeg(320, 240))
    table = data.find(b"\xff\xc4")  # define-Huffman-table marker
    data[table + 5 : table + 21] = b"\xff" * 16  # code counts that cannot be
    return bytes(data)


@pytest.mark.parametrize(
    "image, fmt",
    [
        (Image.new("RGB", (300, 200), (10, 200, 30)), "JPEG"),
        (Image.new("RGBA", (120, 90), (10, 200, 30, 128)), "PNG"),
        (Image.new("L", (64, 400), 77), "PNG"),
        (Image.new("P", (50, 50)), "GIF"),
        (Image.new("CMYK", (200, 150), (0, 255, 0, 0)), "JPEG"),
        (Image.new("RGB", (90, 60), (1, 2, 3)), "WEBP"),
    ],
    ids=["rgb-jpeg", "rgba-png", "gray-png", "gif", "cmyk-jpeg", "webp"],
)
def test_formats_and_modes_become_rgb_crops_and_small_thumbnails(image, fmt):
    prepared = decode(encoded(image, fmt), OPTIONS)
    assert prepared.pixels.shape == (3, 224, 224) and prepared.pixels.dtype == torch.uint8
    _, h, w = prepared.thumbnail.shape
    assert max(h, w) == min(128, max(image.size))
    assert abs(w / h - image.width / image.height) < 0.05  # aspect kept
    thumbnail = Image.open(io.BytesIO(encode_thumbnails([prepared.thumbnail], 85)[0]))
    assert thumbnail.format == "JPEG" and thumbnail.size == (w, h)


def test_reduced_size_jpeg_decode_stays_close_to_a_full_decode():
    """Large JPEGs are decoded at 1/2..1/8 scale (still above the 256 px resize):
    the model input barely moves, and the embedding not at all in practice."""
    data = scene_jpeg(1920, 1080, index=4)
    fast = decode(data, OPTIONS).pixels
    full = F.center_crop(
        F.resize(F.pil_to_tensor(Image.open(io.BytesIO(data)).convert("RGB")), [256], antialias=True), [224]
    )
    difference = (fast.float() - full.float()).abs()
    assert difference.mean() < 2.0  # grey levels out of 255
    backbone = load_backbone(weights="random", seed=0)
    a, b = backbone.embed(torch.stack([fast, full]))
    assert float(a @ b) > 0.999


def test_device_decoder_agrees_with_pillow_and_isolates_a_bad_file():
    """The batched torchvision decoder (nvJPEG on CUDA) run here on the CPU."""
    good = [scene_jpeg(320, 240, index=0), scene_jpeg(200, 300, index=1), scene_jpeg(320, 240, index=2)]  # two sizes
    batch = [good[0], corrupt_jpeg(), good[1], truncated_jpeg(), good[2]]
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in batch]
    results = decode_jpegs_on(torch.device("cpu"), tensors, OPTIONS)
    assert [isinstance(r, ImageError) for r in results] == [False, True, False, True, False]
    assert results[3].reason.startswith("truncated")
    for result, data in zip([results[0], results[2], results[4]], good):
        reference = decode(data, OPTIONS)
        assert (result.pixels.float() - reference.pixels.float()).abs().mean() < 1.0
        assert result.thumbnail.shape == reference.thumbnail.shape


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"this is a text file, not a picture", "not an image"),
        (truncated_jpeg(), "truncated"),
        (corrupt_jpeg(), "corrupt"),
        (encoded(Image.new("L", (3000, 2000)), "PNG"), "decompression bomb"),
    ],
    ids=["not-an-image", "truncated", "corrupt", "decompression-bomb"],
)
def test_bad_images_are_refused_with_the_reason(data, reason):
    with pytest.raises(ImageError) as error:
        decode(data, ImageOptions(max_pixels=1_000_000))
    assert error.value.reason.startswith(reason)


def test_bomb_limit_is_the_configured_one():
    data = encoded(Image.new("L", (3000, 2000)), "PNG")
    with pytest.raises(ImageError, match="6,000,000 pixels is over max_pixels 5,999,999"):
        decode(data, ImageOptions(max_pixels=5_999_999))
    assert decode(data, ImageOptions(max_pixels=6_000_000)).pixels.shape == (3, 224, 224)


def test_bytes_missing_empty_or_changed_since_ingest():
    data = jpeg_bytes(1)
    digest = hashlib.sha256(data).hexdigest()
    assert check_bytes(data, digest) == data
    for bad, reason in [
        (FileNotFoundError("gone"), "missing"),
        (PermissionError("denied"), "unreadable: PermissionError"),
        (b"", "empty"),
        (jpeg_bytes(2), "changed since ingest"),
    ]:
        with pytest.raises(ImageError) as error:
            check_bytes(bad, digest)
        assert error.value.reason.startswith(reason)


def test_tiny_images_are_upscaled_for_the_model_but_not_in_the_thumbnail():
    prepared = decode(encoded(Image.fromarray(np.full((20, 30, 3), 200, np.uint8)), "PNG"), OPTIONS)
    assert prepared.pixels.shape == (3, 224, 224)
    assert tuple(prepared.thumbnail.shape) == (3, 20, 30)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow's own note on damaged TIFF tags
def test_damaged_files_of_every_format_give_a_reason_never_a_crash():
    """Seeded fuzzing: truncated, bit-flipped and overwritten files of each format
    either decode or raise ImageError; no other exception reaches the job."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    outcomes = {"decoded": 0, "refused": 0}
    for fmt, options in [
        ("JPEG", {}),
        ("PNG", {}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("WEBP", {}),
    ]:
        original = encoded(image, fmt, **options)
        for _ in range(40):
            data = bytearray(original)
            damage = rng.integers(0, 3)
            if damage == 0:
                data = data[: rng.integers(8, len(data))]
            elif damage == 1:
                for _ in range(rng.integers(1, 8)):
                    data[rng.integers(0, len(data))] = rng.integers(0, 256)
            else:
                start = rng.integers(0, len(data))
                data[start : start + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
            try:
                decode(bytes(data), OPTIONS)
                outcomes["decoded"] += 1
            except ImageError as e:
                assert e.reason
                outcomes["refused"] += 1
    assert outcomes["refused"] > 50 and outcomes["decoded"] > 50  # both paths were exercised
