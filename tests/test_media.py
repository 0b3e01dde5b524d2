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
