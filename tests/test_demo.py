from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from jobs import demo_data
from jobs.demo import ROUND_ANNOTATOR, ROUND_BATCH, ROUND_EDGE_SHARE, ROUND_MIN_IMAGES, ROUND_SHARE, run_demo
from mining.core.config import Config, DemoConfig, EmbedConfig
from mining.core.lake import Lake
from mining.core.sql import LakeDB


def demo_config(lake, images: int, seed: int = 3, workers: int = 1) -> Config:
    return Config(
        lake=lake.uri,
        s3=lake.s3,
        demo=replace(DemoConfig(), images=images, seed=seed, workers=workers),
        embed=replace(EmbedConfig(), workers=workers),
    )


def query(lake, sql):
    with LakeDB(lake) as db:
        return db.query(sql).to_pylist()


@pytest.fixture(scope="module")
def local_demo(tmp_path_factory) -> tuple[Lake, dict]:
    """A demo lake of 260 images built with one worker, and its summary: locally past image
    250, where the demo writes its one bad prediction line (one per 500 images), and two
    render chunks of 250. Built once for the tests below that only read it."""
    lake = Lake(str(tmp_path_factory.mktemp("demo") / "lake"))
    return lake, run_demo(demo_config(lake, 260, workers=1), show_progress=False).to_dict()


@pytest.mark.model  # local_demo is embedded by one
def test_demo_builds_a_consistent_lake(local_demo):
    lake, summary = local_demo
    assert_consistent(lake, summary, images=260, bad_rows=1)


# The README's `edgemine demo --lake s3://...`: the same lake, small.
@pytest.mark.parametrize("lake", ["s3"], indirect=True)
def test_demo_builds_a_consistent_lake_on_s3(lake):
    summary = run_demo(demo_config(lake, 40), show_progress=False).to_dict()
    assert_consistent(lake, summary, images=40, bad_rows=0)


def assert_consistent(lake: Lake, summary: dict, *, images: int, bad_rows: int) -> None:
    """Every step's rows join up, and a rerun of the same demo adds nothing."""
    assert summary["images"]["registered"] == images and summary["images"]["errors"] == 1  # the corrupt file
    assert summary["predictions"]["rows"]["predictions"] == images
    assert summary["predictions"]["errors"] == bad_rows
    assert summary["demo_truth"] == images
    assert summary["errors"] == 1 + bad_rows  # every step's refusals, counted once
    assert summary["round"]["labels"] > 0 and summary["round"]["skipped"] is None  # the labelling round, on any storage
    # Every prediction joins an image and its ground truth.
    joined = query(
        lake, "SELECT count(*) n FROM predictions p JOIN images USING (image_id) JOIN demo_truth USING (image_id)"
    )
    assert joined == [{"n": images}]
    assert query(lake, "SELECT count(*) n FROM detections")[0]["n"] >= images
    # Every image is embedded (offline: seeded random weights) and has a thumbnail.
    assert summary["embeddings"]["embedded"] == images and summary["embeddings"]["weights"] == "random-seed0"
    embedded = "SELECT count(*) n FROM images JOIN embeddings USING (image_id) JOIN thumbnails USING (image_id)"
    assert query(lake, embedded) == [{"n": images}]

    again = run_demo(demo_config(lake, images), show_progress=False).to_dict()
    assert again["generated"] is False and again["images"]["registered"] == 0
    assert again["predictions"]["skipped"] == 1
    assert again["embeddings"]["embedded"] == 0 and again["embeddings"]["already_embedded"] == images
    assert query(lake, "SELECT count(*) n FROM predictions") == [{"n": images}]
    assert again["round"]["labels"] == 0 and again["round"]["labels_already"] == summary["round"]["labels"]


