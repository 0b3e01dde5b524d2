"""Pre-annotations for a new problem (`edgemine export --preannotate`, mining/labelling/preannotate.py):
SLIC superpixels as polygon regions, a model version's predictions, the open ImageNet classifier's
top class; the formats that cannot carry them refuse, and the export records which it sent."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from scipy import ndimage

from jobs.cli import main
from jobs.export_images import run_export
from jobs.ingest_images import ingest_images
from jobs.ingest_predictions import ingest_predictions
from mining.core.config import Config, PreannotateConfig
from mining.core.errors import ConfigError, ExportError
from mining.core.lake import Lake
from mining.core.sql import LakeDB
from mining.labelling.export import export_images
from mining.labelling.preannotate import UNASSIGNED, region_polygons, superpixels
from tests.helpers import jsonl, prediction, put, put_images, rows, source_uri

N = 6
WIDTH, HEIGHT = 64, 48  # tests.helpers.jpeg_bytes
V7_BOXES = [{"box": [2, 3, 30, 40], "label": "car", "score": 0.9}]
V8_BOXES = [{"box": [10, 5, 50, 44], "label": "person", "score": 0.6}, {"box": [1, 1, 9, 9], "label": "car",
                                                                           "score": 0.3}]


def build(lake: Lake) -> list[str]:
    """N images, each with a prediction of model v7 and a later one of v8 (other labels and boxes)."""
    folder = source_uri(lake, "images")
    uris = put_images(lake, folder, N)
    ingest_images(lake, folder, show_progress=False)
    v7 = [prediction(u, i, detections=V7_BOXES, ts=f"2026-10-01T{i:02d}:00:00Z") for i, u in enumerate(uris)]
    v8 = [prediction(u, i, model_version="v8", label="person", confidence=0.55, detections=V8_BOXES,
                     ts=f"2026-10-02T{i:02d}:00:00Z") for i, u in enumerate(uris)]
    put(lake, source_uri(lake, "p.jsonl"), jsonl(v7 + v8))
    ingest_predictions(lake, [source_uri(lake, "p.jsonl")], show_progress=False)
    return [r["image_id"] for r in rows(lake, "SELECT image_id FROM images ORDER BY uri")]


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> tuple[Lake, list[str]]:
    lake = Lake(str(tmp_path_factory.mktemp("preannotate") / "lake"))
    return lake, build(lake)


def config_of(lake: Lake, segments: int = 24) -> Config:
    return replace(Config(lake=lake.uri, s3=lake.s3), preannotate=PreannotateConfig(segments=segments))


def export(lake: Lake, ids: list[str], fmt: str, target: str, **kwargs):
    with LakeDB(lake) as db:
        return export_images(db, ids, fmt=fmt, target=target, config=config_of(lake), source="test", **kwargs)


def generated_image(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with seeded noise: textures SLIC has to cut somewhere."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 120 + 60], axis=-1)
    return np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def rasterised(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO's own rasteriser (pycocotools) over a region's polygons."""
    return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))).astype(bool)


# -- superpixels ------------------------------------------------------------------
def test_superpixels_cover_the_image_without_overlap_near_the_asked_count():
    pixels = generated_image()
    for asked in (40, 150):
        labels = superpixels(pixels, PreannotateConfig(segments=asked))
        assert labels.shape == pixels.shape[:2]
        count = labels.max() + 1
        assert sorted(np.unique(labels)) == list(range(count))  # numbered 0..k-1, none empty
        assert 0.6 * asked <= count <= 1.4 * asked, (asked, count)
        regions = region_polygons(labels)
        assert len(regions) == count and {r["label"] for r in regions} == {UNASSIGNED}
        cover = np.zeros(labels.shape, np.int32)
        for k, region in enumerate(regions):
            mask = rasterised(region["polygons"], *labels.shape)
            assert np.array_equal(mask, labels == k)  # the polygons are exactly the region's pixels
            assert ndimage.label(labels == k)[1] == 1 and region["area"] == mask.sum()
            x, y, w, h = region["bbox"]
            assert mask[y:y + h, x:x + w].sum() == mask.sum()
            cover += mask
        assert (cover == 1).all()  # the union is every pixel, and no pixel is in two regions


def test_superpixel_boundaries_follow_a_colour_edge():
    height, width, edge = 96, 128, 53  # the edge on no SLIC grid line
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, :edge] = (200, 40, 30)
    pixels[:, edge:] = (30, 60, 210)
    pixels = np.clip(pixels + np.random.default_rng(1).normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)
    labels = superpixels(pixels, PreannotateConfig(segments=30))
    left = set(np.unique(labels[:, :edge]).tolist())
    right = set(np.unique(labels[:, edge:]).tolist())
    assert left and right and not left & right  # no region crosses the edge
    assert (labels[:, edge - 1] != labels[:, edge]).all()  # a boundary runs down the whole edge


