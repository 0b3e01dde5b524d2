"""The review UI, driven headless by Streamlit's AppTest on a real demo lake:
every page, and the loop seed -> similar -> narrow -> drill -> back -> review.

What the UI writes is checked in the lake itself, through SQL.
"""

from __future__ import annotations

import io
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from jobs import narrow, review
from jobs.demo import run_demo
from mining.backends import get_backend
from mining.config import Config, DemoConfig, EmbedConfig, MiningConfig, S3Config
from mining.lake import Lake
from mining.media import read_image
from mining.sql import LakeDB

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")


@pytest.fixture(scope="module")
def demo_lake(tmp_path_factory) -> Lake:
    lake = Lake(str(tmp_path_factory.mktemp("ui") / "lake"))
    config = Config(lake=lake.uri, demo=replace(DemoConfig(), images=300, seed=5), embed=replace(EmbedConfig(), workers=1))
    run_demo(config, show_progress=False)
    return lake


@pytest.fixture
def app(demo_lake, monkeypatch) -> AppTest:
    monkeypatch.setenv("EDGEMINE_LAKE", demo_lake.uri)
    monkeypatch.setenv("EDGEMINE_USER", "alice")
    monkeypatch.delenv("EDGEMINE_CONFIG", raising=False)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def open_page(at: AppTest, name: str) -> AppTest:
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, at.exception
    return at


def grid_ids(at: AppTest, key: str) -> list[str]:
    return [c.key.rsplit(":", 1)[1] for c in at.checkbox if c.key and c.key.startswith(f"{key}:sel:")]


def select(at: AppTest, key: str, image_ids: list[str]) -> None:
    for image_id in image_ids:
        at.checkbox(key=f"{key}:sel:{image_id}").check()
    at.run()


def sql(lake: Lake, query: str, params=None) -> list[dict]:
    with LakeDB(lake) as db:
        return db.query(query, params).to_pylist()


# -- Lake and SQL ------------------------------------------------------------------
def test_lake_page_shows_what_the_lake_holds(app, demo_lake):
    metrics = {m.label: m.value for m in app.metric}
    truth = sql(demo_lake, "SELECT (SELECT count(*) FROM images) i, (SELECT count(*) FROM errors) e")[0]
    assert metrics["Images"] == f"{truth['i']:,}" and metrics["Errors"] == f"{truth['e']:,}"
    assert metrics["Embedded"] == "300"
    tabs = [t.label for t in app.tabs]
    assert tabs[:2] == ["label", "model_version"] and {"camera", "region"} <= set(tabs)  # metadata columns of the input
    assert not app.error


def test_sql_console_shows_thumbnails_and_refuses_writes_and_outside_files(app, demo_lake, tmp_path):
    open_page(app, "sql")
    app.text_area(key="sql").input("SELECT image_id, confidence FROM predictions ORDER BY confidence LIMIT 7")
    app.button(key="sql_run").click().run()
    frame = app.dataframe[0].value
    assert list(frame.columns) == ["thumbnail", "image_id", "confidence"] and len(frame) == 7
    assert all(t.startswith("data:image/jpeg;base64,") for t in frame["thumbnail"])
    assert [d.label for d in app.get("download_button")] == ["Download CSV", "Download Parquet"]

    secret = tmp_path / "outside.csv"
    secret.write_text("a\n1\n")
    copied = tmp_path / "copied.csv"
    for query in ["CREATE TABLE t AS SELECT 1", f"COPY (SELECT * FROM images) TO '{copied}'",
                  f"SELECT * FROM read_csv('{secret}')", f"ATTACH '{tmp_path / 'other.duckdb'}'", "INSTALL spatial"]:
        app.text_area(key="sql").input(query)
        app.button(key="sql_run").click().run()
        assert len(app.error) == 1 and app.error[0].value.startswith("Refused"), (query, app.error)
        assert not app.dataframe
    assert not copied.exists() and not (tmp_path / "other.duckdb").exists()