def test_demo_is_deterministic_whatever_the_workers(local_demo, tmp_path):
    one, _ = local_demo  # built with one worker
    two = Lake(str(tmp_path / "two"))
    run_demo(demo_config(two, 260, workers=2), show_progress=False)
    sql = "SELECT image_id, label, confidence FROM predictions ORDER BY image_id"
    assert query(one, sql) == query(two, sql)
    vectors = "SELECT image_id, embedding FROM embeddings ORDER BY image_id"
    a, b = query(one, vectors), query(two, vectors)
    assert [r["image_id"] for r in a] == [r["image_id"] for r in b] and len(a) == 260  # two render chunks of 250
    assert np.abs(np.array([r["embedding"] for r in a]) - np.array([r["embedding"] for r in b])).max() < 1e-5


def test_simulated_model_is_worse_on_hard_conditions_and_often_confidently_wrong_on_glare():
    rng_rows = []
    for index in range(6000):
        rng = demo_data.scene_rng(11, index)
        scene = demo_data.sample_scene(rng, index, 64, 48, edge_case_rate=0.05)
        p = demo_data.simulate_prediction(scene, rng)
        rng_rows.append((scene, p))
    def mean_conf(keep):
        return np.mean([p["confidence"] for s, p in rng_rows if keep(s)])
    easy = mean_conf(lambda s: s.time_of_day == "day" and s.weather == "clear" and not s.glare)
    assert mean_conf(lambda s: s.weather == "fog") < easy - 0.05
    assert mean_conf(lambda s: s.time_of_day == "night") < easy - 0.05
    glare = [(s, p) for s, p in rng_rows if s.glare]
    assert 0.03 < len(glare) / len(rng_rows) < 0.07
    wrong = [p for s, p in glare if p["label"] != s.true_label]
    assert len(wrong) / len(glare) > 0.5
    confidently_wrong = [p for p in wrong if p["confidence"] > 0.8]
    assert len(confidently_wrong) / len(wrong) > 0.4  # low-confidence review alone misses these


def test_glare_images_look_different():
    """The edge case must be visible in the pixels, or no embedding can find it."""
    def brightness(glare: bool) -> float:
        values = []
        for index in range(40):
            rng = demo_data.scene_rng(5, index)
            scene = demo_data.sample_scene(rng, index, 96, 72, edge_case_rate=0.0)
            scene.glare = glare
            values.append(np.asarray(demo_data.draw_scene(scene, rng, 96, 72)).mean())
        return float(np.mean(values))
    assert brightness(True) > brightness(False) + 20


@pytest.mark.parametrize("images", [1, 7])
def test_tiny_demo(tmp_path, images):
    from mining.core.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    summary = run_demo(demo_config(lake, images), show_progress=False).to_dict()
    assert summary["predictions"]["rows"]["predictions"] == images
    assert summary["round"]["skipped"] == f"{images} images: a labelling round needs at least {ROUND_MIN_IMAGES}"


ROUND_TABLES = ("labels", "queues", "metrics", "alarms", "drift")


def round_rows(lake) -> dict[str, int]:
    """Rows of each table the labelling round writes (each run's appends included)."""
    return {t: query(lake, f"SELECT count(*) n FROM {t}")[0]["n"] for t in ROUND_TABLES}


