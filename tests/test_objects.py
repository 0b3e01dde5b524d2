"""Objects as rows (issue 27): `edgemine embed --objects` crops every detection box of the
newest prediction per image and embeds it into object_embeddings; the object index beside the
image index; `similar` over objects from a detection id."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mining
from embed.backbones import Preprocessing
from embed.crops import CropOptions, crop_pixels, crop_region
from embed.preprocess import ImageError
from jobs.embed_images import Shard, embed_lake
from jobs.embed_objects import JOB, embed_objects
from jobs.ingest_images import ingest_images
from jobs.ingest_predictions import ingest_predictions
from mining.core import tables
from mining.core.config import Config, EmbedConfig, IndexConfig, MiningConfig, ObjectsConfig
from mining.core.errors import ConfigError, SearchError
from mining.core.lake import Lake
from mining.core.schema import DETECTIONS, OBJECT_EMBEDDINGS, make_rows
from mining.core.sql import LakeDB
from mining.search import sessions
from mining.search.index_sync import index_lake
from tests.helpers import jsonl, local_only, main_in_process, put, rows, source_uri

pytestmark = pytest.mark.model
REPO = Path(__file__).resolve().parents[1]

CONFIG = EmbedConfig(weights="random", seed=0, batch_size=8, part_size=12, workers=1)
OBJECTS = ObjectsConfig(padding=0.0, max_per_image=3)
SIZE = (160, 120)
# Three kinds of object, each a square of its own pattern, drawn at random places and sizes.
KINDS = ("red", "blue", "yellow")


def pattern(kind: str, side: int) -> np.ndarray:
    """uint8 (side, side, 3): the object's look, the same at every size (drawn at 64 px, resized)."""
    tile = np.zeros((64, 64, 3), np.uint8)
    if kind == "red":
        tile[:] = (220, 30, 30)
        tile[28:36, :] = tile[:, 28:36] = (255, 255, 255)  # a white cross
    elif kind == "blue":
        tile[:] = (30, 40, 220)
        tile[(np.indices((64, 64)).sum(0) // 16) % 2 == 0] = (0, 0, 0)  # a checkerboard
    elif kind == "yellow":
        tile[:] = (240, 220, 20)
        tile[16:48, 16:48] = (40, 160, 40)  # a green centre
    else:  # green: a kind of object only one test's lake has
        tile[:] = (20, 200, 90)
        tile[:, ::8] = (250, 0, 250)  # magenta stripes
    return np.asarray(Image.fromarray(tile).resize((side, side), Image.NEAREST))


def scene(seed: int, kinds: tuple[str, ...] = KINDS) -> tuple[bytes, list[dict]]:
    """A noisy grey PNG with one object of each kind, and their detections (box, label, score)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 140, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    detections, taken = [], np.zeros(SIZE[::-1], bool)
    for k, kind in enumerate(kinds):
        while True:
            side = int(rng.integers(14, 40))
            x, y = int(rng.integers(0, SIZE[0] - side)), int(rng.integers(0, SIZE[1] - side))
            if not taken[y : y + side, x : x + side].any():
                break
        taken[y : y + side, x : x + side] = True
        pixels[y : y + side, x : x + side] = pattern(kind, side)
        detections.append({"box": [x, y, x + side, y + side], "label": kind, "score": round(0.9 - 0.2 * k, 2)})
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), detections


def objects_lake(lake: Lake, n: int = 8) -> dict[str, list[dict]]:
    """``n`` scenes ingested, with a prediction each (and an older one, whose boxes must not be
    embedded); returns the detections of the newest prediction per image uri."""
    folder = source_uri(lake, "scenes")
    predictions, newest = [], {}
    for i in range(n):
        data, detections = scene(i)
        uri = put(lake, f"{folder}/scene-{i:03d}.png", data)
        old = {"image_uri": uri, "model_version": "v1", "ts": "2026-10-01T00:00:00Z", "label": "x",
               "confidence": 0.5, "detections": [{"box": [0, 0, 5, 5], "label": "old", "score": 0.99}]}
        new = old | {"model_version": "v2", "ts": "2026-10-02T00:00:00Z", "detections": detections}
        predictions += [old, new]
        newest[uri] = detections
    ingest_images(lake, folder, show_progress=False)
    ingest_predictions(lake, [put(lake, source_uri(lake, "in/preds.jsonl"), jsonl(predictions))],
                       show_progress=False)
    return newest


def object_vectors(lake: Lake) -> tuple[list[dict], np.ndarray]:
    found = rows(lake, "SELECT o.detection_id, o.image_id, o.box, o.embedding, d.label FROM object_embeddings o "
                       "JOIN detections d USING (detection_id) ORDER BY detection_id")
    return found, np.array([r["embedding"] for r in found], np.float32)


# -- cutting boxes -----------------------------------------------------------------------------

def test_a_crop_of_a_solid_colour_box_is_that_colour_at_the_backbones_input_size():
    rgb = torch.full((3, 120, 160), 100, dtype=torch.uint8)
    rgb[:, 40:50, 30:40] = torch.tensor([200, 10, 50], dtype=torch.uint8).view(3, 1, 1)  # a 10 px square
    preprocessing = Preprocessing()
    region = crop_region([30, 40, 40, 50], 160, 120, CropOptions(padding=0.0))
    [crop] = crop_pixels(rgb, [region], preprocessing)
    assert crop.shape == (3, 224, 224)  # upsampled from 10 px to the input size
    assert (crop.float() - torch.tensor([200.0, 10, 50]).view(3, 1, 1)).abs().max() <= 1

    padded = crop_region([30, 40, 40, 50], 160, 120, CropOptions(padding=0.5))
    assert (padded.left, padded.top, padded.width, padded.height) == (25, 35, 20, 20)  # 5 px of context a side
    [context] = crop_pixels(rgb, [padded], preprocessing)
    assert tuple(context[:, 112, 112].tolist()) == (200, 10, 50)  # the object in the middle
    assert tuple(context[:, 0, 0].tolist()) == (100, 100, 100)  # the background at the border


def test_a_wide_box_becomes_a_square_around_it_shifted_inside_the_image():
    region = crop_region([0, 50, 40, 60], 160, 120, CropOptions(padding=0.0))
    assert (region.left, region.width, region.height) == (0, 40, 40)  # square, shifted right of x = 0
    assert region.top == 35  # centred on the box vertically
    clipped = crop_region([150, 100, 190, 140], 160, 120, CropOptions(padding=0.0))
    assert clipped.box == (150, 100, 160, 120)  # clipped to the image
    assert clipped.left + clipped.width <= 160 and clipped.top + clipped.height <= 120


@pytest.mark.parametrize("box, reason", [
    ([float("nan"), 1, 5, 5], "not a finite number"),
    ([10, 10, 10, 20], "zero or negative area"),
    ([30, 10, 20, 20], "zero or negative area"),
    ([200, 10, 220, 20], "outside the 160x120 image"),
    ([-20, -20, -5, -5], "outside the 160x120 image"),
    ([159.5, 10, 170, 20], "min_side"),
    ([1, 2, 3], "is not [x1, y1, x2, y2]"),
    (None, "is not [x1, y1, x2, y2]"),
])
def test_a_box_that_is_no_box_says_why(box, reason):
    with pytest.raises(ImageError, match=None) as error:
        crop_region(box, 160, 120, CropOptions())
    assert reason in error.value.reason and error.value.reason.startswith("bad box")


def test_crop_settings_are_checked():
    for bad in (-0.1, math.nan, 9.0):
        with pytest.raises(ConfigError, match="padding"):
            CropOptions(padding=bad)
    with pytest.raises(ConfigError, match="min_side"):
        CropOptions(min_side=0)


# -- the job ---------------------------------------------------------------------------------

@local_only
def test_every_box_of_the_newest_prediction_is_embedded_once_and_a_rerun_is_a_no_op(lake):
    newest = objects_lake(lake)
    summary = embed_objects(lake, CONFIG, OBJECTS, show_progress=False)
    assert (summary.detections, summary.to_embed, summary.embedded, summary.errors) == (24, 24, 24, 0)
    assert summary.parts == 2 and summary.weights == "random-seed0"

    found, vectors = object_vectors(lake)
    assert len(found) == 24 and "old" not in {r["label"] for r in found}  # the older prediction's boxes are not
    ids = {r["uri"]: r["image_id"] for r in rows(lake, "SELECT uri, image_id FROM images")}
    expected = {(ids[uri], tuple(map(float, d["box"]))) for uri, ds in newest.items() for d in ds}
    assert {(r["image_id"], tuple(r["box"])) for r in found} == expected
    assert vectors.shape == (24, 512) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # A crop looks like the crops of its own kind of object more than any other's.
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1)
    labels = np.array([r["label"] for r in found])
    assert (labels[similarity.argmax(1)] == labels).all()

    again = embed_objects(lake, CONFIG, OBJECTS, show_progress=False)
    assert (again.already_embedded, again.to_embed, again.embedded, again.parts) == (24, 0, 0, 0)
    assert rows(lake, "SELECT count(*) n FROM object_embeddings") == [{"n": 24}]


@local_only
def test_bad_boxes_go_to_errors_with_their_reason_and_the_rest_lands(lake):
    objects_lake(lake, n=3)
    [image] = rows(lake, "SELECT image_id, p.prediction_id FROM images JOIN predictions p USING (image_id) "
                         "WHERE model_version = 'v2' ORDER BY image_id LIMIT 1")
    # Boxes that passed no ingest check (another writer's rows): NaN, zero area, outside the image.
    bad = {"nan": [float("nan"), 1, 9, 9], "flat": [10, 10, 10, 30], "outside": [500, 500, 520, 520]}
    rows_ = make_rows(DETECTIONS, 3, detection_id=[f"{image['prediction_id']}-{k}" for k in bad],
                      prediction_id=image["prediction_id"], image_id=image["image_id"], box=list(bad.values()),
                      label="bad", score=[0.1, 0.1, 0.1], date=date(2026, 10, 2), ts=datetime.now(UTC))
    tables.append(lake, DETECTIONS, rows_, tables.commit_info("test"))

    summary = embed_objects(lake, CONFIG, replace(OBJECTS, max_per_image=10), show_progress=False)
    assert (summary.to_embed, summary.embedded, summary.errors) == (12, 9, 3)
    errors = rows(lake, "SELECT reason, raw, source FROM errors WHERE job = $job", {"job": JOB})
    reasons = {json.loads(e["raw"])["detection_id"].rsplit("-", 1)[1]: e["reason"] for e in errors}
    assert "not a finite number" in reasons["nan"] and "zero or negative area" in reasons["flat"]
    assert "outside" in reasons["outside"]
    assert [json.loads(e["raw"])["box"] for e in errors if "finite" in e["reason"]] == [["nan", 1.0, 9.0, 9.0]]
    assert {e["source"] for e in errors} == {"resnet18/random-seed0"}
    again = embed_objects(lake, CONFIG, replace(OBJECTS, max_per_image=10), show_progress=False)
    assert (again.failed_before, again.to_embed) == (3, 0)  # not retried unless asked


@local_only
def test_the_bound_per_image_keeps_the_highest_scores(lake):
    objects_lake(lake, n=4)
    summary = embed_objects(lake, CONFIG, replace(OBJECTS, max_per_image=2), show_progress=False)
    assert (summary.detections, summary.over_bound, summary.embedded) == (12, 4, 8)
    labels = rows(lake, "SELECT d.label, count(*) n FROM object_embeddings JOIN detections d USING (detection_id) "
                        "GROUP BY ALL ORDER BY 1")
    assert labels == [{"label": "blue", "n": 4}, {"label": "red", "n": 4}]  # yellow scores lowest
    with pytest.raises(ConfigError, match="max_per_image"):
        embed_objects(lake, CONFIG, replace(OBJECTS, max_per_image=0), show_progress=False)


# The commit order is the image embed's, whose kill tests run on S3 too (tests/test_embed_job.py).
@local_only
def test_a_part_killed_before_its_commit_is_redone_and_nothing_doubles(lake, monkeypatch):
    objects_lake(lake, n=8)
    real_append, calls = tables.append, []

    def append_then_die(lake_, table, rows_, info):
        calls.append(table.name)
        if table is OBJECT_EMBEDDINGS and calls.count(table.name) == 2:
            raise KeyboardInterrupt("killed before the second part's commit")
        return real_append(lake_, table, rows_, info)

    monkeypatch.setattr(tables, "append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        embed_objects(lake, CONFIG, OBJECTS, show_progress=False)
    monkeypatch.undo()
    assert rows(lake, "SELECT count(*) n FROM object_embeddings") == [{"n": 12}]
    rerun = embed_objects(lake, CONFIG, OBJECTS, show_progress=False)
    assert (rerun.already_embedded, rerun.to_embed, rerun.embedded) == (12, 12, 12)
    assert rows(lake, "SELECT count(*) n, count(DISTINCT detection_id) ids FROM object_embeddings") == [
        {"n": 24, "ids": 24}]


@local_only
def test_shards_split_the_boxes_by_image(lake):
    objects_lake(lake, n=6)
    done = [embed_objects(lake, CONFIG, OBJECTS, shard=Shard(i, 2), show_progress=False).embedded for i in range(2)]
    assert sum(done) == 18 and all(done) and all(d % 3 == 0 for d in done)  # an image's boxes stay together
    assert rows(lake, "SELECT count(DISTINCT detection_id) n FROM object_embeddings") == [{"n": 18}]


# -- the object index and search ---------------------------------------------------------------

@local_only
def test_similar_from_a_detection_finds_the_same_kind_of_object_first(lake):
    objects_lake(lake, n=8)
    embed_objects(lake, CONFIG, OBJECTS, show_progress=False)
    config = Config(lake=lake.uri)
    with LakeDB(lake) as db:
        index, summary = index_lake(db, IndexConfig(), objects=True)
        assert (summary.action, summary.vectors, index.objects) == ("built", 24, True)
        assert index_lake(db, IndexConfig(), objects=True)[1].action == "up to date"
        [seed] = db.query("SELECT detection_id FROM detections WHERE label = 'red' ORDER BY detection_id "
                          "LIMIT 1").column("detection_id").to_pylist()
        hits = mining.find_similar(db, [seed], k=7, config=config)  # a detection id: over objects
        labels = {r["detection_id"]: r["label"] for r in db.query(
            "SELECT detection_id, label FROM detections").to_pylist()}
        boxes = {r["detection_id"]: (r["image_id"], r["box"]) for r in db.query(
            "SELECT detection_id, image_id, box FROM detections").to_pylist()}
    assert [labels[h.detection_id] for h in hits] == ["red"] * 7  # the other seven red squares, first
    assert seed not in [h.detection_id for h in hits]
    assert all((h.image_id, h.box) == boxes[h.detection_id] for h in hits)
    assert lake.fs.exists(lake.index_dir("resnet18", "random-seed0", objects=True) + "/current.json")


@local_only
def test_the_cli_searches_objects_and_keeps_the_image_shape_for_image_ids(lake):
    objects_lake(lake, n=6)
    embed_objects(lake, CONFIG, OBJECTS, show_progress=False)
    [seed] = rows(lake, "SELECT detection_id FROM detections WHERE label = 'blue' LIMIT 1")
    code, out, _ = main_in_process(["similar", seed["detection_id"], "-k", "3", "--json", "--lake", lake.uri])
    hits = json.loads(out)
    assert code == 0 and [list(h) for h in hits] == [["rank", "detection_id", "image_id", "box", "score"]] * 3
    blue = {r["detection_id"] for r in rows(lake, "SELECT detection_id FROM detections WHERE label = 'blue'")}
    assert {h["detection_id"] for h in hits} <= blue

    code, _, err = main_in_process(["similar", "no-such-box", "--objects", "--lake", lake.uri])
    assert code == 2 and "detection id(s) not in the object index: no-such-box" in err

    # Image ids still search the images' index, in the shape they always had.
    embed_lake(lake, CONFIG, show_progress=False)
    [image] = rows(lake, "SELECT image_id FROM images LIMIT 1")
    code, out, _ = main_in_process(["similar", image["image_id"], "-k", "2", "--json", "--lake", lake.uri])
    assert code == 0 and [list(h) for h in json.loads(out)] == [["rank", "image_id", "score"]] * 2


@local_only
def test_an_object_search_before_any_object_embedding_says_what_to_run(lake):
    objects_lake(lake, n=2)
    with LakeDB(lake) as db, pytest.raises(SearchError, match="embed --objects"):
        index_lake(db, IndexConfig(), objects=True)


# -- queues on objects ------------------------------------------------------------------------

@local_only
def test_object_novelty_puts_the_image_with_a_new_kind_of_object_first(lake):
    objects_lake(lake, n=6)
    # One more scene, whose third object is of a kind no other image has.
    data, detections = scene(99, ("red", "blue", "green"))
    folder = source_uri(lake, "novel")
    uri = put(lake, f"{folder}/novel.png", data)
    ingest_images(lake, folder, show_progress=False)
    ingest_predictions(lake, [put(lake, source_uri(lake, "in/novel.jsonl"), jsonl([
        {"image_uri": uri, "model_version": "v2", "ts": "2026-10-02T00:00:00Z", "label": "x", "confidence": 0.5,
         "detections": detections}]))], show_progress=False)
    embed_objects(lake, CONFIG, OBJECTS, show_progress=False)
    config = Config(lake=lake.uri)
    with LakeDB(lake, config=config) as db:
        with pytest.raises(Exception, match="nothing is yet: review some images first"):
            mining.make_queue(db, "object-novelty", "new-objects", config=config)
        seen = db.query("SELECT image_id FROM images WHERE uri LIKE '%scene-00%' ORDER BY uri LIMIT 4")
        mining.decide(db, "seen", seen.column("image_id").to_pylist(), "accept", reviewer="ana")
        made = mining.make_queue(db, "object-novelty", "new-objects", limit=3, config=config)
        picked = db.query("SELECT image_id, prediction_id, score, reason FROM queues WHERE queue = 'new-objects' "
                          "ORDER BY rank").to_pylist()
        [novel] = db.query("SELECT image_id FROM images WHERE uri = $uri", {"uri": uri}).to_pylist()
        found, vectors = object_vectors(lake)
    assert made.images == 3 and picked[0]["image_id"] == novel["image_id"] and "(green" in picked[0]["reason"]
    # Each score: its image's farthest box from the nearest box of the four reviewed images.
    images = np.array([r["image_id"] for r in found])
    reference = vectors[np.isin(images, seen.column("image_id").to_pylist())]
    distance = 1 - (vectors @ reference.T).max(1)
    for row in picked:
        assert row["score"] == pytest.approx(distance[images == row["image_id"]].max(), abs=1e-5)
    assert not set(r["image_id"] for r in picked) & set(seen.column("image_id").to_pylist())


# -- narrowing objects --------------------------------------------------------------------------

def exact_nearest(found: list[dict], vectors: np.ndarray, seed: str, k: int) -> list[str]:
    """Brute force: the ``k`` boxes (the seed among them) most cosine-similar to the seed box."""
    ids = [r["detection_id"] for r in found]
    similarity = vectors @ vectors[ids.index(seed)]
    return [ids[i] for i in np.argsort(-similarity, kind="stable")[:k]]


@local_only
def test_narrowing_from_a_detection_pools_the_exact_nearest_boxes_and_saves_their_images(lake):
    objects_lake(lake, n=8)
    embed_objects(lake, CONFIG, OBJECTS, show_progress=False)
    config = Config(lake=lake.uri, mining=MiningConfig(user="tester"))
    found, vectors = object_vectors(lake)
    box = {r["detection_id"]: r for r in found}
    seed = next(r["detection_id"] for r in found if r["label"] == "red")
    with LakeDB(lake) as db:
        step = mining.start_narrowing(db, [seed], pool=10, clusters=2, name="boxes", config=config)
        members = sessions.members_of(db, "boxes", 0).to_pylist()
        assert step.objects and step.pool_size == 10 and sum(c.size for c in step.clusters) == 10
        assert {m["detection_id"] for m in members} == set(exact_nearest(found, vectors, seed, 10))
        assert all(m["image_id"] == box[m["detection_id"]]["image_id"] for m in members)
        for c in step.clusters:  # each cluster's label mix and mean score are its boxes' own
            own = [box[m["detection_id"]] for m in members if m["cluster"] == c.cluster]
            scores = [d["score"] for d in rows(lake, "SELECT detection_id, score FROM detections")
                      if d["detection_id"] in {o["detection_id"] for o in own}]
            assert c.labels == {k: sum(o["label"] == k for o in own) for k in {o["label"] for o in own}}
            assert c.mean_confidence == pytest.approx(np.mean(scores)) and set(c.nearest) <= {
                o["detection_id"] for o in own}

        # Drilling into cluster 0 re-clusters exactly its boxes, on the object index the session names.
        zero = {m["detection_id"] for m in members if m["cluster"] == 0}
        drilled = mining.pick_clusters(db, "boxes", [0], k=2, config=config)
        assert drilled.objects and drilled.path == [0, 1] and drilled.pool_size == len(zero)
        assert {m["detection_id"] for m in sessions.members_of(db, "boxes", 1).to_pylist()} == zero
        assert mining.go_back(db, "boxes", config=config).step == 0

        # Saved or exported, the session is the boxes' images: each once, at its best box.
        by_similarity = sorted(members, key=lambda m: (-m["similarity"], m["image_id"]))
        images = list(dict.fromkeys(m["image_id"] for m in by_similarity))
        assert sessions.save_session(db, "boxes", "box-images", "tester") == len(images)
        assert db.query("SELECT image_id FROM sets WHERE name = 'box-images' ORDER BY score DESC, image_id"
                        ).column("image_id").to_pylist() == images
        assert mining.resolve_images(db, "session:boxes") == images
    # The members are in their own table, and the step says it read the object embeddings.
    assert rows(lake, "SELECT count(*) n FROM narrow_members") == [{"n": 0}]
    [versions] = rows(lake, "SELECT map_keys(table_versions) k FROM narrow_steps WHERE step = 0")
    assert "object_embeddings" in versions["k"] and "embeddings" not in versions["k"]


@local_only
def test_the_cli_narrows_boxes_from_a_detection_id_and_refuses_an_unknown_one(lake):
    objects_lake(lake, n=6)
    embed_objects(lake, CONFIG, OBJECTS, show_progress=False)
    found, vectors = object_vectors(lake)
    seed = next(r["detection_id"] for r in found if r["label"] == "blue")
    code, out, _ = main_in_process(["narrow", "start", seed, "--pool", "6", "--clusters", "2", "--name", "cli-boxes",
                                    "--json", "--lake", lake.uri])
    step = json.loads(out)
    assert code == 0 and step["objects"] is True and step["pool_size"] == 6
    pool = {m["detection_id"] for m in rows(lake, "SELECT detection_id FROM narrow_object_members")}
    assert pool == set(exact_nearest(found, vectors, seed, 6))
    assert {n for c in step["clusters"] for n in c["nearest"]} <= pool

    code, out, _ = main_in_process(["narrow", "pick", "cli-boxes", "0", "--json", "--lake", lake.uri])
    assert code == 0 and json.loads(out)["path"] == [0, 1] and json.loads(out)["objects"] is True

    code, _, err = main_in_process(["narrow", "start", "no-such-box", "--objects", "--lake", lake.uri])
    assert code == 2 and "detection id(s) not in the object index: no-such-box" in err


# -- the UI: crops of object hits, a box highlighted in its frame -----------------------------------

def media_pixels(storage, url: str) -> np.ndarray:
    """The pixels Streamlit serves at ``url`` (an st.image's), from its media storage."""
    return np.asarray(Image.open(io.BytesIO(storage.get_file(url.rsplit("/", 1)[1]).content)).convert("RGB"))


@local_only
def test_the_find_similar_page_shows_the_crop_of_each_box_hit_and_its_frame_highlighted(lake, monkeypatch):
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.testing.v1 import AppTest
    from streamlit.testing.v1 import app_test as app_test_module

    from ui import nav

    objects_lake(lake, n=6)
    embed_lake(lake, CONFIG, show_progress=False)  # the page opens on the images' index
    embed_objects(lake, CONFIG, OBJECTS, show_progress=False)
    storages = []

    class KeptStorage(MemoryMediaFileStorage):
        """Streamlit's own media storage, kept so the test can read what a run served."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            storages.append(self)

    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", KeptStorage)
    monkeypatch.setenv("EDGEMINE_LAKE", lake.uri)
    monkeypatch.setenv("EDGEMINE_USER", "alice")
    monkeypatch.delenv("EDGEMINE_CONFIG", raising=False)
    at = AppTest.from_file(str(REPO / "ui" / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(f"views/{nav.PAGES['similar'][0]}").run()
    found, _ = object_vectors(lake)
    seed = next(r["detection_id"] for r in found if r["label"] == "yellow")
    at.text_input(key="seed_ids").input(seed)
    at.button(key="seed_ids_add").click().run()
    assert not at.exception and at.session_state["positives"] == [seed]

    shown = [c.key.rsplit(":", 1)[1] for c in at.checkbox if c.key and c.key.startswith("results:sel:")]
    with LakeDB(lake) as db:
        expected = mining.find_similar(db, [seed], k=40, config=Config(lake=lake.uri))
    assert shown == [h.detection_id for h in expected] and len(shown) == 17  # every other box, best first
    originals = {r["image_id"]: np.asarray(Image.open(r["uri"]).convert("RGB"))
                 for r in rows(lake, "SELECT image_id, uri FROM images")}
    crops = at.image[-len(shown):]
    for hit, element in zip(expected, crops):
        x1, y1, x2, y2 = (int(v) for v in hit.box)
        pixels = media_pixels(storages[-1], element.value[0])
        assert pixels.shape == (y2 - y1, x2 - x1, 3)  # the box, not the frame
        assert np.array_equal(pixels, originals[hit.image_id][y1:y2, x1:x2])

    # 🔍: the whole frame, the box's pixels as they are and the rest dimmed.
    first = expected[0]
    at.button(key=f"results:open:{first.detection_id}").click().run()
    assert len(at.get("dialog")) == 1 and not at.exception
    frame = media_pixels(storages[-1], at.image[-1].value[0]).astype(int)
    original = originals[first.image_id].astype(int)
    x1, y1, x2, y2 = (int(v) for v in first.box)
    assert frame.shape == original.shape
    assert np.array_equal(frame[y1:y2, x1:x2], original[y1:y2, x1:x2])
    outside = np.ones(original.shape[:2], bool)
    outside[max(0, y1 - 8):y2 + 8, max(0, x1 - 8):x2 + 8] = False
    assert (frame[outside].sum(1) < original[outside].sum(1)).mean() > 0.95  # dimmed around it
    assert any("box " + first.detection_id in c for e in at.image for c in e.captions)


# -- exporting objects -----------------------------------------------------------------------------

@local_only
def test_exporting_boxes_sends_each_frame_once_with_the_chosen_boxes_and_only_them(lake, tmp_path):
    objects_lake(lake, n=3)
    boxes = rows(lake, "SELECT d.detection_id, d.image_id, d.box, d.label FROM detections d "
                       "JOIN predictions p USING (prediction_id) WHERE p.model_version = 'v2' ORDER BY d.detection_id")
    first, second = sorted({b["image_id"] for b in boxes})[:2]
    chosen = [b for b in boxes if b["image_id"] == first and b["label"] in ("red", "blue")]
    chosen += [b for b in boxes if b["image_id"] == second and b["label"] == "yellow"]
    ids = [b["detection_id"] for b in chosen]

    code, out, _ = main_in_process(["export", "--detections", *ids, "--format", "coco", "--to", str(tmp_path / "coco"),
                                    "--batch", "boxes", "--json", "--lake", lake.uri])
    assert code == 0 and json.loads(out)["exported"] == 2, out
    coco = json.loads((tmp_path / "coco" / "boxes" / "annotations.json").read_text())
    uris = {r["image_id"]: r["uri"] for r in rows(lake, "SELECT image_id, uri FROM images")}
    assert sorted(Path(i["file_name"]).name for i in coco["images"]) == sorted(
        Path(uris[i]).name for i in (first, second))  # each frame once
    file_of = {i["id"]: Path(i["file_name"]).name for i in coco["images"]}
    written = sorted((file_of[a["image_id"]], tuple(a["bbox"])) for a in coco["annotations"])
    expected = sorted((Path(uris[b["image_id"]]).name, (b["box"][0], b["box"][1], b["box"][2] - b["box"][0],
                                                        b["box"][3] - b["box"][1])) for b in chosen)
    assert written == expected  # the chosen boxes, and not the third box of the first frame nor the old prediction's

    code, out, _ = main_in_process(["export", "--detections", *ids, "--format", "label-studio", "--to",
                                    str(tmp_path / "ls"), "--batch", "boxes", "--json", "--lake", lake.uri])
    tasks = json.loads((tmp_path / "ls" / "boxes" / "tasks.json").read_text())
    labels = {t["data"]["edgemine_image_id"]: sorted(r["value"]["rectanglelabels"][0] for r in t["predictions"][0][
        "result"] if r["type"] == "rectanglelabels") for t in tasks}
    assert code == 0 and labels == {first: ["blue", "red"], second: ["yellow"]}

    code, _, err = main_in_process(["export", "--detections", ids[0], "no-such-box", "--format", "coco", "--to",
                                    str(tmp_path / "bad"), "--lake", lake.uri])
    assert code == 2 and "1 detection id(s) not in the lake: no-such-box" in err
    assert rows(lake, "SELECT count(DISTINCT batch) n FROM exports") == [{"n": 2}] and not (tmp_path / "bad").exists()
