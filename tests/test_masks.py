"""Segmentation end to end (issue 27): instance masks as COCO RLE from our JSONL and from COCO
results (RLE or polygons), semantic label maps from PNGs, a malformed mask refused with its
reason while the rest lands; mask mAP and IoU per slice against masks known by construction,
with an alarm for a worse version; masks out to COCO (read back by pycocotools) and in again."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from jobs.detector_readers import Detector
from jobs.ingest_images import ingest_images
from jobs.ingest_predictions import ingest_predictions
from mining.core import masks
from mining.core.lake import Lake
from tests.helpers import jpeg_bytes, jsonl, rows

W, H = 64, 48  # every test image's size
CLASSES = ["background", "plane", "cloud"]


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """A local lake with 6 registered images img-0000..img-0005 (64 x 48 JPEGs)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        (folder / f"img-{i:04d}.jpg").write_bytes(jpeg_bytes(i, (W, H)))
    lake = Lake(str(tmp_path / "lake"))
    ingest_images(lake, str(folder), show_progress=False)
    return lake


def images_of(lake: Lake) -> list[dict]:
    return rows(lake, "SELECT f.uri, i.image_id FROM image_files f JOIN images i USING (image_id) ORDER BY f.uri")


def rect(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    """A (H, W) 0/1 mask of the pixels x1 <= x < x2, y1 <= y < y2."""
    m = np.zeros((H, W), np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def stored_masks(lake: Lake, where: str = "TRUE") -> list[dict]:
    return rows(lake, f"SELECT * FROM masks WHERE {where} ORDER BY mask_id")


def errors_of(lake: Lake) -> list[dict]:
    return rows(lake, "SELECT row, uri, reason FROM errors WHERE job = 'ingest-predictions' ORDER BY source, row")


# -- the codec ----------------------------------------------------------------------------------
def test_rle_round_trips_and_polygons_and_known_ious():
    rng = np.random.default_rng(3)
    for _ in range(50):
        m = (rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))) < rng.random()).astype(np.uint8)
        rle = masks.encode(m)
        assert masks.parse_mask(rle, *m.shape) == rle
        assert (masks.decode(rle) == m).all() and masks.area(rle) == int(m.sum())
        uncompressed = {"size": list(m.shape), "counts": _runs(m)}
        assert masks.parse_mask(uncompressed, *m.shape) == rle
    a, b = masks.encode(rect(0, 0, 20, 10)), masks.encode(rect(10, 0, 30, 10))  # overlap 10 x 10 of 300
    assert masks.iou([a], [b])[0, 0] == pytest.approx(100 / 300)
    assert "size is unknown" in masks.parse_mask(a, None, None)  # nothing is a mask of an image of no known size
    square = masks.parse_mask([[10, 10, 30, 10, 30, 30, 10, 30]], H, W)
    assert masks.bbox(square) == pytest.approx([10, 10, 30, 30], abs=1)
    assert 380 <= masks.area(square) <= 441  # pycocotools rasterises a 20 x 20 square's edges its own way


