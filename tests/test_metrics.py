"""Slices, metrics per slice and model version, regression alarms (mining/evaluation/slices.py,
mining/evaluation/metrics.py, `edgemine slice|metrics`): checked against scikit-learn on the same rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from jobs.cli import main
from mining.core import tables
from mining.core.config import Config, MetricsConfig, MiningConfig
from mining.core.errors import SliceError
from mining.core.lake import Lake
from mining.core.schema import IMAGES, LABELS, PREDICTIONS, make_rows
from mining.core.sql import LakeDB
from mining.evaluation.metrics import (
    by_version,
    check_regressions,
    compute_metrics,
    disagreements,
    model_versions,
    run_metrics,
    stored_alarms,
    stored_metrics,
)
from mining.evaluation.slices import add_slice, all_slices, find_slices, frame_ctes
from tests.helpers import image_ids

CLASSES = ["car", "person", "truck"]
CAMERAS = ["cam-0", "cam-1", "cam-2", "cam-3"]
START = datetime(2026, 10, 1, tzinfo=UTC)


def write_images(lake: Lake, ids: list[str]) -> None:
    rows = make_rows(IMAGES, len(ids), image_id=ids, uri=[f"mem://{i}.jpg" for i in ids], width=640, height=480,
                     ingested_at=START)
    tables.append(lake, IMAGES, rows, tables.commit_info("test"))


def write_predictions(lake: Lake, ids: list[str], version: str, labels: list[str], confidence: np.ndarray,
                      cameras: list[str], ingested_at: datetime) -> None:
    ts = [START + timedelta(hours=i % 72) for i in range(len(ids))]
    rows = make_rows(PREDICTIONS, len(ids), prediction_id=[f"{version}-{i}" for i in ids], image_id=ids,
                     model_version=version, ts=ts, label=labels, confidence=confidence.astype(np.float32),
                     ingested_at=ingested_at, date=[t.date() for t in ts])
    rows = rows.append_column("camera", pa.array(cameras))
    tables.append(lake, PREDICTIONS, rows, tables.commit_info("test"))


def write_labels(lake: Lake, ids: list[str], labels: list[str], *, annotator: str = "ana", batch: str = "b1",
                 at: datetime = START, boxes: list | None = None) -> None:
    rows = make_rows(LABELS, len(ids), label_id=[f"{annotator}-{batch}-{i}-{k}" for k, i in enumerate(ids)],
                     image_id=ids, label=labels, box=boxes, annotator=annotator, batch=batch, format="coco",
                     labelled_at=at)
    tables.append(lake, LABELS, rows, tables.commit_info("test"))


@pytest.fixture
def two_versions(tmp_path) -> dict:
    return build_two_versions(tmp_path / "lake")


def build_two_versions(path) -> dict:
    """2,000 labelled images, v1 then v2: v2 equals v1 except on cam-3 (15% of images), where
    30% of the images v1 had right are wrong in v2 (an injected regression on one slice)."""
    rng = np.random.default_rng(3)
    n = 2000
    lake = Lake(str(path))
    ids = image_ids(n)
    truth = [CLASSES[i] for i in rng.integers(0, 3, n)]
    cameras = [CAMERAS[i] for i in rng.choice(4, n, p=[0.3, 0.3, 0.25, 0.15])]
    wrong = lambda label: CLASSES[(CLASSES.index(label) + 1) % 3]  # noqa: E731
    v1 = [t if rng.random() < 0.8 else wrong(t) for t in truth]
    v2 = [wrong(t) if c == "cam-3" and p == t and rng.random() < 0.3 else p for t, p, c in zip(truth, v1, cameras)]
    conf1, conf2 = rng.uniform(0.3, 1, n), rng.uniform(0.3, 1, n)
    write_images(lake, ids)
    write_predictions(lake, ids, "v1", v1, conf1, cameras, START)
    write_predictions(lake, ids, "v2", v2, conf2, cameras, START + timedelta(days=5))
    write_labels(lake, ids, truth)
    return {"lake": lake, "ids": ids, "truth": truth, "cameras": cameras, "v1": v1, "v2": v2,
            "conf": {"v1": conf1.astype(np.float32), "v2": conf2.astype(np.float32)}}


def metric(rows: pa.Table, version: str, slice_: str, name: str, label: str | None = None) -> tuple:
    found = [(r["value"], r["n"]) for r in rows.to_pylist() if (r["model_version"], r["slice"], r["metric"], r["label"])
             == (version, slice_, name, label)]
    assert len(found) == 1, (version, slice_, name, label)
    return found[0]


def test_metrics_per_slice_match_scikit_learn(two_versions):
    d = two_versions
    with LakeDB(d["lake"]) as db:
        assert model_versions(db) == ["v1", "v2"]
        slices = find_slices(all_slices(db), ["all", "camera=cam-3", "camera=cam-0"])
        rows = compute_metrics(db, slices)
    for version in ("v1", "v2"):
        for name, keep in (("all", lambda c: True), ("camera=cam-3", lambda c: c == "cam-3"),
                           ("camera=cam-0", lambda c: c == "cam-0")):
            m = [keep(c) for c in d["cameras"]]
            y = np.array(d["truth"])[m]
            yhat = np.array(d[version])[m]
            assert metric(rows, version, name, "accuracy") == pytest.approx((accuracy_score(y, yhat), len(y)), abs=1e-6)
            p, r, f, support = precision_recall_fscore_support(y, yhat, labels=CLASSES, zero_division=np.nan)
            for k, c in enumerate(CLASSES):
                assert metric(rows, version, name, "precision", c)[0] == pytest.approx(p[k], abs=1e-6)
                assert metric(rows, version, name, "recall", c) == pytest.approx((r[k], support[k]), abs=1e-6)
                assert metric(rows, version, name, "f1", c)[0] == pytest.approx(f[k], abs=1e-6)
            macro = precision_recall_fscore_support(y, yhat, average="macro", zero_division=np.nan)
            for k, what in enumerate(("precision", "recall", "f1")):
                assert metric(rows, version, name, what, "macro")[0] == pytest.approx(macro[k], abs=1e-6)
            cm = confusion_matrix(y, yhat, labels=CLASSES)
            for i, a in enumerate(CLASSES):
                for j, b in enumerate(CLASSES):
                    if cm[i, j]:
                        assert metric(rows, version, name, "confusion", f"{a}->{b}")[0] == cm[i, j]
            conf = d["conf"][version][m].astype(np.float64)
            bins = np.minimum(np.floor(conf * 15), 14).astype(int)
            correct = y == yhat
            ece = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).sum()
                      for b in range(15) if (bins == b).any()) / len(y)
            assert metric(rows, version, name, "ece")[0] == pytest.approx(ece, abs=1e-6)


def test_an_injected_regression_on_one_slice_raises_exactly_that_alarm(two_versions):
    with LakeDB(two_versions["lake"]) as db:
        slices = all_slices(db)
        report = check_regressions(db, slices, config=MetricsConfig(margin=0.05))
        assert (report.model_version, report.baseline) == ("v2", "v1")
        assert report.checked > 10
        assert {a["slice"] for a in report.alarms} == {"camera=cam-3"}
        accuracy = [a for a in report.alarms if a["metric"] == "accuracy"]
        assert len(accuracy) == 1 and accuracy[0]["drop"] > 0.15 and accuracy[0]["ci_high"] < 0
        recorded = db.query("SELECT DISTINCT slice FROM alarms").column("slice").to_pylist()
        assert recorded == ["camera=cam-3"]
        # v1 against itself, and v2 with a margin above the drop: nothing
        assert check_regressions(db, slices, "v1", "v1", record=False).alarms == []
        assert check_regressions(db, slices, config=MetricsConfig(margin=0.5), record=False).alarms == []


def test_truth_is_the_newest_labelling_rounds_majority(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    ids = image_ids(3)
    write_images(lake, ids)
    write_predictions(lake, ids, "v1", ["car"] * 3, np.full(3, 0.9), ["cam-0"] * 3, START)
    # image 0: round 1 says car (2 of 3), a later round says truck: truck
    write_labels(lake, [ids[0]] * 3, ["car", "car", "person"], annotator="r1")
    write_labels(lake, [ids[0]], ["truck"], annotator="r2", batch="b2", at=START + timedelta(days=1))
    # image 1: three annotators at once, person twice: person; image 2: a tie goes to the first alphabetically
    for k, label in enumerate(["person", "car", "person"]):
        write_labels(lake, [ids[1]], [label], annotator=f"a{k}")
    write_labels(lake, [ids[2], ids[2]], ["person", "car"], annotator="tie")
    with LakeDB(lake) as db:
        truth = {r["image_id"]: r["true_label"]
                 for r in db.query(f"WITH {frame_ctes()} SELECT image_id, true_label FROM truth").to_pylist()}
        assert truth == {ids[0]: "truck", ids[1]: "person", ids[2]: "car"}
        names = [s.name for s in all_slices(db)]
        assert "batch=b1" in names and "batch=b2" in names  # each labelled addition is a slice
        rows = compute_metrics(db, find_slices(all_slices(db), ["all", "batch=b2"]))
    assert metric(rows, "v1", "all", "accuracy") == (pytest.approx(1 / 3), 3)  # only image 2 is a car
    assert metric(rows, "v1", "batch=b2", "accuracy") == (0.0, 1)


def test_bad_input_says_what_to_do(two_versions, tmp_path):
    with LakeDB(two_versions["lake"]) as db:
        slices = all_slices(db)
        with pytest.raises(SliceError, match="v9 have no predictions in the lake; versions: v1, v2"):
            compute_metrics(db, slices, ["v9"])
        with pytest.raises(SliceError, match=r"slice 'oops': invalid SQL `p.nope > 1`"):
            add_slice(db, "oops", "p.nope > 1", user="t")
        assert add_slice(db, "empty", "p.camera = 'cam-9'", user="t") == 0
        rows = compute_metrics(db, find_slices(all_slices(db), ["empty"]))
        assert metric(rows, "v1", "empty", "accuracy") == (None, 0)  # n=0: NULL, not NaN
        assert not any(isinstance(v, float) and np.isnan(v) for v in rows.column("value").to_pylist())
    empty = Lake(str(tmp_path / "nolabels"))
    write_images(empty, image_ids(2))
    write_predictions(empty, image_ids(2), "v1", ["car", "car"], np.full(2, 0.5), ["cam-0"] * 2, START)
    with LakeDB(empty) as db, pytest.raises(SliceError, match="no labels.*labels import"):
        compute_metrics(db, all_slices(db))


def test_cli_slices_metrics_and_fail_on_regression(two_versions, capsys, tmp_path):
    lake = two_versions["lake"].uri
    config = tmp_path / "config.toml"
    config.write_text('[slices]\nmorning = "hour(p.ts) < 12"\n[metrics]\nmargin = 0.05\n')
    common = ["--lake", lake, "--config", str(config), "--quiet"]
    assert main(["slice", "add", "cam3", "p.camera = 'cam-3'", *common]) == 0
    assert main(["slice", "add", "bad", "nope(", *common]) == 2
    assert "slice 'bad': invalid SQL" in capsys.readouterr().err
    assert main(["slice", "list", "--json", *common]) == 0
    listed = {r["name"]: r["kind"] for r in json.loads(capsys.readouterr().out)}
    assert listed["cam3"] == "saved" and listed["morning"] == "config" and listed["camera=cam-3"] == "auto"
    assert main(["slice", "show", "cam3", "--json", *common]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (
        shown["images"] == two_versions["cameras"].count("cam-3")
        and sum(r["images"] for r in shown["labels"]) == shown["images"]
    )
    assert main(["metrics", "--slice", "all", "cam3", "--json", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["slice"] for r in out["metrics"]} == {"all", "cam3"} and out["regressions"]["alarms"]
    assert main(["metrics", "--slice", "all", "cam3", "--fail-on-regression", *common]) == 3
    assert "REGRESSION" in capsys.readouterr().out
    assert main(["metrics", "--slice", "all", "--fail-on-regression", *common]) == 0
    with LakeDB(two_versions["lake"]) as db:
        runs = db.query("SELECT count(DISTINCT computed_at) AS n FROM raw.metrics").column("n")[0].as_py()
    assert runs == 3


def test_model_card_has_the_papers_sections_and_the_previous_version_beside(two_versions, tmp_path, capsys):
    lake = two_versions["lake"].uri
    common = ["--lake", lake, "--quiet"]
    assert main(["metrics", "--slice", "all", "camera=cam-3", *common, "--config", str(margin(tmp_path))]) == 0
    out = tmp_path / "card" / "v2.html"
    assert main(["card", "v2", "--output", str(out), *common]) == 0
    page = out.read_text()
    for title in ("Model details", "Intended use", "Factors", "Metrics", "Training data",
                  "Evaluation data and quantitative analyses", "Known regressions", "Drift at release",
                  "Ethical considerations", "Caveats and recommendations"):
        assert f"<h2>{title}</h2>" in page
    capsys.readouterr()
    assert main(["card", "v2", *common]) == 0
    text = capsys.readouterr().out
    evaluation = text.split("## Evaluation data", 1)[1].split("## Known regressions", 1)[0]
    assert "| camera=cam-3 | accuracy |" in evaluation and "previous` is v1" in evaluation
    regressions = text.split("## Known regressions", 1)[1].split("## Drift", 1)[0]
    assert "camera=cam-3" in regressions and "| all |" not in regressions
    with LakeDB(two_versions["lake"]) as db:
        from mining.evaluation.cards import read_card

        assert read_card(db, "v2") == text
    assert main(["card", "v9", *common]) == 2


def margin(tmp_path):
    path = tmp_path / "margin.toml"
    path.write_text("[metrics]\nmargin = 0.05\n")
    return path


def test_versions_on_different_images_are_compared_unpaired(tmp_path):
    """A new version serving new traffic: v2 predicts other images than v1; its drop on cam-1 is found."""
    rng = np.random.default_rng(8)
    lake = Lake(str(tmp_path / "lake"))
    ids = image_ids(1600)
    truth = [CLASSES[i] for i in rng.integers(0, 3, 1600)]
    cameras = [CAMERAS[i % 2] for i in range(1600)]
    right = lambda k, p: truth[k] if rng.random() < p else CLASSES[(CLASSES.index(truth[k]) + 1) % 3]  # noqa: E731
    write_images(lake, ids)
    write_labels(lake, ids, truth)
    write_predictions(lake, ids[:800], "v1", [right(k, 0.85) for k in range(800)], rng.uniform(0.3, 1, 800),
                      cameras[:800], START)
    write_predictions(
        lake,
        ids[800:],
        "v2",
        [right(k, 0.85 if cameras[k] == "cam-0" else 0.6) for k in range(800, 1600)],
        rng.uniform(0.3, 1, 800),
        cameras[800:],
        START + timedelta(days=1),
    )
    with LakeDB(lake) as db:
        report = check_regressions(db, find_slices(all_slices(db), ["camera=cam-0", "camera=cam-1"]),
                                   config=MetricsConfig(margin=0.1), record=False)
    assert {(a["slice"], a["metric"]) for a in report.alarms} >= {("camera=cam-1", "accuracy")}
    assert {a["slice"] for a in report.alarms} == {"camera=cam-1"} and not any(a["paired"] for a in report.alarms)


def test_detection_map_matches_pycocotools_run_directly(tmp_path):
    """COCO mAP per slice: the lake's boxes (newest labels, newest prediction's detections) through
    mining, against COCOeval run here on the same boxes."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from mining.core.schema import DETECTIONS

    rng = np.random.default_rng(21)
    lake = Lake(str(tmp_path / "lake"))
    n = 80
    ids = image_ids(n)
    cameras = [CAMERAS[i % 2] for i in range(n)]
    write_images(lake, ids)
    write_predictions(lake, ids, "v1", ["car"] * n, np.full(n, 0.9), cameras, START)
    truth, found = [], []
    for k, _image_id in enumerate(ids):
        for _ in range(rng.integers(1, 4)):
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(8, 140, 2)  # small, medium and large boxes
            label = CLASSES[rng.integers(0, 3)]
            truth.append((k, label, [x, y, x + w, y + h]))
            if rng.random() < 0.8:  # found, a little off
                jitter = rng.normal(0, 0.08 * min(w, h), 4)
                found.append(
                    (
                        k,
                        label if rng.random() < 0.9 else CLASSES[0],
                        list(np.array([x, y, x + w, y + h]) + jitter),
                        float(rng.uniform(0.3, 1)),
                    )
                )
        if rng.random() < 0.3:  # a false alarm
            found.append((k, CLASSES[rng.integers(0, 3)], [10.0, 10.0, 60.0, 50.0], float(rng.uniform(0, 0.6))))
    labels = make_rows(
        LABELS,
        len(truth),
        label_id=[f"g{i}" for i in range(len(truth))],
        image_id=[ids[k] for k, _, _ in truth],
        label=[lab for _, lab, _ in truth],
        box=[b for _, _, b in truth],
        annotator="ana",
        batch="b1",
        format="coco",
        labelled_at=START,
    )
    tables.append(lake, LABELS, labels, tables.commit_info("test"))
    ts = [START + timedelta(hours=k % 72) for k, _, _, _ in found]
    detections = make_rows(
        DETECTIONS,
        len(found),
        detection_id=[f"d{i}" for i in range(len(found))],
        prediction_id=[f"v1-{ids[k]}" for k, _, _, _ in found],
        image_id=[ids[k] for k, _, _, _ in found],
        model_version="v1",
        ts=ts,
        box=[b for _, _, b, _ in found],
        label=[lab for _, lab, _, _ in found],
        score=[s for _, _, _, s in found],
        date=[t.date() for t in ts],
    )
    tables.append(lake, DETECTIONS, detections, tables.commit_info("test"))

    def direct(keep) -> tuple[list[float], dict]:
        f32 = lambda b: [float(np.float32(v)) for v in b]  # noqa: E731 - the lake stores float32
        x = lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]  # noqa: E731
        gt = COCO()
        gt.dataset = {"images": [{"id": k} for k in range(n) if keep(k)],
                      "categories": [{"id": c + 1, "name": name} for c, name in enumerate(CLASSES)],
                      "annotations": [{"id": i + 1, "image_id": k, "category_id": CLASSES.index(lab) + 1,
                                       "bbox": x(f32(b)), "area": x(f32(b))[2] * x(f32(b))[3], "iscrowd": 0}
                                      for i, (k, lab, b) in enumerate(truth) if keep(k)]}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            dt = gt.loadRes([{"image_id": k, "category_id": CLASSES.index(lab) + 1, "bbox": x(f32(b)),
                              "score": float(np.float32(s))} for k, lab, b, s in found if keep(k)])
            e = COCOeval(gt, dt, "bbox")
            e.evaluate()
            e.accumulate()
            e.summarize()
        per_class = {}
        for c, name in enumerate(CLASSES):
            p = e.eval["precision"][:, :, c, 0, -1]
            per_class[name] = float(p[p > -1].mean())
        return list(e.stats), per_class

    with LakeDB(lake) as db:
        rows = compute_metrics(db, find_slices(all_slices(db), ["all", "camera=cam-1", "size=small"]))
    for name, keep in (("all", lambda k: True), ("camera=cam-1", lambda k: cameras[k] == "cam-1")):
        stats, per_class = direct(keep)
        for position, metric_name in ((0, "map"), (1, "map50"), (3, "map_small"), (5, "map_large"), (8, "ar100")):
            assert metric(rows, "v1", name, metric_name)[0] == pytest.approx(stats[position], abs=1e-6)
        for c in CLASSES:
            assert metric(rows, "v1", name, "map", c)[0] == pytest.approx(per_class[c], abs=1e-6)
    assert metric(rows, "v1", "all", "map")[1] == len(truth)
    assert 0 < metric(rows, "v1", "size=small", "map")[1] < len(truth)  # images with a small box


