"""Embed image files from outside the lake, with the model an index was built from.

What `edgemine similar FILE` uses: the file is read (local or s3://), decoded and
embedded exactly as the embed job does, so its vector is comparable with the lake's.
"""

from __future__ import annotations

import numpy as np
import torch

from embed.model import Backbone, WeightsError, load_backbone
from embed.preprocess import ImageError, ImageOptions, decode
from mining.config import EmbedConfig, S3Config
from mining.lake import open_url
from mining.schema import EMBEDDING_DIM


def backbone_for_tag(backbone: str, tag: str, config: EmbedConfig, *, device: str = "cpu") -> Backbone:
    """Load the backbone whose weights carry ``tag`` (the ``weights`` column of the
    embeddings): ``imagenet1k_v1``, ``random-seedN``, or a checkpoint's
    ``<stem>@<sha>``, which must be the file ``config.weights`` names."""
    if tag.startswith("random-seed"):
        return load_backbone(backbone, "random", seed=int(tag.removeprefix("random-seed")), device=device)
    if tag.startswith("imagenet"):
        return load_backbone(backbone, "imagenet", device=device)
    if config.weights in ("imagenet", "random"):
        raise WeightsError(f"the index was built from checkpoint weights {tag!r}: pass --weights PATH to that checkpoint "
                           "(or set [embed] weights) to embed files the same way")
    loaded = load_backbone(backbone, config.weights, device=device)
    if loaded.weights != tag:
        raise WeightsError(f"checkpoint {config.weights} is {loaded.weights}, but the index was built from {tag}: "
                           "pass the checkpoint the lake was embedded with")
    return loaded


def embed_files(uris: list[str], backbone: Backbone, config: EmbedConfig, s3: S3Config) -> np.ndarray:
    """float32 (n, 512) unit vectors of the image files at ``uris``; a file that is
    missing or not a usable image raises ImageError (or FileNotFoundError) naming it."""
    options = ImageOptions(backbone.preprocessing, max_pixels=config.max_pixels)
    pixels = []
    for uri in uris:
        fs, path = open_url(uri, s3)
        with fs.open(path, "rb") as f:
            data = f.read()
        try:
            pixels.append(decode(data, options).pixels)
        except ImageError as e:
            raise ImageError(f"{uri}: {e.reason}") from None
    if not pixels:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return backbone.embed(torch.stack(pixels))
