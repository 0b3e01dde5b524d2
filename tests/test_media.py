"""Pictures for people (mining.core.media) and the lake's statistics (mining.core.statistics)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from mining.core.media import draw_boxes, image_facts, mosaic
from mining.core.sql import LakeDB
from mining.core.statistics import confidence_histogram
from tests.helpers import rows


def test_boxes_are_drawn_where_the_detections_are():
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(buffer, "PNG")
    drawn = np.asarray(draw_boxes(buffer.getvalue(), [{"box": [50, 40, 150, 90], "label": "car", "score": 0.9}]))
    assert tuple(drawn[65, 50]) == (255, 59, 48)  # the left edge, in the first colour
    assert tuple(drawn[65, 100]) == (255, 255, 255)  # inside the box: untouched
    assert tuple(drawn[20, 180]) == (255, 255, 255)  # outside: untouched


def test_mosaic_places_each_thumbnail_in_its_tile():
    tiles = []
    for colour in ("red", "green", "blue"):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), colour).save(buffer, "JPEG")
        tiles.append(buffer.getvalue())
    sheet = mosaic(tiles, columns=2, tile=50)
    assert sheet.size == (100, 100) and sheet.getpixel((75, 25))[1] > 100 and sheet.getpixel((25, 75))[2] > 100


def test_image_facts_give_the_latest_prediction_and_the_configured_columns(demo_lake):
    ids = [r["image_id"] for r in rows(demo_lake, "SELECT image_id FROM images ORDER BY image_id DESC LIMIT 4")]
    ids.append("f" * 20)  # not in the lake: a row of NULLs, in its place
    with LakeDB(demo_lake) as db:
        facts = image_facts(db, ids, ["camera", "customer_flag", "not_a_column"]).to_pylist()
    latest = {
        r["image_id"]: r
        for r in rows(
            demo_lake,
            "SELECT image_id, arg_max(label, ts) AS label, arg_max(camera, ts) AS camera, "
            "arg_max(customer_flag, ts) AS flag "
            "FROM predictions GROUP BY image_id",
        )
    }
    assert [f["image_id"] for f in facts] == ids
    for f in facts[:4]:
        truth = latest[f["image_id"]]
        assert (f["label"], f["camera"], f["customer_flag"], f["not_a_column"]) == (
            truth["label"],
            truth["camera"],
            truth["flag"],
            None,
        )
    assert (facts[4]["label"], facts[4]["camera"]) == (None, None)


def test_confidence_histogram_bins_are_clean_and_complete(demo_lake):
    with LakeDB(demo_lake) as db:
        bins = confidence_histogram(db, bins=20).to_pylist()
        total = db.query("SELECT count(*) n FROM predictions").column("n")[0].as_py()
    assert sum(b["predictions"] for b in bins) == total
    assert all(round(b["low"] * 20) == b["low"] * 20 and 0 <= b["low"] < 1 for b in bins)  # edges, not float noise


def blended(original: np.ndarray, colour: str) -> np.ndarray:
    """``original`` pixels with ``colour`` blended in at the masks' opacity, as Pillow blends."""
    from PIL import ImageColor

    from mining.core.media import MASK_OPACITY

    alpha = round(255 * MASK_OPACITY)
    return (original.astype(np.int32) * (255 - alpha) + np.array(ImageColor.getrgb(colour)) * alpha) / 255


def test_masks_of_the_newest_prediction_are_filled_in_their_boxes_colour_and_nothing_else_changes(tmp_path):
    from mining.core.config import S3Config
    from mining.core.media import BOX_COLOURS, image_details, read_image
    from tests.test_brush import build_mask_lake

    lake, ids, truth = build_mask_lake(tmp_path)
    with LakeDB(lake) as db:
        objects, label_map = image_details(db, ids[1]), image_details(db, ids[0])
    (box,) = objects.boxes  # an object with its mask
    assert box["label"] == "plane" and not objects.masks
    data = read_image(objects.uri, S3Config())
    original = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    outlined = np.asarray(draw_boxes(data, [{k: v for k, v in box.items() if k != "mask"}]))
    filled = np.asarray(draw_boxes(data, objects.boxes))
    untouched_by_outline = (outlined == original).all(axis=2)
    mask = truth[ids[1]]["plane"].astype(bool)
    changed = (filled != outlined).any(axis=2)
    assert np.array_equal(changed, mask & untouched_by_outline)  # the mask's pixels change, no other
    inside = mask & untouched_by_outline
    assert inside.sum() > 100
    assert np.abs(filled[inside] - blended(original, BOX_COLOURS[0])[inside]).max() <= 1  # in the box's colour

    assert not label_map.boxes and [m["label"] for m in label_map.masks] == ["background", "cloud", "plane"]
    data = read_image(label_map.uri, S3Config())
    original = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    drawn = np.asarray(draw_boxes(data, [], label_map.masks))
    for k, m in enumerate(label_map.masks):  # every class of the map in a colour of its own
        where = truth[ids[0]][m["label"]].astype(bool)
        assert where.any() and np.abs(drawn[where] - blended(original, BOX_COLOURS[k])[where]).max() <= 1
    assert draw_boxes(data, [], [dict(label_map.masks[0], mask={"size": [5, 5], "counts": "0"})]).tobytes() == \
        Image.open(io.BytesIO(data)).convert("RGB").tobytes()  # a mask of another size is left out
