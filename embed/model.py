"""The backbone: torchvision's ResNet18 (or ResNet34) up to its global average pool (512-d).

``load_backbone`` builds it once with the chosen weights on the chosen device;
``Backbone.embed`` turns a batch of preprocessed uint8 pixels into L2-normalised
float32 vectors. The device comes from mining.devices, the product's one device policy.

Weights:
- ``imagenet``: torchvision's own weights enum. The first use downloads the file
  into torch's cache (``$TORCH_HOME/hub/checkpoints``); later uses read it there.
- a checkpoint path: a state dict (or a dict holding one under ``state_dict`` or
  ``model``), e.g. one this project fine-tuned; the classifier head is dropped.
- ``random``: seeded initialisation, for tests and offline demos. Similarity
  between images is then weak, and the job says so.

A classifier trained by `edgemine train` (embed/finetune.py) loads with
``load_classifier``: the same backbone, plus its head, so one forward pass gives
both the embedding and the class scores (`edgemine score`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torch.fx.experimental.optimization import fuse

from mining.devices import resolve_device
from mining.errors import ConfigError, WeightsError
from mining.schema import EMBEDDING_DIM

log = logging.getLogger(__name__)

# name -> (constructor, torchvision weights enum member used for "imagenet")
BACKBONES = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
}
NAMED_WEIGHTS = ("imagenet", "random")


@dataclass(frozen=True)
class Preprocessing:
    """The standard preprocessing of the weights: resize the short side, centre
    crop, normalise. The values come from torchvision's weights enum."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @classmethod
    def of(cls, weights_enum: torchvision.models.WeightsEnum) -> Preprocessing:
        transform = weights_enum.transforms()
        return cls(
            resize=transform.resize_size[0],
            crop=transform.crop_size[0],
            mean=tuple(transform.mean),
            std=tuple(transform.std),
        )


@dataclass
class Backbone:
    """A loaded model. ``weights`` is the tag written to the lake with each vector:
    ``imagenet1k_v1``, ``random-seed<N>`` or ``<checkpoint stem>@<sha256[:12]>``."""

    name: str
    weights: str
    model: nn.Module
    device: torch.device
    preprocessing: Preprocessing
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
        Returns float32 array (n, 512), each row with unit L2 norm."""
        return self.embed_and_classify(pixels)[0]

    @torch.inference_mode()
    def embed_and_classify(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """One forward pass: the embeddings (as ``embed``) and, with a head, the class
        probabilities, float32 (n, len(classes)) rows summing to 1; else None."""
        if pixels.shape[0] == 0:
            empty = np.zeros((0, len(self.classes)), np.float32) if self.head is not None else None
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32), empty
        x = pixels.to(self.device, non_blocking=True).float()
        x = ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.uses_cuda else contextlib.nullcontext():
            features = self.model(x)
            logits = self.head(features) if self.head is not None else None
        vectors = nn.functional.normalize(features.float(), dim=1).cpu().numpy()
        scores = None if logits is None else torch.softmax(logits.float(), dim=1).cpu().numpy()
        return vectors, scores


def load_backbone(name: str = "resnet18", weights: str = "imagenet", *, seed: int = 0, device: str | torch.device = "cpu") -> Backbone:
    """Build the backbone, load its weights and make it ready for inference on ``device``."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; allowed: {sorted(BACKBONES)}")
    constructor, imagenet = BACKBONES[name]
    device = device if isinstance(device, torch.device) else torch.device(resolve_device(device))

    # The constructor draws the initial weights from torch's global generator:
    # fork it so a seeded build neither depends on nor disturbs the caller's state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = constructor(weights=None)
    model.fc = nn.Identity()  # features of the global average pool, not class scores

    if weights == "imagenet":
        model.load_state_dict(_without_head(_imagenet_state_dict(name, imagenet)))
        tag = imagenet.name.lower()
    elif weights == "random":
        tag = f"random-seed{seed}"
        log.warning(
            "weights=random: %s has seeded random weights, so similarity between images will be weak. "
            "Use --weights imagenet (or a fine-tuned checkpoint) for real mining.",
            name,
        )
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(
                f"weights {weights!r} is neither one of {list(NAMED_WEIGHTS)} nor an existing checkpoint file"
            )
        _load_checkpoint(model, path)
        tag = f"{path.stem}@{_sha256(path)[:12]}"

    model.eval()
    # Folding batch norm into the convolutions is exact up to float rounding and
    # saves a pass over every activation; channels_last is the layout oneDNN and
    # cuDNN run fastest.
    model = fuse(model).to(device=device, memory_format=torch.channels_last)
    if device.type == "cuda":
        # Every batch has the same input shape: let cuDNN time its kernels once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    return Backbone(name=name, weights=tag, model=model, device=device, preprocessing=Preprocessing.of(imagenet))


def load_classifier(name: str, state: dict[str, torch.Tensor], classes: list[str], tag: str, *,
                    device: str | torch.device = "cpu", preprocessing: Preprocessing | None = None) -> Backbone:
    """A trained classifier (embed/finetune.py's state dict, head ``fc.*`` included) ready for
    inference: the backbone as ``load_backbone`` makes it, and the head beside it."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; allowed: {sorted(BACKBONES)}")
    constructor, imagenet = BACKBONES[name]
    device = device if isinstance(device, torch.device) else torch.device(resolve_device(device))
    model = constructor(weights=None, num_classes=len(classes))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise WeightsError(f"the checkpoint does not fit {name} with {len(classes)} classes: {str(e)[:300]}") from None
    head = model.fc.eval().to(device)
    model.fc = nn.Identity()
    model = fuse(model.eval()).to(device=device, memory_format=torch.channels_last)
    return Backbone(name=name, weights=tag, model=model, device=device,
                    preprocessing=preprocessing or Preprocessing.of(imagenet), head=head, classes=tuple(classes))


def _imagenet_state_dict(name: str, weights_enum: torchvision.models.WeightsEnum) -> dict[str, torch.Tensor]:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights_enum.url)
    try:
        return weights_enum.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # urllib, SSL, hash and unpickling errors all mean the same to the user
        raise WeightsError(
            f"could not load the ImageNet weights of {name} ({type(e).__name__}: {e}). "
            f"On a machine with internet access they download once into {cached}; "
            f"without it, copy {weights_enum.url} to that path (or set TORCH_HOME), "
            "pass --weights PATH to a checkpoint, or --weights random for a smoke test."
        ) from e


def load_checkpoint_into(model: nn.Module, path: Path) -> None:
    """Load a checkpoint file's backbone weights into ``model`` (its head is left as it is);
    WeightsError when the file is no state dict or not of this architecture."""
    _load_checkpoint(model, path)


def _load_checkpoint(model: nn.Module, path: Path) -> None:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"checkpoint {path} could not be read as a torch state dict: {e}") from e
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict):
        raise WeightsError(f"checkpoint {path} holds a {type(loaded).__name__}, not a state dict")
    # Checkpoints saved from DataParallel/DDP prefix every key with "module.".
    state = {key.removeprefix("module."): value for key, value in loaded.items()}
    try:
        missing, unexpected = model.load_state_dict(_without_head(state), strict=False)
    except RuntimeError as e:  # same names, other shapes: another architecture
        raise WeightsError(f"checkpoint {path} does not fit {type(model).__name__}: {str(e)[:300]}") from None
    if missing or unexpected:
        raise WeightsError(
            f"checkpoint {path} does not fit {type(model).__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )


def _without_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the classifier: a fine-tuned checkpoint's head has its own class count."""
    return {key: value for key, value in state.items() if not key.startswith("fc.")}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