def _runs(m: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE of a mask (column-major runs, a 0-run first), computed plainly."""
    flat = m.flatten(order="F")
    runs, value, n = [], 0, 0
    for v in flat:
        if v == value:
            n += 1
        else:
            runs.append(n)
            value, n = v, 1
    return runs + [n]


@pytest.mark.parametrize("value, reason", [
    ({"size": [H, W], "counts": "0" * 5}, "do not cover"),
    ({"size": [H, W], "counts": "PPP~~~"}, "compressed text"),
    ({"size": [H, W], "counts": [1, 2, 3]}, "add up to 6"),
    ({"size": [10, 10], "counts": "1"}, "not the image's"),
    ({"size": [H], "counts": "1"}, "size must be"),
    ([[1, 2, 3]], "three points"),
    ("abc", "must be an RLE"),
])
def test_malformed_masks_say_why(value, reason):
    assert reason in masks.parse_mask(value, H, W)


# -- ingest ---------------------------------------------------------------------------------------
def test_jsonl_masks_land_and_a_malformed_one_is_refused_with_its_reason(lake, tmp_path):
    images = images_of(lake)
    good = masks.encode(rect(5, 5, 25, 15))
    other = masks.encode(rect(30, 20, 50, 40))
    lines = [
        {"image_uri": images[0]["uri"], "model_version": "m1", "ts": "2026-11-01T00:00:00Z", "confidence": 0.9,
         "label": "plane", "detections": [{"box": [5, 5, 25, 15], "label": "plane", "score": 0.9, "mask": good},
                                          {"box": [30, 20, 50, 40], "label": "cloud", "score": 0.5, "mask": other}]},
        {"image_uri": images[1]["uri"], "model_version": "m1", "ts": "2026-11-01T00:00:00Z", "confidence": 0.8,
         "label": "plane", "detections": [{"box": [0, 0, 9, 9], "label": "plane", "score": 0.8,
                                           "mask": {"size": [H, W], "counts": "0" * 4}}]},
        {"image_uri": images[2]["uri"], "model_version": "m1", "ts": "2026-11-01T00:00:00Z", "confidence": 0.7,
         "label": "plane", "detections": [{"box": [0, 0, 9, 9], "label": "plane", "score": 0.7}]},
    ]
    path = tmp_path / "preds.jsonl"
    path.write_text(jsonl(lines))
    summary = ingest_predictions(lake, [str(path)], show_progress=False)
    assert summary.extra()["rows"] | {} == {"predictions": 2, "detections": 3, "masks": 2, "errors": 1}
    (error,) = errors_of(lake)
    assert error["row"] == 2 and "detection 0: bad mask" in error["reason"] and "do not cover" in error["reason"]
    stored = stored_masks(lake)
    assert [(m["label"], m["kind"], m["area"]) for m in stored] == [("plane", "instance", 200),
                                                                   ("cloud", "instance", 400)]
    detections = rows(lake, "SELECT detection_id FROM detections ORDER BY detection_id")
    assert {m["detection_id"] for m in stored} <= {d["detection_id"] for d in detections}
    assert (masks.decode({"size": [H, W], "counts": stored[0]["counts"]}) == rect(5, 5, 25, 15)).all()
    again = ingest_predictions(lake, [str(path)], show_progress=False, force=True)
    assert again.extra()["rows"]["errors"] == 1 and len(stored_masks(lake)) == 2  # a rerun keeps one row per mask


def test_coco_results_with_rle_and_polygon_segmentations_land_and_a_bad_one_is_refused(lake, tmp_path):
    stems = [f"img-{i:04d}.jpg" for i in range(3)]
    rle = masks.encode(rect(2, 2, 12, 12))
    results = [
        {"image_id": stems[0], "category_id": 1, "bbox": [2, 2, 10, 10], "score": 0.9, "segmentation": rle},
        {"image_id": stems[1], "category_id": 2, "bbox": [10, 10, 20, 20], "score": 0.8,
         "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
        {"image_id": stems[2], "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.7,
         "segmentation": {"size": [H + 1, W], "counts": rle["counts"]}},
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    categories = tmp_path / "categories.json"
    categories.write_text(json.dumps({"1": "plane", "2": "cloud"}))
    summary = ingest_predictions(lake, [str(path)], fmt="coco-results", show_progress=False,
                                 detector=Detector("m1", categories=str(categories)))
    assert summary.extra()["rows"] | {} == {"predictions": 2, "detections": 2, "masks": 2, "errors": 1}
    (error,) = errors_of(lake)
    assert "not the image's [height, width]" in error["reason"]
    stored = {m["label"]: m for m in stored_masks(lake)}
    assert stored["plane"]["counts"] == rle["counts"] and stored["plane"]["area"] == 100
    polygon = coco_mask.merge(coco_mask.frPyObjects([[10, 10, 30, 10, 30, 30, 10, 30]], H, W))
    assert stored["cloud"]["area"] == int(coco_mask.area(polygon))


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def label_map(seed: int) -> np.ndarray:
    """A (H, W) uint8 label map: background, a plane rectangle and a cloud rectangle, placed by the seed."""
    rng = np.random.default_rng(seed)
    m = np.zeros((H, W), np.uint8)
    x, y = int(rng.integers(0, 30)), int(rng.integers(0, 20))
    m[y:y + 20, x:x + 30] = 1
    m[0:10, 50:64] = 2
    return m


def test_png_label_maps_land_as_one_rle_per_class_and_bad_maps_are_refused(lake, tmp_path):
    folder = tmp_path / "maps"
    folder.mkdir()
    for i in range(3):
        (folder / f"img-{i:04d}.png").write_bytes(png(label_map(i)))
    (folder / "img-0003.png").write_bytes(png(np.full((H, W), 7, np.uint8)))  # beyond the classes
    (folder / "img-0004.png").write_bytes(png(np.zeros((H, W, 3), np.uint8)))  # RGB, not a label map
    (folder / "img-0005.png").write_bytes(png(np.zeros((H // 2, W), np.uint8)))  # not the image's size
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    summary = ingest_predictions(lake, [str(folder)], fmt="png-masks", show_progress=False,
                                 detector=Detector("seg1", classes=str(names)))
    assert summary.extra()["rows"] | {} == {"predictions": 3, "masks": 9, "errors": 3}
    reasons = [e["reason"] for e in errors_of(lake)]
    assert any("beyond the 3 classes" in r for r in reasons)
    assert any("not a label map" in r for r in reasons)
    assert any("must have its image's size" in r for r in reasons)
    ids = {r["uri"].rsplit("/", 1)[1][:8]: r["image_id"] for r in images_of(lake)}
    for i in range(3):
        stored = {m["label"]: m for m in stored_masks(lake, f"image_id = '{ids[f'img-{i:04d}']}'")}
        assert set(stored) == set(CLASSES)
        for k, c in enumerate(CLASSES):
            decoded = masks.decode({"size": [H, W], "counts": stored[c]["counts"]})
            assert (decoded == (label_map(i) == k)).all() and stored[c]["kind"] == "semantic"
    labels = rows(lake, "SELECT DISTINCT label FROM predictions WHERE model_version = 'seg1'")
    assert labels == [{"label": "plane"}]  # the largest class but background


# -- round trip and metrics ---------------------------------------------------------------------
N = 12  # images of the metrics lake: even ones hold a hollow frame (small by its pixels), odd ones a filled block


@pytest.fixture
def twelve(tmp_path: Path) -> Lake:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(N):
        (folder / f"img-{i:04d}.jpg").write_bytes(jpeg_bytes(100 + i, (W, H)))
    lake = Lake(str(tmp_path / "lake"))
    ingest_images(lake, str(folder), show_progress=False)
    return lake


def frame(x: int, y: int) -> np.ndarray:
    """A 40 x 40 square outline 2 pixels wide: its box is medium (1600 px), its pixels small (304)."""
    return rect(x, y, x + 40, y + 40) - rect(x + 2, y + 2, x + 38, y + 38)


def objects(seed: int) -> list[np.ndarray]:
    """Each image's one truth mask, placed by the seed."""
    rng = np.random.default_rng(seed)
    found = []
    for i in range(N):
        x, y = int(rng.integers(0, W - 46)), int(rng.integers(0, H - 40))
        found.append(frame(x, y) if i % 2 == 0 else rect(x, y, x + 40, y + 30))
    return found


def prediction_lines(lake: Lake, version: str, shapes: list[np.ndarray], day: int) -> str:
    images = images_of(lake)
    lines = []
    for i, (image, m) in enumerate(zip(images, shapes)):
        rle = masks.encode(m)
        score = 0.9 if i % 2 else 0.4  # the blocks first: the frames' misses rank below every hit
        lines.append({"image_uri": image["uri"], "model_version": version, "ts": f"2026-11-{day:02d}T00:00:00Z",
                      "confidence": score, "label": "plane",
                      "detections": [{"box": masks.bbox(rle), "label": "plane", "score": score, "mask": rle}]})
    return jsonl(lines)


def ingest_version(lake: Lake, tmp_path: Path, version: str, shapes: list[np.ndarray], day: int) -> None:
    path = tmp_path / f"{version}.jsonl"
    path.write_text(prediction_lines(lake, version, shapes, day))
    assert ingest_predictions(lake, [str(path)], show_progress=False).extra()["rows"]["masks"] == N


def metric(rows_: list[dict], version: str, slice_: str, name: str) -> float | None:
    (value,) = [r["value"] for r in rows_ if (r["model_version"], r["slice"], r["metric"], r["label"])
                == (version, slice_, name, None)]
    return value


def test_masks_round_trip_through_coco_and_mask_metrics_alarm_on_a_worse_version(twelve, tmp_path):
    from pycocotools.coco import COCO

    from mining.core.config import Config, MetricsConfig
    from mining.core.sql import LakeDB
    from mining.evaluation.metrics import check_regressions, compute_metrics
    from mining.evaluation.slices import all_slices, find_slices
    from mining.labelling.export import export_images
    from mining.labelling.labels import import_labels

    lake, truth = twelve, objects(5)
    ingest_version(lake, tmp_path, "pre", truth, 1)  # the pre-annotations the annotators accept as they are
    ids = [r["image_id"] for r in images_of(lake)]
    config = Config(lake=lake.uri)
    with LakeDB(lake) as db:
        summary = export_images(db, ids, fmt="coco", target=str(tmp_path / "out"), config=config, source="test")
    exported = Path(summary.folder) / "annotations.json"
    coco = COCO(str(exported))  # pycocotools' own reader
    for annotation in coco.loadAnns(coco.getAnnIds()):
        image = coco.loadImgs(annotation["image_id"])[0]
        assert (coco.annToMask(annotation) == truth[ids.index(image["edgemine_image_id"])]).all()
        assert annotation["area"] == truth[ids.index(image["edgemine_image_id"])].sum()
    with LakeDB(lake) as db:
        labelled = import_labels(db, str(exported), fmt="coco", config=config, annotator="ana")
    assert labelled.imported == N
    back = rows(lake, "SELECT l.image_id, m.counts FROM labels l JOIN masks m USING (label_id) ORDER BY l.image_id")
    assert len(back) == N
    for r in back:
        assert (masks.decode({"size": [H, W], "counts": r["counts"]}) == truth[ids.index(r["image_id"])]).all()

    shifted = [np.roll(m, 6 if i % 2 == 0 else 2, axis=1) for i, m in enumerate(truth)]
    ingest_version(lake, tmp_path, "v1", truth, 2)
    ingest_version(lake, tmp_path, "v2", shifted, 3)
    ious = [masks.iou([masks.encode(a)], [masks.encode(b)])[0, 0] for a, b in zip(truth, shifted)]
    assert all(v < 0.5 for v in ious[0::2]) and all(0.9 <= v < 0.95 for v in ious[1::2])
    with LakeDB(lake) as db:
        slices = find_slices(all_slices(db), ["all", "size=small", "size=medium"])
        computed = compute_metrics(db, slices, ["v1", "v2"]).to_pylist()
        report = check_regressions(db, slices, "v2", "v1", config=MetricsConfig(min_n=5), record=True)
    assert metric(computed, "v1", "all", "mask_map") == pytest.approx(1.0)
    # v2: the blocks (half the objects) matched at the IoU thresholds 0.50..0.90 (9 of 10), ranked above
    # the frames' misses: precision 1 up to recall 0.5, i.e. 51 of COCO's 101 recall points.
    assert metric(computed, "v2", "all", "mask_map") == pytest.approx(0.9 * 51 / 101)
    assert metric(computed, "v2", "all", "mask_map_medium") == pytest.approx(0.9)
    assert metric(computed, "v2", "all", "mask_map_small") == pytest.approx(0.0)
    # the frames are small by their pixels (304), though their boxes (1600) are not
    assert metric(computed, "v2", "size=small", "mask_map") == pytest.approx(0.0)
    assert metric(computed, "v2", "size=medium", "mask_map") == pytest.approx(0.9)
    (alarm,) = [a for a in report.alarms if a["metric"] == "mask_recall50" and a["slice"] == "all"]
    assert (alarm["value"], alarm["baseline_value"], alarm["n"]) == (0.5, 1.0, N)
    stored = rows(lake, "SELECT metric FROM alarms WHERE model_version = 'v2'")
    assert {"metric": "mask_recall50"} in stored


def shifted_map(seed: int) -> np.ndarray:
    """``label_map(seed)`` with its plane moved 8 pixels right (the cloud stays)."""
    m = label_map(seed)
    plane = np.roll(m == 1, 8, axis=1)
    out = np.where(m == 1, 0, m).astype(np.uint8)
    out[plane & (out == 0)] = 1
    return out


def ingest_maps(lake: Lake, tmp_path: Path, version: str, maps: list[np.ndarray], names: Path) -> None:
    folder = tmp_path / version
    folder.mkdir()
    for i, m in enumerate(maps):
        (folder / f"img-{i:04d}.png").write_bytes(png(m))
    summary = ingest_predictions(lake, [str(folder)], fmt="png-masks", show_progress=False,
                                 detector=Detector(version, classes=str(names)))
    assert summary.extra()["rows"] == {"predictions": len(maps), "masks": len(maps) * len(CLASSES)}


def test_label_maps_round_trip_through_coco_and_iou_per_class_alarms_on_a_worse_version(twelve, tmp_path):
    from mining.core.config import Config, MetricsConfig
    from mining.core.sql import LakeDB
    from mining.evaluation.metrics import check_regressions, compute_metrics
    from mining.evaluation.slices import all_slices, find_slices
    from mining.labelling.export import export_images
    from mining.labelling.labels import import_labels

    lake = twelve
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(CLASSES))
    truth = [label_map(i) for i in range(N)]
    ingest_maps(lake, tmp_path, "seg0", truth, names)
    ids = [r["image_id"] for r in images_of(lake)]
    config = Config(lake=lake.uri)
    with LakeDB(lake) as db:
        summary = export_images(db, ids, fmt="coco", target=str(tmp_path / "out"), config=config, source="test")
        labelled = import_labels(db, str(Path(summary.folder) / "annotations.json"), fmt="coco", config=config,
                                 annotator="ana")
    assert labelled.imported == N * len(CLASSES) and labelled.errors == 0
    back = rows(lake, "SELECT l.image_id, l.label, l.box, m.counts FROM labels l JOIN masks m USING (label_id) "
                      "WHERE m.kind = 'semantic'")
    assert len(back) == N * len(CLASSES) and all(r["box"] is None for r in back)
    for r in back:
        expected = truth[ids.index(r["image_id"])] == CLASSES.index(r["label"])
        assert (masks.decode({"size": [H, W], "counts": r["counts"]}) == expected).all()

    worse = [shifted_map(i) for i in range(N)]
    ingest_maps(lake, tmp_path, "seg1", truth, names)
    ingest_maps(lake, tmp_path, "seg2", worse, names)
    with LakeDB(lake) as db:
        computed = compute_metrics(db, find_slices(all_slices(db), ["all"]), ["seg1", "seg2"]).to_pylist()
        report = check_regressions(db, find_slices(all_slices(db), ["all"]), "seg2", "seg1",
                                   config=MetricsConfig(min_n=5), record=False)
    iou = {r["label"]: r["value"] for r in computed if (r["model_version"], r["metric"]) == ("seg2", "iou")}
    for k, c in enumerate(CLASSES):  # summed over the images, computed here with numpy alone
        inter = sum(int(((t == k) & (p == k)).sum()) for t, p in zip(truth, worse))
        union = sum(int(((t == k) | (p == k)).sum()) for t, p in zip(truth, worse))
        assert iou[c] == pytest.approx(inter / union)
    assert metric(computed, "seg2", "all", "miou") == pytest.approx(np.mean(list(iou.values())))
    assert metric(computed, "seg1", "all", "miou") == pytest.approx(1.0)
    (alarm,) = [a for a in report.alarms if a["metric"] == "miou"]
    assert alarm["baseline_value"] == pytest.approx(1.0) and alarm["value"] < 0.9


def test_the_cli_ingests_label_maps_and_says_what_is_missing(lake, tmp_path):
    from tests.helpers import main_in_process

    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "img-0001.png").write_bytes(png(label_map(1)))
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(CLASSES))
    base = ["ingest", "predictions", str(folder), "--lake", lake.uri, "--quiet", "--format", "png-masks"]
    for extra, message in [
        (["--model-version", "s"], "--format png-masks needs --classes"),
        (["--classes", str(names)], "needs --model-version"),
        (["--model-version", "s", "--classes", str(names), "--categories", str(names)], "--categories is for"),
    ]:
        code, _, err = main_in_process(base + extra)
        assert (code, err.count("\n")) == (2, 1) and message in err, (extra, err)
    code, out, _ = main_in_process(base + ["--model-version", "s", "--classes", str(names), "--json"])
    assert code == 0 and json.loads(out)["rows"] == {"predictions": 1, "masks": 3}
