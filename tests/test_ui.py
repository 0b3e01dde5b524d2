"""The review UI, driven headless by Streamlit's AppTest on a real demo lake:
every page, and the loop seed -> similar -> narrow -> drill -> back -> review.

What the UI writes is checked in the lake itself, through SQL.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from jobs.demo import run_demo
from mining.core.config import Config, DemoConfig, EmbedConfig, IndexConfig, MiningConfig, S3Config
from mining.core.lake import Lake
from mining.core.media import read_image
from mining.core.sets import save_set
from mining.core.sql import LakeDB
from mining.search import sessions
from mining.search.backends import get_backend
from mining.search.index_sync import open_index
from tests.helpers import rows as sql
from ui import nav

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")


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
    """Switch to the page ``name`` (a key of ui.nav.PAGES)."""
    at.switch_page(f"views/{nav.PAGES[name][0]}").run()
    assert not at.exception, at.exception
    return at


def grid_ids(at: AppTest, key: str) -> list[str]:
    return [c.key.rsplit(":", 1)[1] for c in at.checkbox if c.key and c.key.startswith(f"{key}:sel:")]


def select(at: AppTest, key: str, image_ids: list[str]) -> None:
    for image_id in image_ids:
        at.checkbox(key=f"{key}:sel:{image_id}").check()
    at.run()


# -- Lake and SQL ------------------------------------------------------------------
def test_lake_page_shows_what_the_lake_holds(app, demo_lake):
    metrics = {m.label: m.value for m in app.metric}
    truth = sql(demo_lake, "SELECT (SELECT count(*) FROM images) i, (SELECT count(*) FROM errors) e")[0]
    assert metrics["Images"] == f"{truth['i']:,}" and metrics["Errors"] == f"{truth['e']:,}"
    assert metrics["Embedded"] == f"{truth['i']:,}"  # every demo image but the corrupt one (not registered) is embedded
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
    assert any(c.value.startswith("Searching the embeddings of resnet18 (random-seed0): 600 images, 512 floats")
               for c in app.caption)  # the page names the embedding set it searches
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
    assert [(s["action"], s["created_by"], s["seeds"], s["negatives"]) for s in started] == [
        ("start", "alice", [seed], [negative])
    ]
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
    with LakeDB(demo_lake) as db:
        assert sessions.show(db, "ui-glare").step == 0
    assert [
        s["action"] for s in sql(demo_lake, "SELECT action FROM narrow_steps WHERE session = 'ui-glare' ORDER BY step")
    ] == ["start", "pick", "back"]

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
    assert decided == {
        shown[0]: ("accept", "alice", "narrow:ui-glare/0#0"),
        shown[1]: ("reject", "alice", "narrow:ui-glare/0#0"),
        shown[2]: ("reject", "alice", "narrow:ui-glare/0#0"),
    }  # the latest decision wins
    assert sql(demo_lake, "SELECT count(*) n FROM raw.reviews WHERE review = 'ui-glare'")[0]["n"] == 4  # append-only
    assert {m.label: m.value for m in app.metric} == {"Accepted": "1", "Rejected": "2"}
    assert ":green[**accepted**]" in " ".join(c.value for c in app.caption)

    app.button(key="publish").click().run()
    assert [r["image_id"] for r in sql(demo_lake, "SELECT image_id FROM sets WHERE name = 'ui-glare'")] == [shown[0]]


def test_a_session_started_in_the_cli_library_opens_in_the_ui_and_back(app, demo_lake):
    with LakeDB(demo_lake) as db:
        index = open_index(db, IndexConfig())
        seed = str(index.ids[7])
        started = sessions.start(db, index, get_backend("cpu"), MiningConfig(user="bob"), seeds=[seed],
                                 seed_vectors=index.vectors[[7]], pool=60, clusters=3, session="from-cli")
    largest = max(started.clusters, key=lambda c: c.size).cluster
    open_page(app, "narrow")
    app.selectbox(key="session_pick").select("from-cli").run()
    assert len([m for m in app.markdown if m.value.startswith("**Cluster")]) == 3
    app.button(key=f"drill:{largest}").click().run()
    assert not app.error
    with LakeDB(demo_lake) as db:
        report = sessions.show(db, "from-cli")  # what `edgemine narrow show` prints
    drilled = sql(
        demo_lake,
        "SELECT count(*) n FROM narrow_members WHERE session = 'from-cli' AND step = 0 AND cluster = $c",
        {"c": largest},
    )[0]["n"]
    assert report.path == [0, 1] and sum(c.size for c in report.clusters) == drilled
    # As many clusters as the parent step, but none of a handful of images: one per 10 at most.
    assert len(report.clusters) == min(3, max(2, drilled // sessions.MIN_CLUSTER))
    assert (
        sql(demo_lake, "SELECT created_by FROM narrow_steps WHERE session = 'from-cli' AND step = 1")[0]["created_by"]
        == "alice"
    )


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
    from mining.search import index_sync
    from ui import data

    monkeypatch.setenv("EDGEMINE_LAKE", demo_lake.uri)
    monkeypatch.delenv("EDGEMINE_CONFIG", raising=False)
    loads, real = [], index_sync.open_index
    monkeypatch.setattr(index_sync, "open_index", lambda *a, **kw: loads.append(kw) or real(*a, **kw))
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
    predictions = sql(
        demo_lake, "SELECT prediction_id FROM predictions WHERE image_id = $i ORDER BY ts DESC", {"i": image_id}
    )
    assert list(app.dataframe[-1].value["prediction_id"]) == [p["prediction_id"] for p in predictions]


def test_review_a_named_set_and_an_sql_query(app, demo_lake):
    ids = [r["image_id"] for r in sql(demo_lake, "SELECT image_id FROM images ORDER BY image_id LIMIT 5")]
    with LakeDB(demo_lake) as db:
        save_set(db, "five", ids, source="test", user="t")
    open_page(app, "review")
    app.radio(key="review_kind").set_value("Named set").run()
    app.selectbox(key="review_set").select("five").run()
    assert grid_ids(app, "review") == ids
    app.text_input(key="review_name").input("five-review").run()
    app.button(key="accept_all").click().run()
    assert (
        sql(demo_lake, "SELECT count(*) n FROM reviews WHERE review = 'five-review' AND decision = 'accept'")[0]["n"]
        == 5
    )

    app.radio(key="review_kind").set_value("SQL query").run()
    app.text_area(key="review_sql").input("SELECT 1 AS x").run()
    assert "must return an image_id column" in app.error[0].value
    app.text_area(key="review_sql").input("DELETE FROM images").run()
    assert "refused" in app.error[0].value


def test_every_action_with_bad_input_shows_an_error_and_no_traceback(app, demo_lake, monkeypatch):
    """Unknown ids, a bad filter, a file that is no image, a session name in use, a missing
    session, no reviewer, a DELETE: each an error box, never an exception; nothing written."""
    decisions_before = sql(demo_lake, "SELECT count(*) n FROM raw.reviews")[0]["n"]

    def errors() -> str:
        assert not app.exception, app.exception
        return " ".join(e.value for e in app.error)

    open_page(app, "sql")
    app.text_area(key="sql").input("DELETE FROM predictions")
    app.button(key="sql_run").click().run()
    assert "DELETE statements are refused" in errors()

    open_page(app, "similar")
    app.text_input(key="browse_where").input("no_such_column = 1").run()
    assert "no_such_column" in errors()
    app.text_input(key="browse_where").input("").run()
    assert app.button(key="browse_add").disabled  # nothing selected: nothing to add
    app.text_input(key="seed_ids").input("ffffffffffffffffffff")
    app.button(key="seed_ids_add").click().run()
    assert "not in the index: ffffffffffffffffffff" in errors() and app.session_state["positives"] == []

    app.file_uploader(key="upload").set_value(("not-an-image.jpg", b"plain text, not a JPEG", "image/jpeg")).run()
    app.button(key="upload_add").click().run()
    assert "not an image" in errors()
    app.button(key="clear_seeds").click().run()

    seed = grid_ids(app, "browse")[0]
    select(app, "browse", [seed])
    app.button(key="browse_add").click().run()
    app.text_input(key="where").input("p.nope > 1").run()
    assert "nope" in errors()
    app.text_input(key="where").input("").run()
    with LakeDB(demo_lake) as db:
        index = open_index(db, IndexConfig())
        sessions.start(db, index, get_backend("cpu"), MiningConfig(user="bob"), seeds=[str(index.ids[0])],
                       seed_vectors=index.vectors[:1], pool=30, clusters=2, session="taken")
    app.text_input(key="session_name").input("taken")
    app.button(key="start_narrowing").click().run()
    assert "exists already" in errors() and [t.value for t in app.title] == ["Find similar"]

    open_page(app, "review")
    app.session_state["review_source"] = {"kind": "narrow", "session": "gone", "clusters": [0]}
    app.run()
    assert "no session 'gone'" in errors()

    app.radio(key="review_kind").set_value("SQL query").run()
    app.text_area(key="review_sql").input(f"SELECT '{seed}' AS image_id").run()
    app.text_input(key="review_name").input("bad-input").run()
    app.sidebar.text_input(key="reviewer").input("").run()
    app.button(key="accept_all").click().run()
    assert "needs a reviewer" in errors()
    assert app.button(key="accept_selected").disabled  # empty selection
    app.text_area(key="review_sql").input("DELETE FROM images").run()
    assert "refused" in errors()

    assert sql(demo_lake, "SELECT count(*) n FROM raw.reviews")[0]["n"] == decisions_before


def test_the_ui_works_on_an_s3_lake(s3_env, s3_config, new_bucket, monkeypatch):
    """The same pages on a lake in S3 (moto's server): statistics, seeds, similar images,
    a full-size original read from the bucket, and a decision written back to it."""
    lake = Lake(f"s3://{new_bucket}/lake", s3_config)
    images = 50  # more than a page of 40 results besides the seed
    run_demo(Config(lake=lake.uri, s3=s3_config, demo=replace(DemoConfig(), images=images, seed=3),
                    embed=replace(EmbedConfig(), workers=1)), show_progress=False)
    monkeypatch.setenv("EDGEMINE_LAKE", lake.uri)
    monkeypatch.setenv("EDGEMINE_USER", "dana")
    monkeypatch.delenv("EDGEMINE_CONFIG", raising=False)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception and {m.label: m.value for m in at.metric}["Images"] == str(images)

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


def test_export_page_previews_exports_lists_batches_and_shows_disagreements(app, demo_lake, tmp_path, monkeypatch):
    import json as json_

    from mining.core.config import Config
    from mining.labelling.labels import import_labels

    # Images nobody labelled yet (the session's demo lake is shared: the library's doctests label some).
    ids = [r["image_id"] for r in sql(demo_lake, "SELECT image_id FROM images WHERE image_id NOT IN "
                                                 "(SELECT image_id FROM labels) ORDER BY image_id DESC LIMIT 6")]
    with LakeDB(demo_lake) as db:
        save_set(db, "ui-export", ids, source="test", user="t")
    config = tmp_path / "edgemine.toml"  # where the page may send images: an allow-list, not free text
    config.write_text(f'[ui]\nexport_targets = ["{tmp_path / "out"}"]\nlabel_studio_hosts = ["http://127.0.0.1:9"]\n')
    monkeypatch.setenv("EDGEMINE_CONFIG", str(config))
    open_page(app, "export")
    assert app.selectbox(key="export_target").options == [str(tmp_path / "out"), "http://127.0.0.1:9"]
    app.selectbox(key="export_set").select("ui-export").run()
    assert len(app.image) >= 4 and "6 images from `set:ui-export`" in " ".join(c.value for c in app.caption)
    app.selectbox(key="export_format").select("label-studio").run()
    app.selectbox(key="export_target").select(str(tmp_path / "out")).run()
    app.button(key="export_run").click().run()
    assert not app.exception, app.exception
    assert "6 images as label-studio" in app.success[0].value
    batch = sql(demo_lake, "SELECT DISTINCT batch FROM exports WHERE source = 'set:ui-export'")
    assert (
        len(batch) == 1
        and sql(demo_lake, "SELECT count(*) n FROM exports WHERE batch = $b", {"b": batch[0]["batch"]})[0]["n"] == 6
    )
    app.button(key="export_run").click().run()
    assert "nothing changed" in app.success[0].value

    tasks = json_.loads((tmp_path / "out" / batch[0]["batch"] / "tasks.json").read_text())
    for task in tasks:  # the annotator says every image is a bicycle: the model disagrees almost everywhere
        task["annotations"] = [{"completed_by": 3, "result": [{"type": "choices", "value": {"choices": ["bicycle"]}}]}]
    (tmp_path / "ls.json").write_text(json_.dumps(tasks))
    with LakeDB(demo_lake) as db:
        import_labels(db, str(tmp_path / "ls.json"), fmt="label-studio", config=Config(lake=demo_lake.uri),
                      allow_new_classes=True)
    open_page(app, "review")  # every thumbnail shows its labels, red where the model disagrees
    app.radio(key="review_kind").set_value("Named set").run()
    app.selectbox(key="review_set").select("ui-export").run()
    captions = [c.value for c in app.caption if "labelled" in c.value]
    assert len(captions) == 6 and all(
        (":red[labelled bicycle]" in c) == (not c.startswith("bicycle ")) for c in captions
    )
    open_page(app, "export")
    assert any("vs labels bicycle" in c.value for c in app.caption), (
        [e.value for e in app.error],
        [s.value for s in app.subheader],
        [c.value for c in app.caption][-5:],
    )
    app.selectbox(key="export_target").select("http://127.0.0.1:9").run()
    app.button(key="export_run").click().run()
    assert not app.exception and "needs a project" in app.error[0].value

# -- Queues -> Review ------------------------------------------------------------------
def test_make_a_queue_open_it_in_review_and_see_it_reviewed(app, demo_lake):
    open_page(app, "queues")
    app.selectbox(key="q_sampler").select("least-confidence").run()
    app.text_input(key="q_name").input("ui-low")
    app.number_input(key="q_limit").set_value(12)
    app.selectbox(key="q_opt:least-confidence:pool").select("mean").run()
    app.button(key="make_queue").click().run()
    assert not app.exception and not app.error
    made = sql(
        demo_lake, "SELECT image_id, rank, reason, created_by, params FROM queues WHERE queue = 'ui-low' ORDER BY rank"
    )
    assert len(made) == 12 and made[0]["created_by"] == "alice" and '"pool": "mean"' in made[0]["params"]
    lowest = sql(demo_lake, "SELECT image_id FROM predictions ORDER BY 1 - list_max(map_values(scores)) / "
                            "list_sum(map_values(scores)) DESC, image_id LIMIT 3")
    assert [r["image_id"] for r in made[:3]] == [r["image_id"] for r in lowest]
    assert app.selectbox(key="queue_pick").value == "ui-low"
    listed = app.dataframe[0].value
    assert listed.loc[listed["queue"] == "ui-low", "images"].item() == 12
    assert any("The queue's cut" in c.value for c in app.caption)  # the histogram's cut is marked
    assert app.get("arrow_vega_lite_chart") or app.get("vega_lite_chart")

    app.button(key="open_queue").click().run()
    assert [t.value for t in app.title] == ["Review"]
    open_page(app, "review")
    assert app.radio(key="review_kind").value == "Queue" and app.text_input(key="review_name").value == "ui-low"
    shown = grid_ids(app, "review")
    assert shown == [r["image_id"] for r in made]
    captions = " ".join(c.value for c in app.caption)
    assert "mean of 1 prediction" in captions  # each image's reason under it
    select(app, "review", shown[:2])
    app.button(key="accept_selected").click().run()
    decided = sql(demo_lake, "SELECT image_id, source FROM reviews WHERE review = 'ui-low' ORDER BY image_id")
    assert [r["image_id"] for r in decided] == sorted(shown[:2]) and decided[0]["source"] == "queue:ui-low/1"

    open_page(app, "queues")
    listed = app.dataframe[0].value
    assert listed.loc[listed["queue"] == "ui-low", "reviewed"].item() == 2
    # Made again under the same name: version 2 leaves out the two reviewed images.
    app.selectbox(key="q_sampler").select("least-confidence").run()
    app.text_input(key="q_name").input("ui-low")
    app.number_input(key="q_limit").set_value(12)
    app.button(key="make_queue").click().run()
    again = sql(demo_lake, "SELECT image_id FROM queues WHERE queue = 'ui-low' AND version = 2")
    assert len(again) == 12 and not {r["image_id"] for r in again} & set(shown[:2])


def test_near_duplicate_groups_are_found_and_shown_on_the_queues_page(app, demo_lake):
    open_page(app, "queues")
    app.slider(key="dup_threshold").set_value(0.99).run()
    app.button(key="find_duplicates").click().run()
    assert not app.exception and not app.error
    groups = sql(
        demo_lake, "SELECT group_id, count(*) AS n FROM duplicates GROUP BY group_id ORDER BY n DESC, group_id"
    )
    assert groups and app.success[0].value.startswith(f"{len(groups)} group")
    shown = [c.value for c in app.caption if c.value.startswith("Group of")]
    assert len(shown) == min(5, len(groups))
    assert shown[0].startswith(f"Group of {groups[0]['n']} (first `{groups[0]['group_id'][:8]}`")


def test_a_queue_picked_on_review_names_the_review_until_the_reviewer_types_one(app, demo_lake):
    from mining import make_queue

    with LakeDB(demo_lake) as db:
        for name in ("ui-named-a", "ui-named-b"):
            make_queue(db, "least-confidence", name, limit=3)
    open_page(app, "review")
    app.radio(key="review_kind").set_value("Queue").run()
    app.selectbox(key="review_queue").select("ui-named-a").run()
    assert app.text_input(key="review_name").value == "ui-named-a"
    app.selectbox(key="review_queue").select("ui-named-b").run()  # the name follows the queue
    assert app.text_input(key="review_name").value == "ui-named-b"
    app.text_input(key="review_name").input("my-review").run()
    app.selectbox(key="review_queue").select("ui-named-a").run()  # a typed name stays
    assert app.text_input(key="review_name").value == "my-review"


def test_bad_queue_input_is_an_error_box_and_writes_nothing(app, demo_lake):
    open_page(app, "queues")
    app.selectbox(key="q_sampler").select("margin").run()
    app.text_input(key="q_name").input("ui-bad")
    app.checkbox(key="q_opt:margin:boxes").check().run()
    app.button(key="make_queue").click().run()
    assert not app.exception
    assert [e.value for e in app.error][0].startswith("margin needs per-class scores: detection boxes")
    app.checkbox(key="q_opt:margin:boxes").uncheck().run()
    app.text_input(key="q_where").input("p.camera = 'no-such-camera'")
    app.button(key="make_queue").click().run()
    assert "no predictions in where p.camera = 'no-such-camera'" in app.error[0].value
    assert sql(demo_lake, "SELECT count(*) n FROM queues WHERE queue = 'ui-bad'") == [{"n": 0}]


def test_find_similar_review_loop_marks_pages_counts_and_resumes(app, demo_lake):
    """Mark a page (selected: edge case, the rest: not), the next page leaves out every
    mark, the counter counts, the marks are review decisions, and a new session resumes."""
    open_page(app, "similar")
    edge = [
        r["image_id"] for r in sql(demo_lake, "SELECT image_id FROM demo_truth WHERE is_edge_case ORDER BY image_id")
    ]
    app.text_input(key="seed_ids").input(edge[0])
    app.button(key="seed_ids_add").click().run()
    app.number_input(key="k").set_value(20).run()
    app.text_input(key="loop_review").input("ui-loop").run()
    page = grid_ids(app, "results")
    found = [i for i in page if i in edge]
    select(app, "results", found)
    app.button(key="mark_page").click().run()
    assert not app.exception
    assert app.session_state["positives"] == [edge[0], *found]
    assert sorted(app.session_state["negatives"]) == sorted(i for i in page if i not in found)
    assert not set(grid_ids(app, "results")) & set(page)  # the next page: nothing marked again
    assert [m.value for m in app.metric] == [f"{1 + len(page)} / {1 + len(found)}"]
    saved = sql(demo_lake, "SELECT image_id, decision, reviewer FROM reviews WHERE review = 'ui-loop'")
    assert {r["image_id"]: r["decision"] for r in saved} == {i: "accept" if i in found else "reject" for i in page}
    assert {r["reviewer"] for r in saved} == {"alice"}

    # Another session resumes from the decisions.
    again = AppTest.from_file(APP, default_timeout=120)
    again.run()
    open_page(again, "similar")
    again.text_input(key="seed_ids").input(edge[0])
    again.button(key="seed_ids_add").click().run()
    again.text_input(key="loop_review").input("ui-loop").run()
    again.button(key="resume_loop").click().run()
    assert not again.exception
    assert set(again.session_state["positives"]) == {edge[0], *found}
    assert set(again.session_state["negatives"]) == set(page) - set(found)
# -- Metrics (issue 16) -----------------------------------------------------------------------
def test_metrics_page_shows_regressions_drift_and_cards(tmp_path, monkeypatch):
    """A small lake of its own (two versions, a regression on cam-3): the page computes metrics
    and drift, marks the regression, writes a card, and opens a flagged window as a queue."""
    from tests.test_metrics import build_two_versions

    lake = build_two_versions(tmp_path / "lake")["lake"]
    config = tmp_path / "config.toml"
    config.write_text(
        "[metrics]\nmargin = 0.05\n[drift]\nreference_windows = 1\ndistance_threshold = 0.0\nalpha = 1.0\n"
    )
    monkeypatch.setenv("EDGEMINE_LAKE", lake.uri)
    monkeypatch.setenv("EDGEMINE_CONFIG", str(config))
    monkeypatch.setenv("EDGEMINE_USER", "alice")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    open_page(at, "metrics")
    assert [i.value for i in at.info][:1] == ["No metrics yet: press the button above, or run `edgemine metrics` "
                                              "(labels first: `edgemine labels import`)."]
    at.button(key="metrics_run").click().run()
    assert not at.exception
    assert "Regressions (in red): v2 on camera=cam-3" in [e.value for e in at.error]
    table = at.dataframe[0].value
    assert set(table.columns) >= {"v1", "v2", "n"} and table.loc["camera=cam-3", "v2"] < table.loc["camera=cam-3", "v1"]
    assert (
        sql(lake, "SELECT count(*) n FROM drift WHERE flagged")[0]["n"] > 0
    )  # threshold 0, alpha 1: every change flags
    at.button(key="card_write").click().run()
    assert any("# Model card: v2" in m.value for m in at.markdown)
    at.button(key="drift_open").click().run()
    assert not at.exception
    assert sql(lake, "SELECT count(DISTINCT queue) n FROM queues WHERE queue LIKE 'drift-%'")[0]["n"] == 1


def test_after_the_demo_the_queues_and_metrics_pages_show_its_round(demo_lake_with_round, monkeypatch):
    """`edgemine demo` brings back a labelling round: the Queues page lists its queues and shows
    one, the Metrics page its metrics per slice, regression alarms and drift, not the empty states."""
    lake = demo_lake_with_round
    monkeypatch.setenv("EDGEMINE_LAKE", lake.uri)
    monkeypatch.setenv("EDGEMINE_USER", "alice")
    monkeypatch.delenv("EDGEMINE_CONFIG", raising=False)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    open_page(at, "queues")
    assert not at.exception and not at.info  # not "No queue yet"
    made = {r["queue"]: r["n"] for r in sql(lake, "SELECT queue, count(*) n FROM queues WHERE queue LIKE 'demo-%' "
                                                  "GROUP BY queue")}
    assert set(made) == {"demo-least-confidence", "demo-novelty"}  # (the shared lake may hold other tests' queues)
    listed = dict(zip(at.dataframe[0].value["queue"], at.dataframe[0].value["images"]))
    assert {q: listed[q] for q in made} == made
    at.selectbox(key="queue_pick").select("demo-novelty").run()
    shown = at.dataframe[1].value  # the queue picked, rank by rank, each image's reason
    assert len(shown) == made["demo-novelty"] and list(shown["rank"][:3]) == [1, 2, 3]
    assert shown["reason"][0].startswith("cosine distance")

    open_page(at, "metrics")
    assert not at.exception and not at.info  # not "No metrics yet", not "No drift computed yet"
    table = at.dataframe[0].value  # accuracy per slice and model version
    stored = {r["model_version"]: r["value"] for r in sql(
        lake, "SELECT model_version, value FROM metrics WHERE slice = 'all' AND metric = 'accuracy'")}
    assert set(stored) == {"v1", "v2"} and table.loc["all", "v1"] == pytest.approx(stored["v1"])
    assert len(table) > 10  # automatic slices: camera, region, time of day, ...
    alarms = sql(lake, "SELECT count(*) n FROM alarms")[0]["n"]
    assert [e.label for e in at.expander if e.label.startswith("Every regression alarm")] == (
        [f"Every regression alarm ({alarms})"] if alarms else [])
    assert "Drift over time" in [h.value for h in at.subheader]
    flagged = sql(lake, "SELECT count(DISTINCT window_start) n FROM drift WHERE flagged")[0]["n"]
    if flagged:
        assert len(at.selectbox(key="drift_window").options) == flagged
    else:
        assert "No window flagged." in [s.value for s in at.success]


def test_metrics_page_opens_what_a_retrain_forgot_and_shows_models(tmp_path, monkeypatch):
    """v2 against v1 (the version before it) as a `forgotten` queue in Review; a trained model's curves."""
    from mining.evaluation.models import publish_model
    from tests.test_metrics import build_two_versions

    lake = build_two_versions(tmp_path / "lake")["lake"]
    record = {"version": "v2", "backbone": "resnet18", "base": "model:v1", "classes": ["a", "b"], "image_size": 64,
              "data": {"train_images": 10, "val_images": 2}, "best_epoch": 2, "best_val_accuracy": 0.5,
              "curves": {"epoch": [1, 2], "train_loss": [1.0, 0.7], "val_loss": [1.1, 0.9], "val_accuracy": [0.4, 0.5],
                         "lr": [1e-3, 5e-4], "seconds": [1.0, 1.0]}}
    publish_model(lake, record, b"not a real checkpoint", user="alice")
    monkeypatch.setenv("EDGEMINE_LAKE", lake.uri)
    monkeypatch.setenv("EDGEMINE_USER", "alice")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    open_page(at, "metrics")
    assert at.selectbox(key="forgotten_new").value == "v2" and at.selectbox(key="forgotten_old").value == "v1"
    assert at.selectbox(key="model_curves").value == "v2"
    charts = at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    assert len(charts) == 2  # loss, and validation accuracy, per epoch (no metrics computed yet: no other chart)
    at.button(key="forgotten_open").click().run()
    assert not at.exception
    expected = sql(
        lake,
        """WITH t AS (SELECT image_id, label FROM labels),
        p AS (SELECT image_id, model_version, label FROM predictions)
        SELECT count(*) n FROM t JOIN p a ON a.image_id = t.image_id AND a.model_version = 'v2'
        JOIN p b ON b.image_id = t.image_id AND b.model_version = 'v1'
        WHERE a.label <> t.label AND b.label = t.label""",
    )[0]["n"]
    got = sql(lake, "SELECT count(*) n FROM queues WHERE queue = 'forgotten-v2-vs-v1'")[0]["n"]
    assert got == expected > 0