# -- Find similar -> Narrow -> Review --------------------------------------------------
def test_find_similar_narrow_drill_back_and_review(app, demo_lake):
    open_page(app, "similar")
    browse = grid_ids(app, "browse")
    lowest = sql(demo_lake, "SELECT image_id FROM images LEFT JOIN predictions USING (image_id) "
                            "GROUP BY image_id ORDER BY min(confidence), image_id LIMIT 3")
    assert browse[:3] == [r["image_id"] for r in lowest]  # lowest confidence first
    seed = browse[0]
    select(app, "browse", [seed])
    app.button(key="browse_add").click().run()
    assert app.session_state["positives"] == [seed]
    results = grid_ids(app, "results")
    assert len(results) == 40 and seed not in results
    assert not [c for c in app.checkbox if c.key.startswith("browse:sel:") and c.value]  # the selection was used up

    # A negative: a classifier ranks, and neither seed nor negative comes back.
    negative = results[0]
    select(app, "results", [negative])
    app.button(key="less_like").click().run()
    assert app.session_state["negatives"] == [negative]
    assert negative not in grid_ids(app, "results") and seed not in grid_ids(app, "results")

    app.number_input(key="pool").set_value(120)
    app.number_input(key="clusters").set_value(4)
    app.text_input(key="session_name").input("ui-glare")
    app.button(key="start_narrowing").click().run()
    assert not app.exception and [t.value for t in app.title] == ["Narrow"]  # switched there
    open_page(app, "narrow")  # AppTest keeps its own page for later runs: follow the switch
    started = sql(demo_lake, "SELECT * FROM narrow_steps WHERE session = 'ui-glare'")
    assert [(s["action"], s["created_by"], s["seeds"], s["negatives"]) for s in started] == [("start", "alice", [seed], [negative])]
    cards = [m.value for m in app.markdown if m.value.startswith("**Cluster")]
    assert len(cards) == 4 and sum(int(c.split("· ")[1].split()[0]) for c in cards) == 120

    # Drill into clusters 0 and 1: a child step over exactly their images.
    sizes = {r["cluster"]: r["n"] for r in sql(demo_lake, "SELECT cluster, count(*) n FROM narrow_members "
                                                          "WHERE session = 'ui-glare' AND step = 0 GROUP BY cluster")}
    for c in (0, 1):
        app.checkbox(key=f"pick:ui-glare:0:{c}").check()
    app.run()
    app.button(key="drill_picked").click().run()
    assert not app.exception
    assert [b.label for b in app.button if b.key and b.key.startswith("crumb:")] == ["step 0", "step 1 (here)"]
    step1 = sql(demo_lake, "SELECT count(*) n FROM narrow_members WHERE session = 'ui-glare' AND step = 1")[0]["n"]
    assert step1 == sizes[0] + sizes[1]

    # Back along the breadcrumb, recorded in the lake; the CLI's view agrees.
    app.button(key="crumb:0").click().run()
    assert [b.label for b in app.button if b.key and b.key.startswith("crumb:")] == ["step 0 (here)"]
    assert narrow.show(demo_lake, "ui-glare").step == 0
    assert [s["action"] for s in sql(demo_lake, "SELECT action FROM narrow_steps WHERE session = 'ui-glare' ORDER BY step")] == \
        ["start", "pick", "back"]

    # Review cluster 0: its images, preselected from the card.
    app.button(key="review:0").click().run()
    assert [t.value for t in app.title] == ["Review"]
    open_page(app, "review")
    shown = grid_ids(app, "review")
    assert sorted(shown) == sorted(r["image_id"] for r in sql(
        demo_lake, "SELECT image_id FROM narrow_members WHERE session = 'ui-glare' AND step = 0 AND cluster = 0"))
    assert app.text_input(key="review_name").value == "ui-glare"

    select(app, "review", shown[:2])
    app.button(key="accept_selected").click().run()
    select(app, "review", shown[1:3])
    app.button(key="reject_selected").click().run()
    decided = {r["image_id"]: (r["decision"], r["reviewer"], r["source"]) for r in sql(
        demo_lake, "SELECT * FROM reviews WHERE review = 'ui-glare'")}
    assert decided == {shown[0]: ("accept", "alice", "narrow:ui-glare/0#0"), shown[1]: ("reject", "alice", "narrow:ui-glare/0#0"),
                       shown[2]: ("reject", "alice", "narrow:ui-glare/0#0")}  # the latest decision wins
    assert sql(demo_lake, "SELECT count(*) n FROM raw.reviews WHERE review = 'ui-glare'")[0]["n"] == 4  # append-only
    assert {m.label: m.value for m in app.metric} == {"Accepted": "1", "Rejected": "2"}
    assert ":green[**accepted**]" in " ".join(c.value for c in app.caption)

    app.button(key="publish").click().run()
    assert [r["image_id"] for r in sql(demo_lake, "SELECT image_id FROM sets WHERE name = 'ui-glare'")] == [shown[0]]