def test_demo_labelling_round_fills_labels_queues_metrics_and_drift_exactly_once(tmp_path):
    from mining.core.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    config = demo_config(lake, 60)
    off = run_demo(replace(config, demo=replace(config.demo, round=False)), show_progress=False).to_dict()
    assert off["round"]["skipped"].startswith("off") and off["round"]["labels"] == 0 and not off["round"]["queues"]
    assert round_rows(lake) == dict.fromkeys(ROUND_TABLES, 0)

    summary = run_demo(config, show_progress=False).to_dict()  # the round switched on later: nothing else redone
    made = summary["round"]
    assert summary["generated"] is False and summary["embeddings"]["embedded"] == 0
    assert made["skipped"] is None and made["errors"] == 0 and made["batch"] == ROUND_BATCH

    # Labels: the truth's, by the demo's annotator, for a quarter of the ordinary images and half of the edge cases.
    labels = query(lake, "SELECT l.label, l.annotator, l.batch, l.box, l.format, t.true_label, t.is_edge_case "
                         "FROM labels l LEFT JOIN demo_truth t USING (image_id)")
    assert len(labels) == made["labels"] > 0
    assert all(r["label"] == r["true_label"] and r["annotator"] == ROUND_ANNOTATOR and r["batch"] == ROUND_BATCH
               and r["box"] is None and r["format"] == "label-studio" for r in labels)
    kinds = query(lake, "SELECT is_edge_case, count(*) n FROM demo_truth GROUP BY ALL")
    expected = {r["is_edge_case"]: max(1, round((ROUND_EDGE_SHARE if r["is_edge_case"] else ROUND_SHARE) * r["n"]))
                for r in kinds}
    assert {e: sum(r["is_edge_case"] == e for r in labels) for e in expected} == expected
    assert query(lake, f"SELECT count(DISTINCT image_id) n FROM labelled WHERE batch = '{ROUND_BATCH}'") == [
        {"n": made["labels"]}]  # imported as any label file is: the labelled view sees them

    # Queues of the lake's images; the novelty queue holds none of the labelled ones.
    queues = query(lake, "SELECT queue, count(*) n, count(i.image_id) known FROM queues q "
                         "LEFT JOIN images i USING (image_id) GROUP BY queue")
    assert {r["queue"]: r["n"] for r in queues} == made["queues"] and set(made["queues"]) == {
        "demo-least-confidence", "demo-novelty"}
    assert all(r["known"] == r["n"] > 0 for r in queues)
    assert query(lake, "SELECT count(*) n FROM queues WHERE queue = 'demo-novelty' AND image_id IN "
                       "(SELECT image_id FROM labels)") == [{"n": 0}]

    # Metrics of each model version on slice all: the accuracy of its predictions on the labelled images.
    accuracy = query(lake, "SELECT model_version, value, n FROM metrics WHERE slice = 'all' AND metric = 'accuracy' "
                           "ORDER BY model_version")
    truth = query(lake, "SELECT p.model_version, avg((p.label = t.true_label)::DOUBLE) AS value, count(*) AS n "
                        "FROM labels l JOIN predictions p USING (image_id) JOIN demo_truth t USING (image_id) "
                        "GROUP BY ALL ORDER BY model_version")
    assert [r["model_version"] for r in accuracy] == [r["model_version"] for r in truth] == ["v1", "v2"]
    assert [r["n"] for r in accuracy] == [r["n"] for r in truth]
    assert [r["value"] for r in accuracy] == pytest.approx([r["value"] for r in truth])
    assert round_rows(lake) == {"labels": made["labels"], "queues": sum(made["queues"].values()),
                                "metrics": made["metrics"], "alarms": made["alarms"], "drift": made["drift"]}
    assert made["drift"] > 0
    assert query(lake, "SELECT count(*) n FROM drift WHERE flagged") == [{"n": made["drift_flagged"]}]

    again = run_demo(config, show_progress=False).to_dict()["round"]  # exactly once: a rerun adds nothing
    assert again["labels"] == 0 and again["labels_already"] == made["labels"]
    assert (again["queues"], again["metrics"], again["alarms"], again["drift"]) == ({}, 0, 0, 0)
    assert round_rows(lake) == {"labels": made["labels"], "queues": sum(made["queues"].values()),
                                "metrics": made["metrics"], "alarms": made["alarms"], "drift": made["drift"]}


# -- issue 15: more kinds of edge case -------------------------------------------------
OTHER_KINDS = [k for k in demo_data.EDGE_KINDS if k != "glare"]


def sample_kind(kind: str, n: int, rate: float, seed: int = 2):
    scenes = []
    for index in range(n):
        rng = demo_data.scene_rng(seed, index)
        scene = demo_data.sample_scene(rng, index, 64, 48, edge_case_rate=rate, kind=kind)
        scenes.append((scene, demo_data.simulate_prediction(scene, rng)))
    return scenes