def test_bad_superpixel_settings_are_refused_in_the_config():
    with pytest.raises(ConfigError, match=r"\[preannotate\] segments must be at least 1"):
        PreannotateConfig(segments=0)
    with pytest.raises(ConfigError, match="compactness above 0"):
        PreannotateConfig(compactness=0)


# -- superpixels through the formats --------------------------------------------------
def test_coco_superpixel_polygons_round_trip_through_pycocotools(local, tmp_path):
    from pycocotools.coco import COCO

    lake, ids = local
    summary = export(lake, ids, "coco", str(tmp_path / "out"), preannotate="superpixels")
    assert (summary.status, summary.exported, summary.preannotate) == ("exported", N, "superpixels")
    folder = Path(summary.folder)
    gt = COCO(str(folder / "annotations.json"))
    [unassigned] = [c["id"] for c in gt.loadCats(gt.getCatIds()) if c["name"] == UNASSIGNED]
    for image in gt.loadImgs(gt.getImgIds()):
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[image["id"]]))
        assert 4 <= len(anns) <= 36  # noise images: SLIC finds fewer than asked (the count is tested above)
        assert {a["category_id"] for a in anns} == {unassigned}  # regions only: no boxes of a model
        cover = sum(gt.annToMask(a).astype(np.int32) for a in anns)
        assert cover.shape == (HEIGHT, WIDTH) and (cover == 1).all()
        assert sum(a["area"] for a in anns) == WIDTH * HEIGHT
    assert not (folder / "results.json").exists()  # regions have no scores
    # The export records what it sent: the exports rows and batch.json.
    sent = rows(lake, "SELECT options, model_version FROM exports WHERE batch = $b", {"b": summary.batch})
    assert len(sent) == N and all(json.loads(r["options"])["preannotate"] == "superpixels" for r in sent)
    assert {r["model_version"] for r in sent} == {None}
    assert json.loads((folder / "batch.json").read_text())["options"]["preannotate"] == "superpixels"


def test_label_studio_superpixels_are_polygon_labels_the_config_offers(local, tmp_path):
    lake, ids = local
    summary = export(lake, ids[:2], "label-studio", str(tmp_path / "out"), preannotate="superpixels")
    folder = Path(summary.folder)
    task = json.loads((folder / "tasks.json").read_text())[0]
    [prediction] = task["predictions"]
    results = prediction["result"]
    assert results and {r["type"] for r in results} == {"polygonlabels"}
    assert len({r["id"] for r in results}) == len(results)
    cover = np.zeros((HEIGHT, WIDTH), np.int32)
    for r in results:
        assert r["value"]["polygonlabels"] == [UNASSIGNED] and r["value"]["closed"] is True
        assert (r["original_width"], r["original_height"]) == (WIDTH, HEIGHT)
        points = [[x * WIDTH / 100, y * HEIGHT / 100] for x, y in r["value"]["points"]]
        assert all(0 <= x <= WIDTH and 0 <= y <= HEIGHT for x, y in points)
        cover += rasterised([np.ravel(points).tolist()], HEIGHT, WIDTH)
    assert (cover == 1).all()  # percent coordinates still tile the image
    config = ET.parse(folder / "config.xml").getroot()
    polygons = config.find("PolygonLabels")
    assert polygons.get("name") == "region" and polygons.get("toName") == "image"
    assert UNASSIGNED in [label.get("value") for label in polygons.iter("Label")]


