"""Label Studio's brush RLE (mining.labelling.brush_rle) against Label Studio's own codec:
``label_studio_sdk.converter.brush`` run in the Label Studio virtualenv (`make labelstudio`;
EDGEMINE_LABEL_STUDIO_VENV elsewhere) decodes what we encode and encodes what we decode.
Without that virtualenv these tests are SKIPPED, loudly; the malformed-input tests always run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mining.labelling import brush_rle

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("EDGEMINE_LABEL_STUDIO_VENV", REPO / ".venv-labelstudio"))
PYTHON = VENV / "bin" / "python"

# brush.py alone (numpy, Pillow): the converter package's __init__ would import pandas and nltk too.
SDK = """
import importlib.util, json, pathlib, sys
import numpy as np
root = pathlib.Path(importlib.util.find_spec("label_studio_sdk").submodule_search_locations[0])
spec = importlib.util.spec_from_file_location("brush", root / "converter" / "brush.py")
brush = importlib.util.module_from_spec(spec)
spec.loader.exec_module(brush)
asked = json.load(sys.stdin)
decoded = [np.reshape(brush.decode_rle(r["rle"]), [r["h"], r["w"], 4]).tolist() for r in asked["decode"]]
encoded = [brush.mask2rle(np.asarray(m, dtype=np.uint8) * 255) for m in asked["encode"]]
json.dump({"decoded": decoded, "encoded": [[int(v) for v in e] for e in encoded]}, sys.stdout)
"""


def sdk(decode: list[dict], encode: list[np.ndarray]) -> dict:
    """What Label Studio's own brush codec makes of our RLEs (``decode``) and of masks (``encode``)."""
    if not PYTHON.exists():
        pytest.skip(f"LABEL STUDIO SDK TESTS SKIPPED: {PYTHON} is missing; `make labelstudio` installs it")
    asked = json.dumps({"decode": decode, "encode": [m.tolist() for m in encode]})
    done = subprocess.run([str(PYTHON), "-c", SDK], input=asked, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def masks_to_try() -> list[np.ndarray]:
    """Seeded random masks of edge sizes: 1x1 both ways, odd widths, all zero, all one, a
    run longer than one block holds (65536 values), sparse noise and blobs."""
    rng = np.random.default_rng(27)
    found = [np.zeros((1, 1), np.uint8), np.ones((1, 1), np.uint8), np.zeros((7, 13), np.uint8),
             np.ones((9, 11), np.uint8), np.ones((200, 333), np.uint8)]
    for h, w in [(1, 17), (17, 1), (5, 3), (31, 47), (64, 99), (120, 161)]:
        found.append((rng.random((h, w)) < rng.uniform(0.05, 0.95)).astype(np.uint8))
    blob = np.zeros((150, 257), np.uint8)
    blob[20:130, 40:200] = 1
    blob[60:70, 80:90] = 0
    found.append(blob)
    return found


@pytest.mark.processes  # the SDK runs in the Label Studio environment's interpreter
def test_our_encoding_is_the_sdks_byte_for_byte_and_it_decodes_ours():
    tried = masks_to_try()
    ours = [brush_rle.encode(m) for m in tried]
    theirs = sdk([{"rle": r, "h": m.shape[0], "w": m.shape[1]} for r, m in zip(ours, tried)], tried)
    for mask, rle, decoded, encoded in zip(tried, ours, theirs["decoded"], theirs["encoded"]):
        rgba = np.asarray(decoded, np.uint8)
        assert rgba.shape == (*mask.shape, 4)
        assert np.array_equal(rgba, np.repeat(mask[:, :, None] * 255, 4, axis=2))  # every channel, alpha the mask
        assert rle == encoded, mask.shape


@pytest.mark.processes  # the SDK runs in the Label Studio environment's interpreter
def test_we_decode_what_the_sdk_encodes():
    tried = masks_to_try()
    theirs = sdk([], tried)["encoded"]
    for mask, rle in zip(tried, theirs):
        decoded = brush_rle.decode(rle, *mask.shape)
        assert not isinstance(decoded, str), decoded
        assert decoded.dtype == np.uint8 and np.array_equal(decoded, mask)


@pytest.mark.processes  # the SDK runs in the Label Studio environment's interpreter
def test_literal_blocks_and_other_word_sizes_decode_as_the_sdk_reads_them():
    """The editor's rle-pack also writes literal runs and may choose other sizes: a hand-packed
    stream (word size 8, field sizes 2, 3, 5, 9) with a literal block of mixed alpha values."""
    pixels = np.array([[0, 0, 0, 0, 9, 9, 9, 9], [1, 2, 3, 0, 1, 2, 3, 200]], np.uint8).reshape(-1)
    bits = f"{pixels.size:032b}{7:05b}" + "".join(f"{s - 1:04b}" for s in (2, 3, 5, 9))
    bits += f"1{1:02b}{3:03b}{0:08b}"  # a repeat of 4 zeros
    bits += f"1{0:02b}{3:02b}{9:08b}"  # a repeat of 4 nines (alpha 9: inside)
    bits += f"0{2:02b}{7:05b}" + "".join(f"{v:08b}" for v in pixels[8:])  # 8 literals
    bits += "0" * (-len(bits) % 8)
    rle = list(int(bits, 2).to_bytes(len(bits) // 8, "big"))
    assert np.array_equal(brush_rle.decode(rle, 2, 2), [[0, 1], [0, 1]])
    if PYTHON.exists():
        theirs = np.asarray(sdk([{"rle": rle, "h": 2, "w": 2}], [])["decoded"][0], np.uint8)
        assert np.array_equal(theirs.reshape(-1), pixels)


@pytest.mark.parametrize(
    ("rle", "size", "reason"),
    [
        ("abc", (2, 2), "list of byte values"),
        ([1, 2, 300], (2, 2), "list of byte values"),
        ([0, 0], (2, 2), "shorter than its header"),
        (None, (2, 2), "list of byte values"),
        ("encoded", (3, 2), "holds 16 values, not the 4 x 3 x 2"),
        ("truncated", (2, 2), "ends after"),
    ],
)
def test_malformed_brush_rle_says_why(rle, size, reason):
    whole = brush_rle.encode(np.eye(2, dtype=np.uint8))
    rle = {"encoded": whole, "truncated": whole[:-2]}.get(rle, rle) if isinstance(rle, str) else rle
    found = brush_rle.decode(rle, *size)
    assert isinstance(found, str) and reason in found


def test_a_brush_region_becomes_coco_only_at_the_images_size():
    mask = np.zeros((6, 5), np.uint8)
    mask[1:4, 2:5] = 1
    region = {"format": "rle", "rle": brush_rle.encode(mask), "size": [6, 5]}
    from mining.core import masks

    assert np.array_equal(masks.decode(brush_rle.to_coco(region, 6, 5)), mask)
    assert "is not the image's [height, width] [5, 6]" in brush_rle.to_coco(region, 5, 6)
    assert "size is unknown" in brush_rle.to_coco(region, None, None)


# -- masks out to Label Studio's JSON and back into the lake ---------------------------------------
@pytest.fixture
def mask_lake(tmp_path: Path):
    return build_mask_lake(tmp_path)


def build_mask_lake(tmp_path: Path):
    """12 images (64 x 48): the even ones with a label map (seg0), the odd ones with one instance
    mask each (pre), the newest prediction of every image; returns (lake, ids, {image: truth})."""
    from jobs.ingest_images import ingest_images
    from mining.core.lake import Lake
    from tests.helpers import jpeg_bytes
    from tests.test_masks import CLASSES, H, W, images_of, ingest_version, label_map, objects, png

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        (folder / f"img-{i:04d}.jpg").write_bytes(jpeg_bytes(100 + i, (W, H)))
    lake = Lake(str(tmp_path / "lake"))
    ingest_images(lake, str(folder), show_progress=False)
    shapes = objects(5)
    ingest_version(lake, tmp_path, "pre", shapes, 1)
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(CLASSES))
    maps = tmp_path / "maps"
    maps.mkdir()
    for i in range(0, 12, 2):  # label maps, newer than the instance masks, on the even images
        (maps / f"img-{i:04d}.png").write_bytes(png(label_map(i)))
    from jobs.detector_readers import Detector
    from jobs.ingest_predictions import ingest_predictions

    ingest_predictions(lake, [str(maps)], fmt="png-masks", show_progress=False,
                       detector=Detector("seg0", classes=str(names)))
    ids = [r["image_id"] for r in images_of(lake)]
    truth = {ids[i]: ({c: label_map(i) == k for k, c in enumerate(CLASSES)} if i % 2 == 0 else {"plane": shapes[i]})
             for i in range(12)}
    return lake, ids, truth


def brush_regions(task: dict) -> dict[tuple[str, str], np.ndarray]:
    """A task's brush pre-annotations, decoded: {(control, label): mask}."""
    found = {}
    for r in task["predictions"][0]["result"]:
        if r["type"] == "brushlabels":
            assert r["value"]["format"] == "rle" and len(r["value"]["brushlabels"]) == 1
            mask = brush_rle.decode(r["value"]["rle"], r["original_height"], r["original_width"])
            found[(r["from_name"], r["value"]["brushlabels"][0])] = mask
    return found


def first_brush(task: dict) -> dict:
    return next(r for r in task["annotations"][0]["result"] if r["type"] == "brushlabels")


def check_pre_annotations(tasks: list[dict], ids: list[str], truth: dict) -> None:
    """Instance masks as ``brush`` regions (no rectangle), label maps' classes as ``semantic``."""
    for task in tasks:
        image_id = task["data"]["edgemine_image_id"]
        control = "semantic" if ids.index(image_id) % 2 == 0 else "brush"
        regions = brush_regions(task)
        assert set(regions) == {(control, c) for c in truth[image_id]}
        for (_, label), mask in regions.items():
            assert np.array_equal(mask, truth[image_id][label])
        assert not [r for r in task["predictions"][0]["result"] if r["type"] == "rectanglelabels"]


def check_labelled_masks(lake, ids: list[str], truth: dict) -> None:
    from mining.core import masks
    from tests.helpers import rows

    back = rows(lake, "SELECT l.image_id, l.label, l.box, m.kind, m.height, m.width, m.counts "
                      "FROM labels l JOIN masks m USING (label_id)")
    assert len(back) == sum(len(t) for t in truth.values())
    for r in back:
        semantic = ids.index(r["image_id"]) % 2 == 0
        assert r["kind"] == ("semantic" if semantic else "instance") and (r["box"] is None) == semantic
        mask = masks.decode({"size": [r["height"], r["width"]], "counts": r["counts"]})
        assert np.array_equal(mask, truth[r["image_id"]][r["label"]])
        if not semantic:  # an object's box follows from its mask
            assert r["box"] == pytest.approx(masks.bbox(masks.encode(mask)))


def test_masks_go_out_as_brush_pre_annotations_and_come_back_as_masks_of_labels(mask_lake, tmp_path):
    from mining.core.config import Config
    from mining.core.sql import LakeDB
    from mining.labelling.export import export_images
    from mining.labelling.labels import import_labels
    from tests.helpers import rows

    lake, ids, truth = mask_lake
    config = Config(lake=lake.uri)
    with LakeDB(lake) as db:
        summary = export_images(db, ids, fmt="label-studio", target=str(tmp_path / "out"), config=config,
                                source="test")
    folder = Path(summary.folder)
    tasks = json.loads((folder / "tasks.json").read_text())
    check_pre_annotations(tasks, ids, truth)
    config_xml = (folder / "config.xml").read_text()
    assert '<BrushLabels name="brush" toName="image">' in config_xml and 'name="semantic"' in config_xml
    # Label Studio's export once annotators accepted the pre-annotations; one brush region with a
    # wrong size and one with a truncated RLE are refused with their reasons, the rest land.
    for task in tasks:
        task["annotations"] = [{"result": task.pop("predictions")[0]["result"], "completed_by": 7}]
    # a label is (image, class, box): a class chosen for the image and a class of its label map are one label
    accepted = len({(t["data"]["edgemine_image_id"], (r["value"].get("choices") or r["value"]["brushlabels"])[0],
                     r["from_name"] == "brush") for t in tasks for r in t["annotations"][0]["result"]})
    bad = dict(first_brush(tasks[1]), original_width=65)
    cut = dict(first_brush(tasks[3]))
    cut["value"] = dict(cut["value"], rle=cut["value"]["rle"][:-3])
    tasks.append({"data": tasks[1]["data"], "annotations": [{"result": [bad, cut], "completed_by": 8}]})
    exported = tmp_path / "ls-export.json"
    exported.write_text(json.dumps(tasks))
    with LakeDB(lake) as db:
        first = import_labels(db, str(exported), fmt="label-studio", config=config)
        again = import_labels(db, str(exported), fmt="label-studio", config=config)
    assert (first.imported, first.errors) == (accepted, 2)
    assert (again.imported, again.already) == (0, first.imported)
    reasons = sorted(r["reason"] for r in rows(lake, "SELECT reason FROM errors WHERE job = 'labels-import'"))
    assert "is not the image's [height, width] [48, 64]" in reasons[0] and "brush rle ends after" in reasons[1]
    check_labelled_masks(lake, ids, truth)