def test_the_stored_metrics_alarms_and_disagreements_read_back_as_the_metrics_page_shows_them(two_versions):
    d = two_versions
    config = Config(lake=d["lake"].uri, metrics=MetricsConfig(margin=0.05), mining=MiningConfig(user="t"))
    chosen = ["all", "camera=cam-0", "camera=cam-3"]
    with LakeDB(d["lake"]) as db:
        assert stored_metrics(db).num_rows == 0 and stored_alarms(db).num_rows == 0
        computed, report = run_metrics(db, config, slices=chosen)
        accuracy = stored_metrics(db, "accuracy")
        macro = stored_metrics(db, "recall", "macro")
        table = by_version(accuracy, model_versions(db))
        alarms, every_alarm = stored_alarms(db, "accuracy"), stored_alarms(db)
        wrong = disagreements(db, limit=10_000)
        assert disagreements(db, limit=7).num_rows == 7
    assert accuracy.num_rows == 2 * len(chosen)
    assert set(accuracy.column("label").to_pylist()) == {None} and set(macro.column("label").to_pylist()) == {"macro"}
    assert table.column_names == ["slice", "v1", "v2", "n"] and table.column("slice").to_pylist() == chosen
    for line in table.to_pylist():
        for version in ("v1", "v2"):
            assert (line[version], line["n"]) == metric(computed, version, line["slice"], "accuracy")
    assert [(a["slice"], a["model_version"]) for a in alarms.to_pylist()] == [("camera=cam-3", "v2")]
    assert "margin" not in every_alarm.column_names and every_alarm.num_rows == len(report.alarms) > 1
    assert every_alarm.column("drop").to_pylist() == sorted(every_alarm.column("drop").to_pylist(), reverse=True)
    expected = sum(p != t for version in ("v1", "v2") for p, t in zip(d[version], d["truth"]))
    confidences = wrong.column("confidence").to_pylist()
    assert wrong.num_rows == expected and confidences == sorted(confidences, reverse=True)


def test_by_version_keeps_the_slices_and_versions_with_a_value():
    rows = pa.Table.from_pylist([
        {"slice": "b", "model_version": "v1", "value": 0.5, "n": 10},
        {"slice": "b", "model_version": "v2", "value": None, "n": 0},
        {"slice": "a", "model_version": "v2", "value": 0.25, "n": 4},
        {"slice": "a", "model_version": "v1", "value": None, "n": 30},
        {"slice": "c", "model_version": "v1", "value": None, "n": 0},  # no value anywhere: not shown
        {"slice": "c", "model_version": "v3", "value": None, "n": 0},  # v3 has no value: no column
    ])
    table = by_version(rows, ["v3", "v2", "v1"])
    assert table.to_pylist() == [{"slice": "a", "v2": 0.25, "v1": None, "n": 30},
                                 {"slice": "b", "v2": None, "v1": 0.5, "n": 10}]
