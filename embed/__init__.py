"""Image embeddings for the lake: the model and the image pipeline.

    from embed import load_backbone, decode, ImageOptions

    backbone = load_backbone("resnet18", "imagenet", device="auto")   # or a checkpoint path, or "random"
    prepared = decode(open("frame.jpg", "rb").read(), ImageOptions(backbone.preprocessing))
    vectors = backbone.embed(prepared.pixels[None])                   # float32 (1, backbone.width), unit norm

The backbones (resnet18, resnet34, efficientnet-lite0), their weights, inputs and widths
are the registry in embed.backbones.

The job that embeds a whole lake (workers, parts, shards, resume) is jobs.embed_images
(`edgemine embed`); docs/EMBED.md describes it. Devices and errors are the library's
(mining.core.devices, mining.core.errors): load_backbone raises DeviceError and WeightsError.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embed.model import Backbone, load_backbone
    from embed.preprocess import ImageError, ImageOptions, decode

__all__ = ["Backbone", "ImageError", "ImageOptions", "decode", "load_backbone"]
_HOME = {"Backbone": "embed.model", "load_backbone": "embed.model",
         "ImageError": "embed.preprocess", "ImageOptions": "embed.preprocess", "decode": "embed.preprocess"}


def __getattr__(name: str) -> Any:
    """The names above, imported on first use: importing embed.files (what a search with an
    image file needs) must not pull in torch before a file is really embedded."""
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'embed' has no attribute {name!r}")