def test_an_image_that_cannot_be_decoded_is_an_error_and_the_rest_is_exported(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    ids = build(lake)
    broken = rows(lake, "SELECT uri FROM images WHERE image_id = $i", {"i": ids[0]})[0]["uri"]
    put(lake, broken, b"not a jpeg any more")
    summary = export(lake, ids, "coco", str(tmp_path / "out"), preannotate="superpixels")
    assert (summary.exported, summary.errors) == (N - 1, 1)
    [error] = rows(lake, "SELECT uri, reason FROM errors WHERE job = 'export' AND source = $b", {"b": summary.batch})
    assert error["uri"] == broken and "not a readable image" in error["reason"]


# -- a model's predictions -------------------------------------------------------------
def test_model_version_preannotations_are_that_versions_predictions(local, tmp_path):
    lake, ids = local
    summary = export(lake, ids, "manifest", str(tmp_path / "v7"), preannotate="model:v7")
    lines = [json.loads(line) for line in (Path(summary.folder) / "manifest.jsonl").read_text().splitlines()]
    truth = {r["image_id"]: r for r in rows(
        lake, "SELECT image_id, label, confidence FROM predictions WHERE model_version = 'v7'")}
    boxes = {r["image_id"]: r["n"] for r in rows(
        lake, "SELECT p.image_id, count(*) AS n FROM detections d JOIN predictions p USING (prediction_id) "
              "WHERE p.model_version = 'v7' GROUP BY p.image_id")}
    assert len(lines) == N
    for line in lines:
        sent, want = line["prediction"], truth[line["image_id"]]
        assert sent["model_version"] == "v7" and sent["label"] == want["label"]
        assert sent["confidence"] == pytest.approx(want["confidence"])
        assert [(b["box"], b["label"]) for b in sent["boxes"]] == [(V7_BOXES[0]["box"], "car")]
        assert boxes[line["image_id"]] == len(sent["boxes"])
    sent = rows(lake, "SELECT model_version, options FROM exports WHERE batch = $b", {"b": summary.batch})
    assert {r["model_version"] for r in sent} == {"v7"}
    assert {json.loads(r["options"])["preannotate"] for r in sent} == {"model:v7"}
    newest = export(lake, ids, "manifest", str(tmp_path / "newest"))  # the default: the newest, v8's
    first = json.loads((Path(newest.folder) / "manifest.jsonl").read_text().splitlines()[0])
    assert first["prediction"]["model_version"] == "v8" and len(first["prediction"]["boxes"]) == 2
    with pytest.raises(ExportError, match="no predictions of model version 'v9'; versions: v7, v8"):
        export(lake, ids, "manifest", str(tmp_path / "v9"), preannotate="model:v9")


@pytest.mark.model
def test_model_imagenet_gives_the_sample_photos_class(tmp_path):
    from sklearn.datasets import load_sample_image

    from embed.imagenet import imagenet_classes

    lake = Lake(str(tmp_path / "lake"))
    buffer = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buffer, format="JPEG", quality=95)
    put(lake, source_uri(lake, "photos") + "/china.jpg", buffer.getvalue())
    ingest_images(lake, source_uri(lake, "photos"), show_progress=False)
    config = Config(lake=lake.uri, s3=lake.s3)
    summary = run_export(config, "sql:SELECT image_id FROM images", fmt="label-studio", target=str(tmp_path / "out"),
                         preannotate="model:imagenet", show_progress=False)
    assert (summary.exported, summary.preannotate) == (1, "model:imagenet")
    [task] = json.loads((Path(summary.folder) / "tasks.json").read_text())
    [prediction] = task["predictions"]
    [choice] = prediction["result"]
    label = choice["value"]["choices"][0]
    # A Chinese palace roof: one of ImageNet's buildings, with a real probability (not a uniform 1/1000).
    assert label in imagenet_classes() and label in {"palace", "monastery", "pagoda, pagoda", "stupa, tope",
                                                      "church, church building", "bell cote, bell cot"}
    assert 0.1 < prediction["score"] <= 1 and prediction["model_version"].startswith("imagenet:efficientnet-lite0@")
    config_xml = ET.parse(Path(summary.folder) / "config.xml").getroot()
    assert label in [c.get("value") for c in config_xml.iter("Choice")]  # the config offers the class it sends
    [row] = rows(lake, "SELECT model_version, options FROM exports")
    assert row["model_version"] == prediction["model_version"]
    assert json.loads(row["options"])["preannotate"] == "model:imagenet"


def test_imagenet_class_names_are_imagenets_thousand_and_unique():
    from embed.imagenet import imagenet_classes

    names = imagenet_classes()
    assert len(names) == 1000 == len(set(names))
    assert names[281] == "tabby, tabby cat" and names[0] == "tench, Tinca tinca"


# -- refusals ------------------------------------------------------------------------
def test_formats_that_cannot_carry_a_preannotation_refuse_in_one_line(local, tmp_path, capsys):
    lake, ids = local
    out = str(tmp_path / "out")
    base = ["export", "sql:SELECT image_id FROM images", "--to", out, "--lake", lake.uri, "--quiet"]
    for extra, message in (
        (["--format", "yolo", "--preannotate", "superpixels"],
         "the yolo format cannot carry superpixel regions (polygons): use --format label-studio or coco"),
        (["--format", "cvat", "--preannotate", "superpixels"], "the cvat format cannot carry superpixel regions"),
        (["--format", "coco", "--preannotate", "model:imagenet"],
         "the coco format has no image-level class for model:imagenet's top class: use --format label-studio, "
         "cvat, prodigy, manifest"),
        (["--format", "coco", "--preannotate", "slic"], "unknown pre-annotation 'slic'; give one of: predictions"),
        (["--format", "coco", "--preannotate", "superpixels", "--no-predictions"], "give one of them"),
        (["--format", "coco", "--preannotate", "model:v9"], "no predictions of model version 'v9'"),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not Path(out).exists()
    assert main([*base, "--format", "coco", "--preannotate", "superpixels", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert (done["exported"], done["preannotate"]) == (N, "superpixels")
    assert rows(lake, "SELECT count(*) AS n FROM exports WHERE target = $t", {"t": out}) == [{"n": N}]
