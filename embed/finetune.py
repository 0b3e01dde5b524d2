"""Fine-tuning the backbone as a classifier on labelled images (`edgemine train`).

The images come in already decoded by the embed job's reader (embed.reader), as
uint8 pixels (n, 3, s, s) held in memory: each epoch augments them again
(torchvision.transforms.v2: random resized crop, flip, colour jitter), so the files
are read once per run, not once per epoch. ``fit`` is plain PyTorch: AdamW, a
learning rate warmed up linearly then decayed on a cosine per epoch, early stopping
on the validation accuracy with the best epoch's weights kept.

Any backbone of the registry (embed.backbones), normalised as its weights expect.
``finetune`` chooses what is trained: ``head`` (the classifier layer only: minutes on
a CPU), ``last`` (the backbone's last blocks and the head) or ``all``; the frozen rest
keeps its weights and its batch-norm statistics.

Determinism: every epoch's randomness (shuffle, augmentations) comes from
``seed`` and the epoch number alone, so the same data and seed give the same
weights and curves on the CPU, and a run resumed from an epoch checkpoint goes on
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2 as T
from torch import nn

from embed.backbones import BACKBONES, FINETUNE_CHOICES, IMAGENET_STATISTICS, Preprocessing, get_backbone, one_line
from embed.model import load_checkpoint_into
from mining.core.errors import ConfigError, TrainingError, WeightsError

log = logging.getLogger(__name__)

# torchvision's ImageNet statistics (the ResNets'); each backbone's own are in its registry entry.
MEAN = IMAGENET_STATISTICS.mean
STD = IMAGENET_STATISTICS.std


@dataclass(frozen=True)
class TrainSettings:
    """How a version is trained; recorded whole in its model.json."""

    backbone: str = "resnet18"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    patience: int = 3  # epochs without a better validation accuracy before stopping
    image_size: int = 224  # the model's input side; images are resized to 8/7 of it, then cropped
    seed: int = 0
    device: str = "cpu"
    finetune: str = "all"  # what is trained: the classifier head, the last blocks and the head, or all

    def preprocessing(self) -> Preprocessing:
        """The backbone's normalisation at ``image_size`` (resized to 8/7 of it, then cropped)."""
        return get_backbone(self.backbone).preprocessing.at(self.image_size)

    def check(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.backbone!r}; allowed: {', '.join(BACKBONES)}")
        if self.finetune not in FINETUNE_CHOICES:
            raise ConfigError(f"unknown --finetune {self.finetune!r}; allowed: {', '.join(FINETUNE_CHOICES)}")
        if self.epochs < 1 or self.batch_size < 2 or self.image_size < 32 or self.patience < 1:
            raise ConfigError(
                "--epochs and --patience must be at least 1, --batch-size at least 2, --image-size at least 32"
            )


