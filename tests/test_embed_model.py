"""The backbone: weights loading, the fast path against plain torchvision, and
invariance to how images are batched."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.v2.functional as TF

from embed.model import load_backbone
from mining.core.errors import ConfigError, WeightsError

pytestmark = pytest.mark.model  # every test here runs a model (or uses one a fixture trained)

# Same vectors whatever the batching or graph rewrites: float32 rounding only.
TOLERANCE = 1e-5


def random_pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def reference_embed(model: torch.nn.Module, pixels: torch.Tensor) -> np.ndarray:
    """Plain torchvision: unfused model, contiguous layout, transforms' normalisation."""
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    x = TF.normalize(pixels.float() / 255, weights.mean, weights.std)
    with torch.no_grad():
        features = model.eval()(x)
    return torch.nn.functional.normalize(features, dim=1).numpy()


def plain_resnet18(state: dict | None = None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Identity()
    if state is not None:
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    return model


def test_embeddings_are_512_float32_unit_vectors():
    backbone = load_backbone(weights="random", seed=1)
    vectors = backbone.embed(random_pixels(5))
    assert vectors.shape == (5, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert backbone.embed(random_pixels(0)).shape == (0, 512)


def test_fast_path_matches_plain_torchvision():
    backbone = load_backbone(weights="random", seed=4)
    pixels = random_pixels(6, seed=1)
    np.testing.assert_allclose(backbone.embed(pixels), reference_embed(plain_resnet18(seed=4), pixels), atol=TOLERANCE)


def test_same_image_same_vector_whatever_the_batch():
    backbone = load_backbone(weights="random", seed=0)
    pixels = random_pixels(10, seed=2)
    whole = backbone.embed(pixels)
    in_threes = np.concatenate([backbone.embed(pixels[i : i + 3]) for i in range(0, 10, 3)])
    one_by_one = np.concatenate([backbone.embed(pixels[i : i + 1]) for i in range(10)])
    np.testing.assert_allclose(in_threes, whole, atol=TOLERANCE)
    np.testing.assert_allclose(one_by_one, whole, atol=TOLERANCE)


def test_random_weights_are_seeded_and_leave_the_global_generator_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = load_backbone(weights="random", seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    b = load_backbone(weights="random", seed=7)
    c = load_backbone(weights="random", seed=8)
    pixels = random_pixels(2)
    assert a.weights == "random-seed7" and c.weights == "random-seed8"
    np.testing.assert_array_equal(a.embed(pixels), b.embed(pixels))
    assert not np.allclose(a.embed(pixels), c.embed(pixels), atol=1e-3)


def test_random_weights_warn_loudly(caplog):
    load_backbone(weights="random")
    assert "similarity between images will be weak" in caplog.text


def test_fine_tuned_checkpoint_with_its_own_head_and_ddp_prefix(tmp_path: Path):
    torch.manual_seed(5)
    tuned = torchvision.models.resnet18(num_classes=7)  # a head for 7 classes: dropped on load
    state = {f"module.{k}": v for k, v in tuned.state_dict().items()}
    path = tmp_path / "finetune-v3.pth"
    torch.save({"state_dict": state, "epoch": 4}, path)

    backbone = load_backbone(weights=str(path))
    assert backbone.weights.startswith("finetune-v3@") and len(backbone.weights) == len("finetune-v3@") + 12
    pixels = random_pixels(3)
    np.testing.assert_allclose(
        backbone.embed(pixels), reference_embed(plain_resnet18(tuned.state_dict()), pixels), atol=TOLERANCE
    )


def test_checkpoint_of_another_architecture_is_refused_with_the_keys(tmp_path: Path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit.*unexpected"):
        load_backbone(weights=str(path))


def test_unknown_weights_and_backbone_list_what_is_allowed(tmp_path: Path):
    with pytest.raises(WeightsError, match="imagenet.*random"):
        load_backbone(weights=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="could not be read"):
        load_backbone(weights=str(tmp_path / "junk.pth"))
    with pytest.raises(ConfigError, match="resnet18"):
        load_backbone("vit_h", "random")


def test_imagenet_weights_come_from_torchs_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The real loading code, offline: the file torchvision downloads, already in the cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.manual_seed(11)
    stand_in = torchvision.models.resnet18()
    torch.save(stand_in.state_dict(), cached)

    backbone = load_backbone(weights="imagenet")
    assert backbone.weights == "imagenet1k_v1"
    pixels = random_pixels(2)
    np.testing.assert_allclose(
        backbone.embed(pixels), reference_embed(plain_resnet18(stand_in.state_dict()), pixels), atol=TOLERANCE
    )


def test_imagenet_weights_unreachable_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, *args, **kwargs):  # what urllib raises with no route to the internet
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as error:
        load_backbone(weights="imagenet")
    message = str(error.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "--weights random" in message and "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_public_api_as_the_package_docstring_shows():
    import embed
    from tests.helpers import jpeg_bytes

    backbone = embed.load_backbone("resnet18", "random", device="auto")
    prepared = embed.decode(jpeg_bytes(3, (300, 200)), embed.ImageOptions(backbone.preprocessing))
    vectors = backbone.embed(prepared.pixels[None])
    assert vectors.shape == (1, 512) and abs(float(vectors[0] @ vectors[0]) - 1) < 1e-6


def test_resnet34_is_a_second_backbone_with_512_d_vectors():
    backbone = load_backbone("resnet34", "random", seed=1, device="cpu")
    vectors = backbone.embed(random_pixels(2)[:, :, :64, :64])
    assert backbone.name == "resnet34" and vectors.shape == (2, 512)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=TOLERANCE)


def test_a_classifier_gives_its_embedding_and_class_probabilities_in_one_pass():
    from embed.model import load_classifier

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    classifier = load_classifier("resnet18", model.state_dict(), ["a", "b", "c"], "model:x", device="cpu")
    pixels = random_pixels(2)[:, :, :64, :64]
    vectors, scores = classifier.embed_and_classify(pixels)
    assert vectors.shape == (2, 512) and scores.shape == (2, 3) and np.allclose(scores.sum(1), 1, atol=1e-5)
    # The same as the plain model's softmax (fused batch norm: float rounding only).
    x = TF.normalize(pixels.float() / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        expected = torch.softmax(model.eval()(x), 1).numpy()
    assert np.allclose(scores, expected, atol=1e-4)
    with pytest.raises(WeightsError, match="does not fit"):
        load_classifier("resnet34", model.state_dict(), ["a", "b", "c"], "model:x")
