"""Image embeddings for the lake: the model and the image pipeline.

    from embed import load_backbone, decode, ImageOptions

    backbone = load_backbone("resnet18", "imagenet", device="auto")   # or a checkpoint path, or "random"
    prepared = decode(open("frame.jpg", "rb").read(), ImageOptions(backbone.preprocessing))
    vectors = backbone.embed(prepared.pixels[None])                   # float32 (1, 512), unit norm

The job that embeds a whole lake (workers, parts, shards, resume) is jobs.embed
(`edgemine embed`); docs/EMBED.md describes it.
"""

from embed.model import Backbone, DeviceError, WeightsError, load_backbone, resolve_device
from embed.preprocess import ImageError, ImageOptions, decode

__all__ = ["Backbone", "DeviceError", "ImageError", "ImageOptions", "WeightsError", "decode", "load_backbone", "resolve_device"]