@pytest.mark.parametrize("kind", demo_data.EDGE_KINDS)
def test_each_kind_hides_its_edge_case_at_the_configured_rate(kind):
    for rate in (0.01, 0.05):
        scenes = sample_kind(kind, 1500, rate)
        edge = [s for s, _ in scenes if s.is_edge_case]
        assert abs(len(edge) / len(scenes) - rate) < 0.4 * rate + 0.004
        assert {s.edge_kind for s in edge} == {kind}
        assert all(s.edge_kind is None for s, _ in scenes if not s.is_edge_case)
    what = {  # what makes each kind that kind
        "glare": lambda s: s.glare,
        "unseen_class": lambda s: s.true_label == demo_data.UNSEEN_CLASS,
        "new_camera": lambda s: s.camera == demo_data.NEW_CAMERA,
        "snow": lambda s: s.weather == "snow",
        "small_occluded": lambda s: s.size == "tiny" and s.occluded,
    }[kind]
    assert all(what(s) for s in edge) and not any(what(s) for s, _ in scenes if not s.is_edge_case)
    # The simulated model never answers with a class it does not have, and it is worse on the edge case.
    assert all(p["label"] in demo_data.CLASSES for _, p in scenes)
    right = np.mean([p["label"] == s.true_label for s, p in scenes if not s.is_edge_case])
    assert np.mean([p["label"] == s.true_label for s, p in scenes if s.is_edge_case]) < right - 0.1


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_each_kind_is_deterministic_and_leaves_the_other_images_as_glare_lakes_have_them(kind):
    a, b = sample_kind(kind, 300, 0.05), sample_kind(kind, 300, 0.05)
    assert [(s.true_label, s.camera, p["confidence"]) for s, p in a] == [
        (s.true_label, s.camera, p["confidence"]) for s, p in b
    ]
    glare = sample_kind("glare", 300, 0.05)
    for (s, p), (g, q) in zip(a, glare):
        assert s.is_edge_case == g.is_edge_case  # the same images are the edge case, whatever the kind
        if not s.is_edge_case:
            assert p == q


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_each_kind_is_visible_in_the_pixels(kind):
    """The edge case must change the image, or no embedding can find it."""
    changed = []
    for index in range(12):
        plain = demo_data.sample_scene(demo_data.scene_rng(4, index), index, 96, 72, edge_case_rate=0.0)
        rng = demo_data.scene_rng(4, index)
        edge = demo_data.sample_scene(rng, index, 96, 72, edge_case_rate=1.0, kind=kind)
        a = np.asarray(demo_data.draw_scene(plain, demo_data.scene_rng(9, index), 96, 72), np.float32)
        b = np.asarray(demo_data.draw_scene(edge, demo_data.scene_rng(9, index), 96, 72), np.float32)
        changed.append(np.abs(a - b).mean())
    assert np.mean(changed) > 8


def test_demo_kind_is_selectable_and_written_to_the_truth(tmp_path):
    from mining.core.errors import ConfigError
    from mining.core.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    config = demo_config(lake, 40)
    config = replace(config, demo=replace(config.demo, kind="snow", edge_case_rate=0.2))
    run_demo(config, show_progress=False)
    rows = query(lake, "SELECT is_edge_case, edge_kind, weather, count(*) n FROM demo_truth GROUP BY ALL")
    edge = [r for r in rows if r["is_edge_case"]]
    assert edge and all(r["edge_kind"] == "snow" and r["weather"] == "snow" for r in edge)
    assert all(r["edge_kind"] is None and r["weather"] != "snow" for r in rows if not r["is_edge_case"])
    with pytest.raises(ConfigError, match="unknown demo kind 'rain'.*small_occluded"):
        run_demo(replace(config, demo=replace(config.demo, kind="rain")), show_progress=False)