@dataclass
class Curves:
    """Per epoch (1-based): training loss, validation loss and accuracy, learning rate, seconds."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_accuracy: float
    curves: Curves
    stopped_early: bool
    train_images_per_second: float


def build_network(backbone: str, base: str | dict[str, torch.Tensor], num_classes: int, *, seed: int = 0) -> nn.Module:
    """The registry's ``backbone`` with a ``num_classes`` head, from ``base``: ``imagenet``,
    ``random`` (seeded), a checkpoint file path, or a state dict (a lake model's: its head is
    kept when the dict has one, which then must have these classes; else a new seeded head)."""
    spec = get_backbone(backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build()
        head = nn.Linear(spec.width, num_classes)
    setattr(model, spec.head, nn.Identity())
    if base == "imagenet":
        model.load_state_dict(spec.without_head(spec.imagenet()))
    elif isinstance(base, dict):
        try:
            model.load_state_dict(spec.without_head(base))
            if f"{spec.head}.weight" in base:
                head.load_state_dict({"weight": base[f"{spec.head}.weight"], "bias": base[f"{spec.head}.bias"]})
        except RuntimeError as e:
            raise WeightsError(f"the base model's weights do not fit {backbone}: {one_line(e)}") from None
    elif base != "random":
        path = Path(base)
        if not path.is_file():
            raise WeightsError(f"--from {base!r} is neither imagenet, random, a model version of the lake "
                               "nor a checkpoint file")
        load_checkpoint_into(model, path, spec)
    setattr(model, spec.head, head)
    return model


def trainable_parts(model: nn.Module, settings: TrainSettings) -> list[nn.Module]:
    """What ``settings.finetune`` trains: the head; the backbone's last blocks and the head; or all.
    The rest is frozen: no gradient, and batch norm keeps its running statistics (eval mode)."""
    spec = get_backbone(settings.backbone)
    head = getattr(model, spec.head)
    parts = {"all": [model], "last": [*spec.last_blocks(model), head], "head": [head]}[settings.finetune]
    model.requires_grad_(settings.finetune == "all")
    for part in parts:
        part.requires_grad_(True)
    return parts


def train_mode(model: nn.Module, parts: list[nn.Module]) -> None:
    """Training mode for the trained ``parts`` only: a frozen batch norm must not move its statistics."""
    model.eval()
    for part in parts:
        part.train()


def augmentations(size: int, preprocessing: Preprocessing = IMAGENET_STATISTICS) -> T.Compose:
    """uint8 (3, s, s) -> float32 (3, size, size), normalised: the training-time variation."""
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(preprocessing.mean, preprocessing.std),
    ])


def normalise(pixels: torch.Tensor, preprocessing: Preprocessing = IMAGENET_STATISTICS) -> torch.Tensor:
    """uint8 (n, 3, s, s) -> float32, as the augmentations end (no randomness: validation)."""
    return T.Normalize(preprocessing.mean, preprocessing.std)(pixels.float() / 255)


def lr_factor(epoch: int, settings: TrainSettings) -> float:
    """Multiplier of the learning rate in 0-based ``epoch``: linear warm-up, then cosine to zero."""
    warm = settings.warmup_epochs
    if epoch < warm:
        return (epoch + 1) / (warm + 1)
    return 0.5 * (1 + math.cos(math.pi * (epoch - warm) / max(1, settings.epochs - warm)))


def fit(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
        settings: TrainSettings, *, resume: dict[str, Any] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        progress: Callable[[int], None] | None = None) -> FitResult:
    """Train ``model`` in place; return the best epoch's weights.

    train: (pixels uint8 (n, 3, s, s), labels int64 (n,)[, weights float32 (n,)]) on the CPU; a
        weight scales an image's loss (pseudo-labels count less than labels; default 1).
    val: (pixels, labels) as train, unweighted.
    resume: a checkpoint ``on_epoch`` was given (continue after its epoch).
    on_epoch: called after each epoch with a checkpoint (plain dict of tensors, torch.save-able).
    progress: called with the number of images trained on each batch."""
    device = torch.device(settings.device)
    model.to(device)
    parts = trainable_parts(model, settings)
    trained_parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained_parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, settings))
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    curves, best_state, best_epoch, best_accuracy, start = Curves(), None, 0, -1.0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        curves = Curves(**resume["curves"])
        best_state, best_epoch, best_accuracy, start = (
            resume["best_state"],
            resume["best_epoch"],
            resume["best_accuracy"],
            resume["epoch"],
        )
    preprocessing = settings.preprocessing()
    augment = augmentations(settings.image_size, preprocessing)
    trained, train_seconds, stopped_early = 0, 0.0, False
    for epoch in range(start, settings.epochs):
        if epoch - best_epoch >= settings.patience and best_epoch > 0:
            stopped_early = True
            break
        started = time.monotonic()
        lr = optimizer.param_groups[0]["lr"]
        loss = _train_epoch(model, parts, optimizer, loss_fn, augment, train, settings, epoch, device, progress)
        scheduler.step()
        val_loss, accuracy = evaluate(model, val, settings.batch_size, device, preprocessing)
        seconds = time.monotonic() - started
        trained += len(train[1])
        train_seconds += seconds
        for name, value in (("epoch", epoch + 1), ("train_loss", loss), ("val_loss", val_loss),
                            ("val_accuracy", accuracy), ("lr", lr), ("seconds", seconds)):
            getattr(curves, name).append(value)
        if accuracy > best_accuracy:
            best_accuracy, best_epoch = accuracy, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        log.info("epoch %d: loss %.4f, val loss %.4f, val accuracy %.4f (best %.4f at epoch %d)",
                 epoch + 1, loss, val_loss, accuracy, best_accuracy, best_epoch)
        if on_epoch is not None:
            on_epoch({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "curves": asdict(curves), "best_state": best_state,
                      "best_epoch": best_epoch, "best_accuracy": best_accuracy})
    return FitResult(
        best_state=best_state,
        best_epoch=best_epoch,
        best_val_accuracy=best_accuracy,
        curves=curves,
        stopped_early=stopped_early,
        train_images_per_second=trained / train_seconds if train_seconds else 0.0,
    )


def _train_epoch(model: nn.Module, parts: list[nn.Module], optimizer, loss_fn, augment, train,
                 settings: TrainSettings, epoch: int, device: torch.device, progress) -> float:
    """One pass over the shuffled training images; returns the mean loss."""
    pixels, labels = train[0], train[1]
    weights = train[2] if len(train) > 2 else torch.ones(len(labels))
    train_mode(model, parts)
    total, count = 0.0, 0
    # The epoch's randomness from (seed, epoch) only: reproducible, and the same after a resume.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed * 100_003 + epoch)
        order = torch.randperm(len(labels))
        for start in range(0, len(order), settings.batch_size):
            index = order[start : start + settings.batch_size]
            if len(index) < 2:  # batch norm cannot train on one image
                continue
            x = torch.stack([augment(image) for image in pixels[index]]).to(device)
            y, w = labels[index].to(device), weights[index].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = (loss_fn(model(x), y) * w).sum() / w.sum()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            count += len(index)
            if progress is not None:
                progress(len(index))
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], batch_size: int, device: torch.device,
             preprocessing: Preprocessing = IMAGENET_STATISTICS) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on ``data`` (pixels uint8 (n, 3, s, s), labels int64 (n,)),
    normalised as ``preprocessing`` says (the backbone's)."""
    pixels, labels = data
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        x = normalise(pixels[start : start + batch_size], preprocessing).to(device)
        y = labels[start : start + batch_size].to(device)
        logits = model(x)
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = max(len(labels), 1)
    return loss / n, correct / n


def hardware(device: str) -> dict[str, Any]:
    """What the model was trained on, for its record."""
    info: dict[str, Any] = {"device": device, "cpu": platform.processor() or platform.machine(),
                            "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                            "python": platform.python_version(), "numpy": np.__version__}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def check_base_is_classifier(state: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a lake model's model.pt."""
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise TrainingError(f"{source} holds no model state dict; train it again")
    return state["state_dict"]
