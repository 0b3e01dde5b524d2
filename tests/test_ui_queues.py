"""The Queues page and the Review page's Queue source, driven by AppTest on the demo lake;
what the UI writes is checked in the lake through SQL."""

from __future__ import annotations

from tests.helpers import rows as sql
from tests.test_ui import app, grid_ids, open_page, select  # noqa: F401 (app is a fixture)


def test_make_a_queue_open_it_in_review_and_see_it_reviewed(app, demo_lake):
    open_page(app, "queues")
    app.selectbox(key="q_sampler").select("least-confidence").run()
    app.text_input(key="q_name").input("ui-low")
    app.number_input(key="q_limit").set_value(12)
    app.selectbox(key="q_opt:least-confidence:pool").select("mean").run()
    app.button(key="make_queue").click().run()
    assert not app.exception and not app.error
    made = sql(demo_lake, "SELECT image_id, rank, reason, created_by, params FROM queues WHERE queue = 'ui-low' ORDER BY rank")
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