def test_a_session_started_in_the_cli_library_opens_in_the_ui_and_back(app, demo_lake):
    from jobs.index import open_index
    from mining.config import IndexConfig

    index = open_index(demo_lake, IndexConfig())
    seed = str(index.ids[7])
    narrow.start(demo_lake, index, get_backend("cpu"), MiningConfig(user="bob"), seeds=[seed],
                 seed_vectors=index.vectors[[7]], pool=60, clusters=3, session="from-cli")
    open_page(app, "narrow")
    app.selectbox(key="session_pick").select("from-cli").run()
    assert len([m for m in app.markdown if m.value.startswith("**Cluster")]) == 3
    app.button(key="drill:2").click().run()
    report = narrow.show(demo_lake, "from-cli")  # what `edgemine narrow show` prints
    drilled = sql(demo_lake, "SELECT count(*) n FROM narrow_members WHERE session = 'from-cli' AND step = 0 AND cluster = 2")[0]["n"]
    assert report.path == [0, 1] and sum(c.size for c in report.clusters) == drilled
    # As many clusters as the parent step, but none of a handful of images: one per 10 at most.
    assert len(report.clusters) == min(3, max(2, drilled // narrow.MIN_CLUSTER))
    assert sql(demo_lake, "SELECT created_by FROM narrow_steps WHERE session = 'from-cli' AND step = 1")[0]["created_by"] == "alice"


def test_an_uploaded_image_is_a_seed_and_a_new_file_of_the_same_name_is_a_new_seed(app, demo_lake):
    open_page(app, "similar")
    for row in sql(demo_lake, "SELECT image_id, uri FROM images ORDER BY image_id LIMIT 2"):
        if "clear_seeds" in [b.key for b in app.button]:
            app.button(key="clear_seeds").click().run()
        content = read_image(row["uri"], S3Config())
        app.file_uploader(key="upload").set_value(("edge-case.jpg", content, "image/jpeg")).run()
        app.button(key="upload_add").click().run()
        assert not app.exception and len(app.session_state["positives"]) == 1
        assert Path(app.session_state["positives"][0]).name == "edge-case.jpg"
        assert grid_ids(app, "results")[0] == row["image_id"]  # the lake's copy of the uploaded picture comes first


def test_the_default_embedding_set_and_the_same_set_named_share_one_loaded_index(demo_lake, monkeypatch):
    """Find similar asks for the lake's default set, a session names its set: one index in memory, not two."""
    from jobs import index as index_job
    from ui import data

    monkeypatch.setenv("EDGEMINE_LAKE", demo_lake.uri)
    monkeypatch.delenv("EDGEMINE_CONFIG", raising=False)
    loads, real = [], index_job.open_index
    monkeypatch.setattr(index_job, "open_index", lambda *a, **kw: loads.append(kw) or real(*a, **kw))
    data._index.clear()
    data.embedding_set.clear()
    default = data.index(demo_lake.uri)
    named = data.index(demo_lake.uri, default.backbone, default.weights)
    assert named is default and len(loads) == 1 and default.backbone and default.weights


def test_full_size_image_opens_with_its_boxes(app, demo_lake):
    open_page(app, "similar")
    image_id = grid_ids(app, "browse")[0]
    images_before = len(app.image)
    app.button(key=f"browse:open:{image_id}").click().run()
    dialog = app.get("dialog")
    assert len(dialog) == 1 and len(app.image) == images_before + 1
    boxes = sql(demo_lake, "SELECT d.label FROM detections d JOIN predictions p USING (prediction_id) "
                           "WHERE p.image_id = $i QUALIFY p.ts = max(p.ts) OVER ()", {"i": image_id})
    caption = " ".join(c.value for c in app.caption if c.value.startswith("Boxes:"))
    assert boxes and all(b["label"] in caption for b in boxes)
    predictions = sql(demo_lake, "SELECT prediction_id FROM predictions WHERE image_id = $i ORDER BY ts DESC", {"i": image_id})
    assert list(app.dataframe[-1].value["prediction_id"]) == [p["prediction_id"] for p in predictions]


def test_review_a_named_set_and_an_sql_query(app, demo_lake):
    ids = [r["image_id"] for r in sql(demo_lake, "SELECT image_id FROM images ORDER BY image_id LIMIT 5")]
    from jobs.sets import save_set

    save_set(demo_lake, "five", ids, source="test", user="t")
    open_page(app, "review")
    app.radio(key="review_kind").set_value("Named set").run()
    app.selectbox(key="review_set").select("five").run()
    assert grid_ids(app, "review") == ids
    app.text_input(key="review_name").input("five-review").run()
    app.button(key="accept_all").click().run()
    assert sql(demo_lake, "SELECT count(*) n FROM reviews WHERE review = 'five-review' AND decision = 'accept'")[0]["n"] == 5

    app.radio(key="review_kind").set_value("SQL query").run()
    app.text_area(key="review_sql").input("SELECT 1 AS x").run()
    assert "must return an image_id column" in app.error[0].value
    app.text_area(key="review_sql").input("DELETE FROM images").run()
    assert "refused" in app.error[0].value


# -- the library under the Review page ------------------------------------------------
def test_two_reviewers_deciding_at_once_lose_nothing(demo_lake):
    ids = [r["image_id"] for r in sql(demo_lake, "SELECT image_id FROM images ORDER BY image_id DESC LIMIT 40")]
    errors = []

    def decide(n: int) -> None:
        try:
            review.decide(demo_lake, "race", ids[n * 4:(n + 1) * 4], "accept" if n % 2 else "reject", reviewer=f"r{n}")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=decide, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = sql(demo_lake, "SELECT image_id, reviewer FROM reviews WHERE review = 'race'")
    assert sorted(r["image_id"] for r in rows) == sorted(ids)
    assert {r["reviewer"] for r in rows} == {f"r{n}" for n in range(10)}


def test_review_refuses_bad_input_and_writes_nothing(demo_lake):
    from mining.index import SearchError

    one = sql(demo_lake, "SELECT image_id FROM images LIMIT 1")[0]["image_id"]
    before = sql(demo_lake, "SELECT count(*) n FROM raw.reviews")[0]["n"]
    with pytest.raises(SearchError, match="accept, reject"):
        review.decide(demo_lake, "r", [one], "maybe", reviewer="a")
    with pytest.raises(SearchError, match="not in the lake"):
        review.decide(demo_lake, "r", [one, "0" * 20], "accept", reviewer="a")
    with pytest.raises(SearchError, match="reviewer"):
        review.decide(demo_lake, "r", [one], "accept", reviewer="")
    with pytest.raises(SearchError, match="no accepted images"):
        review.save_review(demo_lake, "never-reviewed", user="a")
    assert sql(demo_lake, "SELECT count(*) n FROM raw.reviews")[0]["n"] == before


def test_review_cli_accepts_rejects_lists_and_saves(demo_lake, monkeypatch, capsys):
    from jobs.cli import main

    monkeypatch.setenv("EDGEMINE_USER", "carol")
    ids = [r["image_id"] for r in sql(demo_lake, "SELECT image_id FROM images ORDER BY image_id LIMIT 3")]
    assert main(["review", "accept", "cli", *ids, "--lake", demo_lake.uri, "--quiet"]) == 0
    assert main(["review", "reject", "cli", ids[0], "--lake", demo_lake.uri, "--quiet"]) == 0
    assert main(["review", "save", "cli", "--as", "cli-set", "--lake", demo_lake.uri, "--json"]) == 0
    assert '"images": 2' in capsys.readouterr().out
    assert sorted(r["image_id"] for r in sql(demo_lake, "SELECT image_id FROM sets WHERE name = 'cli-set'")) == sorted(ids[1:])
    assert main(["review", "accept", "cli", "nothex", "--lake", demo_lake.uri]) == 2
    assert "not in the lake" in capsys.readouterr().err


# -- pictures ----------------------------------------------------------------------
def test_boxes_are_drawn_where_the_detections_are():
    from mining.media import draw_boxes

    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(buffer, "PNG")
    drawn = np.asarray(draw_boxes(buffer.getvalue(), [{"box": [50, 40, 150, 90], "label": "car", "score": 0.9}]))
    assert tuple(drawn[65, 50]) == (255, 59, 48)  # the left edge, in the first colour
    assert tuple(drawn[65, 100]) == (255, 255, 255)  # inside the box: untouched
    assert tuple(drawn[20, 180]) == (255, 255, 255)  # outside: untouched


def test_mosaic_and_pool_map():
    from mining.media import mosaic
    from mining.narrow import project_2d

    tiles = []
    for colour in ("red", "green", "blue"):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), colour).save(buffer, "JPEG")
        tiles.append(buffer.getvalue())
    sheet = mosaic(tiles, columns=2, tile=50)
    assert sheet.size == (100, 100) and sheet.getpixel((75, 25))[1] > 100 and sheet.getpixel((25, 75))[2] > 100

    rng = np.random.default_rng(0)
    points = rng.normal(size=(300, 16)).astype(np.float32) * np.r_[5.0, 3.0, np.full(14, 0.1)].astype(np.float32)
    xy = project_2d(points)
    assert xy.shape == (300, 2)
    # The first two principal axes are the two wide dimensions: the map keeps their spread.
    assert np.allclose(np.abs(np.corrcoef(xy[:, 0], points[:, 0])[0, 1]), 1, atol=1e-3)
    assert np.allclose(np.abs(np.corrcoef(xy[:, 1], points[:, 1])[0, 1]), 1, atol=1e-2)


