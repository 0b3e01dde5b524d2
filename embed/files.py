"""Embed image files from outside the lake, with the model an index was built from.

What `edgemine similar FILE` uses: the file is read (local or s3://), decoded and
embedded exactly as the embed job does, so its vector is comparable with the lake's.
``file_embedder(config)`` is what the callers of mining.search.similar hand it for such
seeds (mining sits below embed, so it is given the model, never imports it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from mining.core.config import Config, EmbedConfig, S3Config
from mining.core.errors import WeightsError
from mining.core.lake import open_url

if TYPE_CHECKING:
    from embed.model import Backbone


def backbone_for_tag(backbone: str, tag: str, config: EmbedConfig, *, device: str = "cpu") -> Backbone:
    """Load the backbone whose weights carry ``tag`` (the ``weights`` column of the
    embeddings): the backbone's ImageNet tag (``imagenet1k_v1``, ``imagenet1k_tf``),
    ``random-seedN``, or a checkpoint's ``<stem>@<sha>``, which must be the file
    ``config.weights`` names."""
    from embed.model import load_backbone  # torch: only once a file is to be embedded

    if tag.startswith("random-seed"):
        return load_backbone(backbone, "random", seed=int(tag.removeprefix("random-seed")), device=device)
    if tag.startswith("imagenet"):
        loaded = load_backbone(backbone, "imagenet", device=device)
        if loaded.weights != tag:
            raise WeightsError(f"the index was built from {backbone}'s {tag} weights, but its ImageNet weights here "
                               f"are {loaded.weights}: embed the lake again (edgemine embed) to search with files")
        return loaded
    if config.weights in ("imagenet", "random"):
        raise WeightsError(
            f"the index was built from checkpoint weights {tag!r}: pass --weights PATH to that checkpoint "
            "(or set [embed] weights) to embed files the same way"
        )
    loaded = load_backbone(backbone, config.weights, device=device)
    if loaded.weights != tag:
        raise WeightsError(f"checkpoint {config.weights} is {loaded.weights}, but the index was built from {tag}: "
                           "pass the checkpoint the lake was embedded with")
    return loaded


def embed_files(uris: list[str], backbone: Backbone, config: EmbedConfig, s3: S3Config) -> np.ndarray:
    """float32 (n, backbone width) unit vectors of the image files at ``uris``; a file that is
    missing or not a usable image raises ImageError (or FileNotFoundError) naming it."""
    import torch

    from embed.preprocess import ImageError, ImageOptions, decode

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
        return np.zeros((0, backbone.width), np.float32)
    return backbone.embed(torch.stack(pixels))


def file_embedder(config: Config) -> Callable[[Sequence[str], str, str], np.ndarray]:
    """``embed(uris, backbone, weights_tag)``: float32 (n, width) vectors of image files,
    made by the model that carries that tag (loaded once per tag), on ``config.index.device``.
    Building it is cheap: torch and the model load on its first call."""
    loaded: dict[tuple[str, str], Backbone] = {}

    def embed(uris: Sequence[str], backbone: str, tag: str) -> np.ndarray:
        if (backbone, tag) not in loaded:
            loaded[backbone, tag] = backbone_for_tag(backbone, tag, config.embed, device=config.index.device)
        return embed_files(list(uris), loaded[backbone, tag], config.embed, config.s3)

    return embed
