"""A detector's outputs as they come (issue 27): a YOLO folder and a COCO results file, made
for the demo lake's images, ingest into predictions and detections with their boxes in
pixels, a rerun adds nothing, and each kind of bad line or entry is an error row with its
reason while the rest lands; hostile inputs, generated, never crash the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from jobs.cli import main
from jobs.detector_readers import Detector
from jobs.ingest_images import ingest_images
from jobs.ingest_predictions import ingest_predictions
from mining.core.lake import Lake
from tests.helpers import jpeg_bytes, local_only, main_in_process, put, put_images, rows, source_uri

CLASSES = ["car", "person", "bicycle"]


@pytest.fixture(scope="module")
def demo_images(demo_lake: Lake) -> list[dict]:
    """40 of the demo lake's images: their file's stem, id and size."""
    found = rows(demo_lake, "SELECT f.uri, i.image_id, i.width, i.height FROM image_files f "
                            "JOIN images i USING (image_id) WHERE i.width > 0 ORDER BY f.uri LIMIT 40")
    for image in found:
        image["stem"] = posixpath.splitext(posixpath.basename(image["uri"]))[0]
    assert len({i["stem"] for i in found}) == len(found) == 40
    return found


def pixel_boxes(rng: np.random.Generator, width: int, height: int, n: int) -> list[tuple[int, list[float], float]]:
    """``n`` (class, [x1, y1, x2, y2] in pixels, score) inside a width x height image."""
    boxes = []
    for _ in range(n):
        x1, x2 = sorted(rng.uniform(0, width, 2))
        y1, y2 = sorted(rng.uniform(0, height, 2))
        boxes.append((int(rng.integers(len(CLASSES))), [x1, y1, x2 + 1e-3, y2 + 1e-3], round(float(rng.uniform()), 4)))
    return boxes


def yolo_line(cls: int, box: list[float], score: float | None, width: int, height: int) -> str:
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height
    conf = "" if score is None else f" {score:.4f}"
    return f"{cls} {min(cx, 1):.6f} {min(cy, 1):.6f} {min(w, 1):.6f} {min(h, 1):.6f}{conf}\n"


def from_yolo_line(line: str, width: int, height: int) -> list[float]:
    """The pixel box a YOLO line states: the arithmetic the ingest must do, on what was written."""
    _, cx, cy, w, h = (float(v) for v in line.split()[:5])
    return [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]


def detections_of(lake: Lake, model_version: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for d in rows(lake, "SELECT image_id, box, label, score FROM detections WHERE model_version = $1 "
                        "ORDER BY detection_id", [model_version]):
        found.setdefault(d["image_id"], []).append(d)
    return found


def errors_of(lake: Lake, source: str) -> list[dict]:
    return rows(lake, "SELECT row, uri, reason, raw FROM errors WHERE job = 'ingest-predictions' AND source = $1 "
                      "ORDER BY uri, row", [source])


def test_a_yolo_folder_lands_with_its_boxes_in_pixels_and_a_rerun_adds_nothing(demo_lake, demo_images, tmp_path):
    rng = np.random.default_rng(11)
    folder = tmp_path / "runs" / "labels"
    folder.mkdir(parents=True)
    written: dict[str, list[str]] = {}
    for k, image in enumerate(demo_images[:30]):
        lines = [yolo_line(c, b, s if k % 5 else None, image["width"], image["height"])
                 for c, b, s in pixel_boxes(rng, image["width"], image["height"], k % 4)]
        (folder / f"{image['stem']}.txt").write_text("".join(lines))
        written[image["image_id"]] = lines
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")  # LabelImg's layout: skipped as a label file
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("path: .\nnames:\n" + "".join(f"  {k}: {c}\n" for k, c in enumerate(CLASSES)))

    detector = Detector("yolov8n-2026", classes=str(data_yaml))
    summary = ingest_predictions(demo_lake, [str(folder)], fmt="yolo", detector=detector, show_progress=False)

    n_boxes = sum(len(lines) for lines in written.values())
    assert summary.to_dict()["rows"] == {"predictions": 30, "detections": n_boxes}
    assert summary.errors == 0
    sizes = {i["image_id"]: (i["width"], i["height"]) for i in demo_images}
    got = detections_of(demo_lake, "yolov8n-2026")
    for image_id, lines in written.items():
        boxes = got.get(image_id, [])
        assert [d["label"] for d in boxes] == [CLASSES[int(line.split()[0])] for line in lines]
        for d, line in zip(boxes, lines):
            assert d["box"] == pytest.approx(from_yolo_line(line, *sizes[image_id]), abs=1e-3)
            assert d["score"] == (None if len(line.split()) == 5 else pytest.approx(float(line.split()[5]), abs=1e-6))
    predictions = rows(demo_lake, "SELECT image_id, label, confidence, ts, source_row FROM predictions "
                                  "WHERE model_version = 'yolov8n-2026'")
    assert len(predictions) == 30
    for p in predictions:
        lines = written[p["image_id"]]
        scores = [float(line.split()[5]) if len(line.split()) == 6 else 1.0 for line in lines]
        top = int(np.argmax(scores)) if lines else None
        assert p["label"] == (None if top is None else CLASSES[int(lines[top].split()[0])])
        assert p["confidence"] == pytest.approx(1.0 if top is None else scores[top], abs=1e-6)
        stem = next(i["stem"] for i in demo_images if i["image_id"] == p["image_id"])
        assert p["ts"] == datetime.fromtimestamp(os.path.getmtime(folder / f"{stem}.txt"), UTC)  # the default ts

    again = ingest_predictions(demo_lake, [str(folder)], fmt="yolo", detector=detector, show_progress=False)
    assert again.to_dict()["skipped"] == 1
    assert rows(demo_lake, "SELECT count(*) AS n FROM detections WHERE model_version = 'yolov8n-2026'")[0]["n"] \
        == n_boxes
    # Another model version on the same folder is a reading of its own, not an unchanged file.
    numbers = Detector("numbers-v2", ts=datetime(2026, 11, 1, tzinfo=UTC))
    other = ingest_predictions(demo_lake, [str(folder)], fmt="yolo", detector=numbers, show_progress=False)
    assert other.to_dict()["rows"]["predictions"] == 30
    assert {r["label"] for r in rows(demo_lake, "SELECT label FROM detections WHERE model_version = 'numbers-v2'")} \
        <= {"0", "1", "2"}  # without --classes the class numbers are the labels


def test_coco_results_land_with_the_boxes_pycocotools_reads(demo_lake, demo_images, tmp_path):
    rng = np.random.default_rng(12)
    images = demo_images[:25]
    dataset = {"images": [{"id": 100 + k, "file_name": f"val/{posixpath.basename(i['uri'])}", "width": i["width"],
                           "height": i["height"]} for k, i in enumerate(images)],
               "annotations": [], "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]}
    results = [{"image_id": 100 + k, "category_id": c + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s}
               for k, i in enumerate(images) for c, b, s in pixel_boxes(rng, i["width"], i["height"], 1 + k % 3)]
    random.Random(3).shuffle(results)  # a detector need not write an image's boxes together
    (tmp_path / "instances_val.json").write_text(json.dumps(dataset))
    (tmp_path / "results.json").write_text(json.dumps(results))

    detector = Detector("detr-r50", ts=datetime(2026, 11, 20, 8, 30, tzinfo=UTC),
                        categories=str(tmp_path / "instances_val.json"))
    summary = ingest_predictions(demo_lake, [str(tmp_path / "results.json")], fmt="coco-results", detector=detector,
                                 show_progress=False)

    assert summary.to_dict()["rows"] == {"predictions": 25, "detections": len(results)}
    assert summary.errors == 0
    coco = COCO(str(tmp_path / "instances_val.json"))
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = coco.loadRes(str(tmp_path / "results.json"))
    lake_id = {100 + k: i["image_id"] for k, i in enumerate(images)}
    expected: dict[str, list[tuple]] = {}
    for ann in loaded.dataset["annotations"]:  # pycocotools' own corners: the box's polygon x1 y1 x1 y2 x2 y2 x2 y1
        x1, y1, _, y2, x2, *_ = ann["segmentation"][0]
        expected.setdefault(lake_id[ann["image_id"]], []).append(
            (coco.cats[ann["category_id"]]["name"], [x1, y1, x2, y2], ann["score"]))
    got = detections_of(demo_lake, "detr-r50")
    assert got.keys() == expected.keys()
    for image_id, boxes in expected.items():
        found = sorted((d["label"], d["box"], d["score"]) for d in got[image_id])
        for (label, box, score), (glabel, gbox, gscore) in zip(sorted(boxes), found, strict=True):
            assert (glabel, gbox, gscore) == (label, pytest.approx(box, rel=1e-6), pytest.approx(score, abs=1e-6))
    ts = rows(demo_lake, "SELECT DISTINCT ts FROM predictions WHERE model_version = 'detr-r50'")
    assert ts == [{"ts": datetime(2026, 11, 20, 8, 30, tzinfo=UTC)}]

    again = ingest_predictions(demo_lake, [str(tmp_path / "results.json")], fmt="coco-results", detector=detector,
                               show_progress=False)
    assert again.to_dict()["skipped"] == 1
    assert sum(len(v) for v in detections_of(demo_lake, "detr-r50").values()) == len(results)


def test_coco_results_naming_images_by_file_name_with_a_category_map(demo_lake, demo_images, tmp_path):
    a, b, c = demo_images[30], demo_images[31], demo_images[29]
    results = [{"image_id": posixpath.basename(a["uri"]), "category_id": 2, "bbox": [1.5, 2, 10, 20], "score": 0.4},
               {"image_id": b["stem"], "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9},
               {"image_id": c["image_id"], "category_id": 1, "bbox": [3, 3, 4, 4], "score": 0.2}]  # the lake's id
    (tmp_path / "r.json").write_text(json.dumps(results))
    (tmp_path / "map.json").write_text(json.dumps({"1": "car", "2": "person"}))

    summary = ingest_predictions(demo_lake, [str(tmp_path / "r.json")], fmt="coco-results",
                                 detector=Detector("m-names", categories=str(tmp_path / "map.json")),
                                 show_progress=False)

    assert summary.to_dict()["rows"] == {"predictions": 3, "detections": 3}
    got = detections_of(demo_lake, "m-names")
    assert sorted((d["label"], d["box"]) for d in got[a["image_id"]]) == [("person", [1.5, 2, 11.5, 22])]
    assert [(d["label"], d["box"]) for d in got[b["image_id"]]] == [("car", [0, 0, 5, 5])]
    by_id = rows(demo_lake, "SELECT p.image_id, d.box FROM predictions p JOIN detections d USING (prediction_id) "
                            "WHERE p.model_version = 'm-names' AND p.source_row = 3")
    assert by_id == [{"image_id": c["image_id"], "box": [3, 3, 7, 7]}]


BAD_YOLO = {  # line -> what its error says
    "0 0.5 0.5 0.2": "4 fields, expected class cx cy w h [conf]",
    "0 0.5 0.5 0.2 0.2 0.9 7": "7 fields",
    "car 0.5 0.5 0.2 0.2": "class 'car' is not a class number",
    "0 0.5 x 0.2 0.2": "must be numbers",
    "0 nan 0.5 0.2 0.2": "NaN or infinite",
    "0 0.5 0.5 1.5 0.2": "box outside the image",
    "0 0.95 0.5 0.2 0.2": "box outside the image",
    "0 0.5 0.5 0 0.2": "zero or negative size",
    "0 0.5 0.5 0.2 -0.1": "zero or negative size",
    "9 0.5 0.5 0.2 0.2": "unknown class 9: --classes names 0 to 2",
    "-1 0.5 0.5 0.2 0.2": "unknown class -1",
    "0 0.5 0.5 0.2 0.2 1.5": "conf 1.5 outside [0, 1]",
}


def test_each_bad_yolo_line_is_an_error_with_its_reason_and_the_rest_lands(demo_lake, demo_images, tmp_path):
    image, other = demo_images[32], demo_images[33]
    folder = tmp_path / "yolo"
    folder.mkdir()
    good = ["1 0.5 0.5 0.25 0.25 0.8", "2 0.1 0.1 0.2 0.2 0.3"]
    (folder / f"{image['stem']}.txt").write_text("\n".join([good[0], *BAD_YOLO, good[1]]) + "\n")
    (folder / f"{other['stem']}.txt").write_bytes(b"\xff\xfe\x00binary")
    (folder / "not-in-the-lake.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    names = tmp_path / "coco.names"
    names.write_text("\n".join(CLASSES) + "\n")

    summary = ingest_predictions(demo_lake, [str(folder)], fmt="yolo",
                                 detector=Detector("bad-yolo", classes=str(names)), show_progress=False)

    assert summary.to_dict()["rows"] == {"predictions": 1, "detections": 2, "errors": len(BAD_YOLO) + 2}
    errors = errors_of(demo_lake, str(folder))
    file_uri = str(folder / f"{image['stem']}.txt")
    lines = {e["row"]: e for e in errors if e["uri"] == file_uri}
    for number, (line, reason) in enumerate(BAD_YOLO.items(), start=2):
        assert lines[number]["raw"] == line
        assert lines[number]["reason"].startswith(f"{image['stem']}.txt line {number}: ")
        assert reason in lines[number]["reason"]
    assert [e["reason"] for e in errors if e["uri"] == str(folder / f"{other['stem']}.txt")] == \
        ["not UTF-8 text: not a YOLO file"]
    missing = [e for e in errors if e["uri"] == str(folder / "not-in-the-lake.txt")]
    assert [e["reason"].split(":")[0] for e in missing] == ["no image named not-in-the-lake in the lake (by image id, "
                                                           "file name or stem)"]
    boxes = detections_of(demo_lake, "bad-yolo")[image["image_id"]]
    assert [(d["label"], d["box"]) for d in boxes] == [
        ("person", pytest.approx(from_yolo_line(good[0], image["width"], image["height"]), abs=1e-3)),
        ("bicycle", pytest.approx(from_yolo_line(good[1], image["width"], image["height"]), abs=1e-3))]


BAD_COCO = [  # (entry, what its error says)
    ("not an entry", "not an object but str"),
    ({"category_id": 1, "bbox": [1, 1, 2, 2], "score": 0.5}, "missing image_id"),
    ({"image_id": 100, "score": 0.5}, "missing category_id, bbox"),
    ({"image_id": 100, "category_id": 1.5, "bbox": [1, 1, 2, 2]}, "must be numbers or text"),
    ({"image_id": [100], "category_id": 1, "bbox": [1, 1, 2, 2]}, "must be numbers or text"),
    ({"image_id": 100, "category_id": 1, "bbox": [1, 1, 2]}, "bbox must be [x, y, width, height]"),
    ({"image_id": 100, "category_id": 1, "bbox": "1 1 2 2"}, "bbox must be [x, y, width, height]"),
    ({"image_id": 100, "category_id": 1, "bbox": [1, 1, True, 2]}, "bbox must be [x, y, width, height]"),
    ({"image_id": 100, "category_id": 1, "bbox": [1, 1, -2, 2]}, "zero or negative size"),
    ({"image_id": 100, "category_id": 1, "bbox": [1, 1, 2, 0]}, "zero or negative size"),
    ({"image_id": 100, "category_id": 1, "bbox": [1, 1, 2, 2], "score": 1.5}, "score must be a number in [0, 1]"),
    ({"image_id": 100, "category_id": 1, "bbox": [1, 1, 2, 2], "score": "high"}, "score must be a number"),
    ({"image_id": 100, "category_id": 9, "bbox": [1, 1, 2, 2]}, "unknown category_id 9"),
    ({"image_id": 999, "category_id": 1, "bbox": [1, 1, 2, 2]}, "image_id 999 is not among --categories' images"),
]


def test_each_bad_coco_entry_is_an_error_with_its_reason_and_the_rest_lands(demo_lake, demo_images, tmp_path):
    image = demo_images[34]
    dataset = {"images": [{"id": 100, "file_name": posixpath.basename(image["uri"])},
                          {"id": 101, "file_name": "elsewhere.jpg"}],
               "categories": [{"id": 1, "name": "car"}]}
    good = {"image_id": 100, "category_id": 1, "bbox": [4, 5, 6, 7], "score": 0.7}
    unknown_image = {"image_id": 101, "category_id": 1, "bbox": [4, 5, 6, 7], "score": 0.7}
    entries = [good, *(e for e, _ in BAD_COCO), unknown_image]
    (tmp_path / "results.json").write_text(json.dumps(entries))
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))

    summary = ingest_predictions(demo_lake, [str(tmp_path / "results.json")], fmt="coco-results",
                                 detector=Detector("bad-coco", categories=str(tmp_path / "dataset.json")),
                                 show_progress=False)

    assert summary.to_dict()["rows"] == {"predictions": 1, "detections": 1, "errors": len(BAD_COCO) + 1}
    errors = {e["row"]: e for e in errors_of(demo_lake, str(tmp_path / "results.json"))}
    for number, (entry, reason) in enumerate(BAD_COCO, start=2):
        assert errors[number]["reason"].startswith(f"entry {number}: ") and reason in errors[number]["reason"]
        assert json.loads(errors[number]["raw"]) == entry
    assert errors[len(entries)]["reason"].startswith("no image named elsewhere.jpg in the lake")
    assert [(d["label"], d["box"]) for d in detections_of(demo_lake, "bad-coco")[image["image_id"]]] == \
        [("car", [4, 5, 10, 12])]


def test_an_input_that_is_not_the_format_fails_alone_with_one_line(demo_lake, demo_images, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"image_id": demo_images[35]["image_id"], "category_id": 1, "bbox": [1, 1, 2, 2]}]))
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(bytes(range(256)))
    all_bad = tmp_path / "all-bad.json"
    all_bad.write_text(json.dumps([{"image_id": 1}]))

    summary = ingest_predictions(demo_lake, [str(p) for p in (dataset, garbage, all_bad, good)], fmt="coco-results",
                                 detector=Detector("not-the-format"), show_progress=False)

    failed = {posixpath.basename(f.source): f.reason for f in summary.failed}
    assert failed.keys() == {"dataset.json", "garbage.json", "all-bad.json"}
    assert "this is a COCO dataset: give it as --categories" in failed["dataset.json"]
    assert "not JSON" in failed["garbage.json"]
    assert "missing category_id, bbox" in failed["all-bad.json"]
    assert all("\n" not in reason for reason in failed.values())
    assert summary.to_dict()["rows"] == {"predictions": 1, "detections": 1}

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("no labels here")
    yolo = ingest_predictions(demo_lake, [str(empty), str(good)], fmt="yolo", detector=Detector("x"),
                              show_progress=False)
    assert [f.status for f in yolo.files] == ["failed", "failed"]
    assert "no .txt file below the folder" in yolo.files[0].reason
    assert "give the folder" in yolo.files[1].reason


@local_only
def test_names_that_fit_two_images_are_ambiguous_and_one_image_at_two_paths_is_not(lake, tmp_path):
    """The lake's files a.jpg in two folders: other bytes (two images) make ``a`` ambiguous;
    the same bytes (one image, two files) do not."""
    src = source_uri(lake, "src")
    put(lake, f"{src}/one/a.jpg", jpeg_bytes(1))
    put(lake, f"{src}/two/a.jpg", jpeg_bytes(2))
    put(lake, f"{src}/one/b.jpg", jpeg_bytes(3))
    put(lake, f"{src}/two/b.jpg", jpeg_bytes(3))
    ingest_images(lake, src, show_progress=False)
    folder = tmp_path / "labels"
    folder.mkdir()
    for stem in "ab":
        (folder / f"{stem}.txt").write_text("0 0.5 0.5 0.5 0.5 0.9\n")

    summary = ingest_predictions(lake, [str(folder)], fmt="yolo", detector=Detector("m"), show_progress=False)

    assert summary.to_dict()["rows"] == {"predictions": 1, "detections": 1, "errors": 1}
    [error] = errors_of(lake, str(folder))
    assert error["reason"] == ("image name a fits 2 images of the lake (by file name or stem): give each image file "
                               "a name of its own")
    [box] = rows(lake, "SELECT box FROM detections")
    assert box["box"] == [16, 12, 48, 36]  # 64 x 48 pixels: the middle half


def test_yolo_and_coco_results_on_either_storage(lake, tmp_path):
    """The folder's listing, its files' times and its identity come from the lake's storage (S3 too)."""
    src = source_uri(lake, "src")
    uris = put_images(lake, src, 3)
    ingest_images(lake, src, show_progress=False)
    for k, uri in enumerate(uris):
        put(lake, f"{source_uri(lake, 'yolo')}/{posixpath.basename(uri)[:-4]}.txt", f"{k} 0.5 0.5 0.25 0.5 0.5\n")
    results = put(lake, source_uri(lake, "results.json"),
                  json.dumps([{"image_id": "img-0001.jpg", "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5}]))

    first = ingest_predictions(lake, [source_uri(lake, "yolo")], fmt="yolo", detector=Detector("y"),
                               show_progress=False)
    coco = ingest_predictions(lake, [results], fmt="coco-results", detector=Detector("c"), show_progress=False)
    again = ingest_predictions(lake, [source_uri(lake, "yolo")], fmt="yolo", detector=Detector("y"),
                               show_progress=False)

    assert first.to_dict()["rows"] == {"predictions": 3, "detections": 3}
    assert coco.to_dict()["rows"] == {"predictions": 1, "detections": 1}
    assert again.to_dict()["skipped"] == 1
    got = rows(lake, "SELECT model_version, label, box FROM detections ORDER BY model_version, label")
    assert got == [{"model_version": "c", "label": "3", "box": [1, 2, 4, 6]},
                   *({"model_version": "y", "label": str(k), "box": [24, 12, 40, 36]} for k in range(3))]


def test_the_cli_flags_and_their_one_line_errors(demo_lake, demo_images, tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / f"{demo_images[36]['stem']}.txt").write_text("1 0.5 0.5 0.5 0.5 0.6\n")
    (tmp_path / "names.txt").write_text("car\nperson\n")
    base = ["ingest", "predictions", str(folder), "--lake", demo_lake.uri, "--quiet"]

    for extra, message in [
        (["--format", "yolo"], "--format yolo needs --model-version"),
        (["--format", "yolo", "--model-version", "m", "--ts", "yesterday"], "--ts 'yesterday' is not a time"),
        (["--format", "yolo", "--model-version", "m", "--categories", "x.json"], "--categories is for --format coco"),
        (["--format", "jsonl", "--model-version", "m"], "are for --format yolo or coco-results"),
        (["--format", "yolo", "--model-version", "m", "--classes", str(tmp_path / "none.txt")], "no such file"),
    ]:
        code, _, err = main_in_process(base + extra)
        assert (code, err.count("\n")) == (2, 1), (extra, err)
        assert message in err

    code, out, _ = main_in_process(base + ["--format", "yolo", "--model-version", "cli-v1",
                                           "--ts", "2026-11-21T08:30:00Z", "--classes", str(tmp_path / "names.txt"),
                                           "--json"])
    assert code == 0
    assert json.loads(out)["rows"] == {"predictions": 1, "detections": 1}
    assert rows(demo_lake, "SELECT label, confidence, ts FROM predictions WHERE model_version = 'cli-v1'") == [
        {"label": "person", "confidence": pytest.approx(0.6), "ts": datetime(2026, 11, 21, 8, 30, tzinfo=UTC)}]


# -- fuzz ------------------------------------------------------------------------------
CASES = 20
TOKENS = ["0", "1", "7", "-1", "0.5", "1e999", "nan", "-0.0", "0.000001", "1.0000001", "x", "", "\u00e9", "2**70",
          "99999999999999999999999", "0x10", "1_0", "\t", "0.5,0.5"]


def hostile_yolo_line(r: random.Random) -> str:
    if r.random() < 0.15:
        return "0 0.5 0.5 0.2 0.2 0.9"
    if r.random() < 0.3:
        return " ".join(["0", *(f"{r.uniform(-0.2, 1.2):.6f}" for _ in range(4)), f"{r.uniform(-0.5, 1.5):.3f}"])
    return " ".join(r.choice(TOKENS) for _ in range(r.randint(0, 8)))


def hostile_value(r: random.Random):
    return r.choice([None, True, 0, -1, 2**70, 1.5, float("nan"), float("inf"), 1e308, "", "x", "img-0000.jpg",
                     "img-0000", [], [1, 2, 3, 4], [1, 2, -3, 4], [0, 0, 1e308, 1e308], {"a": 1}, "\u0000"])


def hostile_coco(r: random.Random) -> bytes:
    entries = []
    for _ in range(r.randint(0, 6)):
        entry = {"image_id": "img-0000.jpg", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}
        for _ in range(r.randint(0, 3)):
            key = r.choice(["image_id", "category_id", "bbox", "score", "segmentation", "", "__row"])
            if r.random() < 0.2:
                entry.pop(key, None)
            else:
                entry[key] = hostile_value(r)
        entries.append(entry if r.random() < 0.9 else hostile_value(r))
    text = json.dumps(entries if r.random() < 0.9 else {"annotations": entries}, allow_nan=True).encode()
    return text if r.random() < 0.9 else text[: r.randint(0, len(text))]


def test_hostile_yolo_lines_and_coco_entries_never_crash_and_every_table_still_reads(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    put_images(lake, str(tmp_path / "src"), 3)
    assert main(["ingest", "images", str(tmp_path / "src"), "--lake", lake.uri, "--quiet"]) == 0
    r = random.Random("fuzz-detectors")
    crashes, outcomes = [], {}
    for case in range(CASES):
        folder = tmp_path / f"yolo-{case}"
        folder.mkdir()
        for stem in r.sample(["img-0000", "img-0001", "img-0002", "other"], r.randint(1, 4)):
            lines = "\n".join(hostile_yolo_line(r) for _ in range(r.randint(0, 4)))
            data = lines.encode() if r.random() < 0.9 else bytes(r.randrange(256) for _ in range(50))
            (folder / f"{stem}.txt").write_bytes(data)
        results = tmp_path / f"results-{case}.json"
        results.write_bytes(hostile_coco(r))
        for argv in (["--format", "yolo", str(folder)], ["--format", "coco-results", str(results)]):
            code, _, err = main_in_process(["ingest", "predictions", *argv, "--model-version", "fuzz",
                                            "--lake", lake.uri, "--quiet"])
            outcomes[code] = outcomes.get(code, 0) + 1
            if code not in (0, 2) or "internal error" in err or "Traceback" in err:
                crashes.append((case, argv[1], code, err.strip().splitlines()[-1:]))
    unreadable = [t for t in ("predictions", "detections", "errors")
                  if main_in_process(["sql", f"SELECT count(*) FROM {t}", "--lake", lake.uri])[0] != 0]
    print(f"\ndetectors: {2 * CASES} cases, outcomes {dict(sorted(outcomes.items(), key=str))}, "
          f"{len(crashes)} crashes, {len(unreadable)} unreadable tables")
    assert not crashes
    assert not unreadable
    landed = rows(lake, "SELECT box FROM detections")
    assert landed and all(b["box"][2] > b["box"][0] and b["box"][3] > b["box"][1] for b in landed)
    assert all(0 <= v <= 64 for b in rows(lake, "SELECT box FROM detections d JOIN predictions p "
                                                "USING (prediction_id) WHERE p.source LIKE '%yolo-%'")
               for v in b["box"])


def test_every_flag_of_ingest_predictions_is_in_the_ingest_doc():
    code, out, _ = main_in_process(["ingest", "predictions", "--help"])
    everywhere = {"--help", "--config", "--lake", "--json", "--quiet", "--verbose"}  # every command has them
    flags = set(re.findall(r"(--[a-z][a-z-]+)", out)) - everywhere
    assert code == 0 and {"--format", "--model-version", "--ts", "--classes", "--categories"} <= flags
    text = (Path(__file__).resolve().parents[1] / "docs" / "INGEST.md").read_text()
    assert sorted(f for f in flags if f not in text) == []
    assert "--format yolo" in text and "--format coco-results" in text