def test_confidence_histogram_bins_are_clean_and_complete(demo_lake):
    from mining.overview import confidence_histogram

    with LakeDB(demo_lake) as db:
        bins = confidence_histogram(db, bins=20).to_pylist()
        total = db.query("SELECT count(*) n FROM predictions").column("n")[0].as_py()
    assert sum(b["predictions"] for b in bins) == total
    assert all(round(b["low"] * 20) == b["low"] * 20 and 0 <= b["low"] < 1 for b in bins)  # edges, not float noise


def test_the_ui_works_on_an_s3_lake(s3_env, s3_config, new_bucket, monkeypatch):
    """The same pages on a lake in S3 (moto's server): statistics, seeds, similar images,
    a full-size original read from the bucket, and a decision written back to it."""
    lake = Lake(f"s3://{new_bucket}/lake", s3_config)
    run_demo(Config(lake=lake.uri, s3=s3_config, demo=replace(DemoConfig(), images=80, seed=3),
                    embed=replace(EmbedConfig(), workers=1)), show_progress=False)
    monkeypatch.setenv("EDGEMINE_LAKE", lake.uri)
    monkeypatch.setenv("EDGEMINE_USER", "dana")
    monkeypatch.delenv("EDGEMINE_CONFIG", raising=False)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception and {m.label: m.value for m in at.metric}["Images"] == "80"

    open_page(at, "similar")
    seed = grid_ids(at, "browse")[0]
    at.button(key=f"browse:open:{seed}").click().run()
    assert not at.error and len(at.get("dialog")) == 1  # the original came from the bucket
    select(at, "browse", [seed])
    at.button(key="browse_add").click().run()
    results = grid_ids(at, "results")
    assert len(results) == 40 and seed not in results

    open_page(at, "review")
    at.radio(key="review_kind").set_value("SQL query").run()
    at.text_area(key="review_sql").input(f"SELECT '{results[0]}' AS image_id").run()
    at.text_input(key="review_name").input("s3-review").run()
    select(at, "review", [results[0]])
    at.button(key="accept_selected").click().run()
    assert sql(lake, "SELECT image_id, reviewer FROM reviews WHERE review = 's3-review'") == \
        [{"image_id": results[0], "reviewer": "dana"}]


def test_an_empty_lake_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEMINE_LAKE", str(tmp_path / "empty"))
    monkeypatch.delenv("EDGEMINE_CONFIG", raising=False)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception and "edgemine demo" in at.info[0].value
    for page, expected in [("similar", "edgemine embed"), ("narrow", "narrow start"), ("review", "Find similar")]:
        open_page(at, page)
        shown = " ".join(e.value for e in [*at.error, *at.info])
        assert expected in shown, (page, shown)
