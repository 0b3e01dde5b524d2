"""Review queues (mining.review.queues, mining.review.samplers): each sampler on small seeded lakes
whose right answer is computed here independently (numpy, pandas), the queue table's
versions, what is left out, and bad input."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from mining.core import tables
from mining.core.config import Config, IndexConfig, QueuesConfig
from mining.core.errors import QueryError, QueueError
from mining.core.lake import Lake
from mining.core.schema import DETECTIONS, EXPORTS, IMAGE_FILES, IMAGES, PREDICTIONS, make_rows
from mining.core.sql import LakeDB
from mining.review.decisions import decide
from mining.review.queues import COMMON, SAMPLERS, list_queues, make_queue, queue_rows
from mining.search.index_sync import open_index
from tests.helpers import clustered, image_ids, rows, write_embeddings

CLASSES = ["car", "truck", "person", "dog"]
START = datetime(2026, 10, 1, tzinfo=UTC)


def write_lake(lake: Lake, n: int = 40, *, seed: int = 0, per_image: int = 1, scores: bool = True,
               embeddings: np.ndarray | None = None, hours: int = 10) -> dict:
    """A small lake: ``n`` images with ``per_image`` predictions each (two model versions,
    ts spread over ``hours``, a camera column), per-class scores from a seeded Dirichlet,
    two detection boxes per prediction, and embeddings (clustered unless given)."""
    rng = np.random.default_rng(seed)
    ids = image_ids(n)
    tables.append(lake, IMAGES, make_rows(IMAGES, n, image_id=ids, uri=[f"/nowhere/{i}.jpg" for i in ids], width=64,
                                          height=48, ingested_at=START), tables.commit_info("test"))
    tables.append(lake, IMAGE_FILES, make_rows(IMAGE_FILES, n, uri=[f"/nowhere/{i}.jpg" for i in ids], image_id=ids),
                  tables.commit_info("test"))
    m = n * per_image
    image = [ids[i % n] for i in range(m)]
    probs = rng.dirichlet(np.full(len(CLASSES), 0.7), size=m).astype(np.float32)
    ts = [START + timedelta(minutes=int(x)) for x in rng.integers(0, 60 * hours, m)]
    version = ["v1" if i % 2 == 0 else "v2" for i in range(m)]
    score_maps = [[(c, float(p)) for c, p in zip(CLASSES, row)] for row in probs] if scores else None
    predictions = make_rows(
        PREDICTIONS, m, prediction_id=[f"p{i:05d}" for i in range(m)], image_id=image, model_version=version, ts=ts,
        label=[CLASSES[int(r.argmax())] for r in probs], confidence=probs.max(1),
        scores=pa.array(score_maps, PREDICTIONS.schema.field("scores").type) if scores else None,
        date=[t.date() for t in ts]).append_column("camera", pa.array([f"cam-{i % 3}" for i in range(m)]))
    tables.append(lake, PREDICTIONS, predictions, tables.commit_info("test"))
    box_scores = rng.uniform(0.2, 1.0, 2 * m).astype(np.float32)
    detections = make_rows(
        DETECTIONS, 2 * m, detection_id=[f"p{i // 2:05d}-{i % 2}" for i in range(2 * m)],
        prediction_id=[f"p{i // 2:05d}" for i in range(2 * m)], image_id=[image[i // 2] for i in range(2 * m)],
        box=[[0.0, 0.0, 1.0, 1.0]] * (2 * m), label=[CLASSES[i % 4] for i in range(2 * m)], score=box_scores,
        date=[ts[i // 2].date() for i in range(2 * m)])
    tables.append(lake, DETECTIONS, detections, tables.commit_info("test"))
    vectors = clustered(n, seed) if embeddings is None else embeddings
    write_embeddings(lake, ids, vectors, "test")
    return {"ids": ids, "image": image, "probs": probs, "ts": ts, "version": version, "box_scores": box_scores,
            "vectors": vectors}


def config_for(lake: Lake, **queues) -> Config:
    return Config(lake=lake.uri, s3=lake.s3, index=IndexConfig(device="cpu"),
                  queues=QueuesConfig(**queues) if queues else QueuesConfig())


def queue(lake: Lake, sampler: str, name: str = "q", *, config: Config | None = None, **kwargs):
    """Make the queue; return (summary, its rows as dicts)."""
    config = config or config_for(lake)
    common = {k: kwargs.pop(k) for k in list(kwargs) if k in COMMON}
    with LakeDB(lake, config=config) as db:
        made = make_queue(db, sampler, name, user="tester", config=config, options=kwargs,
                          index=lambda: open_index(db, config.index), **common)
        return made, queue_rows(db, name, made.version).to_pylist()


@pytest.fixture
def small(tmp_path) -> tuple[Lake, dict]:
    lake = Lake(str(tmp_path / "lake"))
    return lake, write_lake(lake)


# -- uncertainty ---------------------------------------------------------------------------
def _entropy(p: np.ndarray) -> np.ndarray:
    p = p / p.sum(1, keepdims=True)
    return -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(1)


def test_least_confidence_margin_and_entropy_match_numpy(small):
    lake, truth = small
    p = truth["probs"].astype(np.float64)
    p = p / p.sum(1, keepdims=True)
    ids = np.array(truth["image"])
    expected = {
        "least-confidence": 1 - p.max(1),
        "margin": np.sort(p, 1)[:, -1] - np.sort(p, 1)[:, -2],
        "entropy": _entropy(p),
    }
    for measure, values in expected.items():
        made, picked = queue(lake, measure, measure, limit=10)
        order = np.argsort(values if measure == "margin" else -values, kind="stable")[:10]
        assert [r["image_id"] for r in picked] == ids[order].tolist(), measure
        np.testing.assert_allclose([r["score"] for r in picked], values[order], rtol=1e-5, atol=1e-6)
        assert made.images == 10 and made.candidates == len(ids) and made.excluded == 0
        assert all(r["sampler"] == measure and r["prediction_id"] for r in picked)


def test_entropy_by_hand():
    # Three classes 0.5, 0.25, 0.25: H = 0.5 ln 2 + 2 * 0.25 ln 4 = 1.5 ln 2.
    assert math.isclose(float(_entropy(np.array([[0.5, 0.25, 0.25]]))[0]), 1.5 * math.log(2), rel_tol=1e-12)


def test_entropy_in_the_lake_by_hand(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    write_lake(lake, 3)
    hand = [[("a", 0.5), ("b", 0.25), ("c", 0.25)], [("a", 1.0), ("b", 0.0)], [("a", 0.2), ("b", 0.2)]]
    with LakeDB(lake) as db:  # overwrite the three predictions' scores with hand-made ones
        kept = db.query("SELECT * FROM predictions ORDER BY prediction_id")
    kept = kept.set_column(
        kept.schema.get_field_index("scores"), "scores", pa.array(hand, kept.schema.field("scores").type)
    )
    tables.overwrite(lake, PREDICTIONS, kept, tables.commit_info("test"))
    _, picked = queue(lake, "entropy")
    assert [round(r["score"], 6) for r in picked] == [round(1.5 * math.log(2), 6), round(math.log(2), 6), 0.0]
    assert picked[0]["reason"].startswith("entropy 1.040 · a 0.50, b 0.25, c 0.25")
    _, picked = queue(lake, "margin", "m")  # 0.2/0.2 normalises to 0.5/0.5: margin 0
    assert [round(r["score"], 6) for r in picked] == [0.0, 0.25, 1.0]


def test_pooling_per_image_max_and_mean(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    truth = write_lake(lake, 12, per_image=3, seed=3)
    u = 1 - truth["probs"].max(1) / truth["probs"].sum(1)
    image = np.array(truth["image"])
    per_image = {i: u[image == i] for i in truth["ids"]}
    for pool, f in (("max", np.max), ("mean", np.mean)):
        _, picked = queue(lake, "least-confidence", pool, limit=5, pool=pool)
        expected = sorted(per_image, key=lambda i: (-f(per_image[i]), i))[:5]
        assert [r["image_id"] for r in picked] == expected, pool
        np.testing.assert_allclose([r["score"] for r in picked], [f(per_image[i]) for i in expected], rtol=1e-5)
        assert len({r["image_id"] for r in picked}) == 5  # one row per image


def test_boxes_are_pooled_per_image_and_margin_needs_fallback(small):
    lake, truth = small
    image = np.repeat(np.array(truth["image"]), 2)
    u = 1 - truth["box_scores"]
    _, picked = queue(lake, "least-confidence", "boxes", limit=5, boxes=True)
    best = {i: u[image == i].max() for i in truth["ids"]}
    assert [r["image_id"] for r in picked] == sorted(best, key=lambda i: (-best[i], i))[:5]
    assert "the image's most uncertain box" in picked[0]["reason"]
    with pytest.raises(QueueError, match="margin needs per-class scores: detection boxes .* --fallback"):
        queue(lake, "margin", "boxes", boxes=True)
    made, picked = queue(lake, "margin", "boxes", boxes=True, fallback=True, limit=3)
    c = truth["box_scores"]
    margin = {i: np.abs(2 * c[image == i] - 1).min() for i in truth["ids"]}
    assert [r["image_id"] for r in picked] == sorted(margin, key=lambda i: (margin[i], i))[:3]
    assert made.version == 2 and any("--fallback" in n for n in made.notes)


def test_margin_and_entropy_refuse_predictions_without_scores_unless_asked(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    truth = write_lake(lake, 10, scores=False)
    for measure in ("margin", "entropy"):
        with pytest.raises(QueueError, match=f"{measure} needs per-class scores: 10 of the 10 predictions"):
            queue(lake, measure)
    made, picked = queue(lake, "entropy", fallback=True, limit=3)
    c = truth["probs"].max(1).astype(np.float64)
    h = -(c * np.log(c) + (1 - c) * np.log(1 - c))
    assert [r["image_id"] for r in picked] == np.array(truth["image"])[np.argsort(-h, kind="stable")[:3]].tolist()
    assert "[confidence, 1 - confidence]" in made.notes[0]
    made, _ = queue(lake, "least-confidence", "lc")  # confidence is the top class's probability: no error
    assert made.images == 10


# -- random checking -------------------------------------------------------------------------
def test_random_time_takes_k_per_window_and_stratum_reproducibly(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    truth = write_lake(lake, 200, hours=6)
    hour = np.array([t.replace(minute=0) for t in truth["ts"]])
    camera = np.array([f"cam-{i % 3}" for i in range(200)])
    _, picked = queue(lake, "random-time", "r1", per="1h", k=4, seed=7)
    by_id = {f"p{i:05d}": i for i in range(200)}
    hours = [hour[by_id[r["prediction_id"]]] for r in picked]
    for h in set(hour.tolist()):
        assert hours.count(h) == min(4, int((hour == h).sum()))
    assert len(picked) == sum(min(4, int((hour == h).sum())) for h in set(hour.tolist()))
    # Round robin: every window's first pick before any window's second.
    firsts = [r["reason"].startswith("random 1 of") for r in picked]
    assert firsts == sorted(firsts, reverse=True)
    again = queue(lake, "random-time", "r2", per="1h", k=4, seed=7)[1]
    assert [r["prediction_id"] for r in again] == [r["prediction_id"] for r in picked]
    other = queue(lake, "random-time", "r3", per="1h", k=4, seed=8)[1]
    assert {r["prediction_id"] for r in other} != {r["prediction_id"] for r in picked}
    _, strata = queue(lake, "random-time", "r4", per="2h", k=2, by="camera", seed=7)
    two_hours = np.array([t.replace(minute=0, hour=t.hour - t.hour % 2) for t in truth["ts"]])
    cells = [(two_hours[by_id[r["prediction_id"]]], camera[by_id[r["prediction_id"]]]) for r in strata]
    for cell in set(zip(two_hours.tolist(), camera.tolist())):
        expected = min(2, int(((two_hours == cell[0]) & (camera == cell[1])).sum()))
        assert cells.count(cell) == expected
    _, limited = queue(lake, "random-time", "r5", per="1h", k=4, seed=7, limit=3)
    assert [r["prediction_id"] for r in limited] == [r["prediction_id"] for r in picked[:3]]


def test_every_nth_per_model_version_in_ts_order(small):
    lake, truth = small
    order = sorted(range(40), key=lambda i: (truth["version"][i], truth["ts"][i], f"p{i:05d}"))
    expected = set()
    for v in ("v1", "v2"):
        stream = [i for i in order if truth["version"][i] == v]
        expected |= {f"p{i:05d}" for i in stream[6::7]}  # the 7th, 14th, ...
    made, picked = queue(lake, "every-nth", every=7)
    assert {r["prediction_id"] for r in picked} == expected
    # Reviewed picks are left out, the others stay where they were.
    first = picked[0]
    with LakeDB(lake) as db:
        decide(db, "audit", [first["image_id"]], "accept", reviewer="ana")
    _, again = queue(lake, "every-nth", "again", every=7)
    assert {r["prediction_id"] for r in again} == expected - {first["prediction_id"]}


# -- what is left out, versions, listing -------------------------------------------------------
def test_reviewed_images_are_left_out_unless_asked_and_names_make_versions(small):
    lake, truth = small
    made, first = queue(lake, "entropy", "night", limit=5)
    reviewed = [r["image_id"] for r in first[:2]]
    with LakeDB(lake) as db:
        decide(db, "night", reviewed, "reject", reviewer="ana")
    made2, second = queue(lake, "entropy", "night", limit=5)
    assert made2.version == 2 and made2.excluded == 2
    assert not set(reviewed) & {r["image_id"] for r in second}
    assert [r["image_id"] for r in second[:3]] == [r["image_id"] for r in first[2:]]
    made3, third = queue(lake, "entropy", "night", limit=5, include_reviewed=True)
    assert [r["image_id"] for r in third] == [r["image_id"] for r in first] and made3.version == 3
    with LakeDB(lake) as db:
        # Every version is kept; the latest is what queue_rows reads.
        assert rows(lake, "SELECT version, count(*) n FROM queues GROUP BY ALL ORDER BY version") == [
            {"version": 1, "n": 5}, {"version": 2, "n": 5}, {"version": 3, "n": 5}]
        assert queue_rows(db, "night", 1).column("image_id").to_pylist() == [r["image_id"] for r in first]
        listed = {r["queue"]: r for r in list_queues(db).to_pylist()}
        assert listed["night"]["version"] == 3 and listed["night"]["images"] == 5 and listed["night"]["reviewed"] == 2
        assert queue_rows(db, "night").column("decision").to_pylist()[:2] == ["reject", "reject"]
        stored = json.loads(rows(lake, "SELECT params FROM queues WHERE version = 3 LIMIT 1")[0]["params"])
        assert stored["include_reviewed"] is True and stored["limit"] == 5 and stored["pool"] == "max"
        with pytest.raises(QueueError, match="queue 'nope' does not exist; queues: night"):
            queue_rows(db, "nope")
        with pytest.raises(QueueError, match="has no version 9"):
            queue_rows(db, "night", 9)


def test_images_sent_for_labelling_are_left_out(small):

    lake, truth = small
    _, before = queue(lake, "entropy", "e", limit=3)
    _, still = queue(lake, "entropy", "e", limit=3)  # no exports table yet: nothing left out
    assert still == [dict(r, version=2, created_at=s["created_at"]) for r, s in zip(before, still)]
    sent = make_rows(EXPORTS, 1, batch="b", target="/out", format="coco", image_id=[before[0]["image_id"]],
                     at=datetime.now(UTC))
    tables.append(lake, EXPORTS, sent, tables.commit_info("test"))
    made, after = queue(lake, "entropy", "e", limit=3)
    assert made.excluded == 1 and before[0]["image_id"] not in [r["image_id"] for r in after]


def test_where_and_model_version_slice(small):
    lake, truth = small
    _, picked = queue(lake, "least-confidence", "cam", where="p.camera = 'cam-1' AND i.width = 64", model_version="v2")
    expected = {truth["image"][i] for i in range(40) if i % 3 == 1 and truth["version"][i] == "v2"}
    assert {r["image_id"] for r in picked} == expected


def test_bad_input_says_what_is_allowed(small):
    lake, _ = small
    with pytest.raises(QueueError, match="unknown sampler 'bogus'; samplers: random-time, every-nth, least-confidence"):
        queue(lake, "bogus")
    with pytest.raises(QueueError, match=r"entropy has no option --per; its options: --pool, --boxes, --fallback"):
        queue(lake, "entropy", per="1h")
    with pytest.raises(QueueError, match=r"--pool 'median': allowed: max, mean"):
        queue(lake, "entropy", pool="median")
    with pytest.raises(QueueError, match="no predictions in where p.camera = 'nowhere'"):
        queue(lake, "entropy", where="p.camera = 'nowhere'")
    with pytest.raises(QueueError, match="no predictions in model v9"):
        queue(lake, "random-time", model_version="v9")
    with pytest.raises(QueueError, match="--per '1 fortnight'"):
        queue(lake, "random-time", per="1 fortnight")
    with pytest.raises(QueueError, match="--by 'nope' is not a column of predictions; columns: .*camera"):
        queue(lake, "random-time", by="nope")
    with pytest.raises(QueueError, match="a queue needs a name"):
        queue(lake, "entropy", " ")
    with pytest.raises(QueueError, match="--limit must be at least 1"):
        queue(lake, "entropy", limit=0)
    with pytest.raises(QueryError):
        queue(lake, "entropy", where="nonsense((")
    with pytest.raises(
        QueueError, match="the lake has no feedback yet: load reports with `edgemine ingest feedback FILE`"
    ):
        queue(lake, "feedback")
    assert rows(lake, "SELECT count(*) n FROM queues") == [{"n": 0}]  # nothing written by any of them


def test_no_embeddings_says_to_run_embed(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    write_lake(lake, 5)
    tables.delete(lake, "embeddings", "true", tables.commit_info("test"))
    for sampler, kwargs in (("diversity", {}), ("entropy", {"diverse": True, "limit": 2})):
        with pytest.raises(Exception, match="run edgemine embed"):
            queue(lake, sampler, **kwargs)


def test_every_sampler_is_listed_with_its_options():
    assert list(SAMPLERS) == ["random-time", "every-nth", "least-confidence", "margin", "entropy", "feedback",
                              "label-errors", "forgotten", "novelty", "diversity", "object-novelty"]
    assert [o.flag for o in SAMPLERS["random-time"].options] == ["--per", "--k", "--by", "--seed"]



def test_a_new_sampler_is_one_spec_in_the_registry(small, monkeypatch, capsys):
    """A sampler registered in mining.review.samplers.SAMPLERS is a queue, an option and a CLI command,
    with no other edit."""
    from jobs.cli import main
    from mining.review.samplers import SAMPLERS as REGISTRY
    from mining.review.samplers import Option, Picked, Sampler
    from mining.review.samplers.sampler_base import make_picks

    def descending_ids(db, s, request):
        ids = s.query(db, f"SELECT image_id FROM ({s.images_sql(db)}) ORDER BY image_id DESC").column(0).to_pylist()
        ids = ids[::request.options["step"]][:request.limit]
        return Picked(make_picks(ids, [None] * len(ids), range(len(ids)), ["by name"] * len(ids)), candidates=len(ids))

    toy = Sampler(
        "by-name", "images by descending id", (Option("step", int, "take every step-th", 1),), run=descending_ids
    )
    monkeypatch.setitem(REGISTRY, toy.name, toy)
    lake, truth = small
    made, picked = queue(lake, "by-name", step=2, limit=3)
    expected = sorted(truth["ids"], reverse=True)[::2][:3]
    assert (made.sampler, made.params["step"]) == ("by-name", 2) and [r["image_id"] for r in picked] == expected
    with pytest.raises(QueueError, match="by-name has no option --pool; its options: --step"):
        queue(lake, "by-name", pool="max")
    monkeypatch.delenv("EDGEMINE_CONFIG", raising=False)
    assert main(["queue", "by-name", "--name", "cli-toy", "--step", "3", "--json", "--lake", lake.uri, "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == len(truth["ids"][::3])


def test_two_samplers_cannot_share_a_name():
    from mining.review.samplers import SAMPLERS as REGISTRY
    from mining.review.samplers import _by_name

    with pytest.raises(ValueError, match="two samplers are named margin"):
        _by_name(REGISTRY["margin"], REGISTRY["entropy"], REGISTRY["margin"])

# -- embeddings: novelty, diversity, --diverse ------------------------------------------------
def test_novelty_ranks_what_is_far_from_everything_reviewed_first(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    rng = np.random.default_rng(2)
    near = clustered(30, 1, centres=2)
    far = rng.standard_normal((3, 512))
    far = (far / np.linalg.norm(far, axis=1, keepdims=True)).astype(np.float32)
    x = np.vstack([near, far])
    truth = write_lake(lake, 33, embeddings=x)
    ids = truth["ids"]
    with pytest.raises(QueueError, match="nothing is yet: review some images first"):
        queue(lake, "novelty")
    with LakeDB(lake) as db:
        decide(db, "seen", ids[:20], "accept", reviewer="ana")
    made, picked = queue(lake, "novelty", limit=5)
    assert {r["image_id"] for r in picked[:3]} == set(ids[30:])
    expected = 1 - (x[30:] @ x[:20].T).max(1)
    np.testing.assert_allclose(sorted(r["score"] for r in picked[:3]), sorted(expected), rtol=1e-5)
    assert made.excluded == 20 and not {r["image_id"] for r in picked} & set(ids[:20])
    _, mean3 = queue(lake, "novelty", "n3", limit=3, neighbours=3)
    np.testing.assert_allclose(sorted(r["score"] for r in mean3),
                               sorted(1 - np.sort(x[30:] @ x[:20].T, 1)[:, -3:].mean(1)), rtol=1e-5)


def test_diversity_covers_the_clusters_and_diverse_composes_with_a_sampler(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    rng = np.random.default_rng(0)
    cluster = np.repeat(np.arange(4), [40, 10, 5, 5])
    x = rng.standard_normal((4, 512))[cluster] + 0.05 * rng.standard_normal((60, 512))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    truth = write_lake(lake, 60, embeddings=x)
    where = {i: c for i, c in zip(truth["ids"], cluster)}
    _, picked = queue(lake, "diversity", limit=4)
    assert sorted(where[r["image_id"]] for r in picked) == [0, 1, 2, 3]
    assert picked[0]["reason"].startswith("k-center pick 1 (seeded random start)")
    # entropy's top 40 (several per cluster) -> 4 diverse ones, one per cluster, in entropy's order.
    config = config_for(lake, diverse_pool=10)
    made, diverse = queue(lake, "entropy", "div", limit=4, diverse=True, config=config)
    _, top = queue(lake, "entropy", "top", limit=40)
    pool_clusters = {where[r["image_id"]] for r in top}
    assert {where[r["image_id"]] for r in diverse} == pool_clusters and len(diverse) == min(4, len(pool_clusters))
    order = [r["image_id"] for r in top]
    assert [r["image_id"] for r in diverse] == sorted((r["image_id"] for r in diverse), key=order.index)
    assert made.diverse_from == 40 and diverse[0]["image_id"] == top[0]["image_id"]
    # diversity over another queue's images
    _, of_queue = queue(lake, "diversity", "dq", limit=2, queue="top")
    assert {r["image_id"] for r in of_queue} <= set(order)
    # Reviewed images are centres: the next diverse picks stay away from them.
    with LakeDB(lake) as db:
        decide(db, "seen", [i for i, c in where.items() if c == 0], "accept", reviewer="ana")
    _, away = queue(lake, "diversity", "away", limit=3)
    assert sorted(where[r["image_id"]] for r in away) == [1, 2, 3]


# -- the command -------------------------------------------------------------------------------
def test_cli_makes_lists_and_shows_queues_and_lists_allowed_options(small, capsys, monkeypatch):
    from jobs.cli import main

    lake, truth = small
    monkeypatch.setenv("EDGEMINE_USER", "cli-user")
    monkeypatch.delenv("EDGEMINE_CONFIG", raising=False)
    base = ["--lake", lake.uri, "--quiet"]
    assert main(["queue", "margin", "--name", "cli", "--limit", "3", "--json", *base]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["queue"], report["version"], report["images"], report["sampler"]) == ("cli", 1, 3, "margin")
    assert main(["queue", "random-time", "--name", "rt", "--per", "2h", "--k", "1", "--by", "camera", *base]) == 0
    out = capsys.readouterr().out
    assert out.startswith("queue 'rt' version 1:") and "random 1 of 1" in out
    assert main(["queue", "list", "--json", *base]) == 0
    listed = {r["queue"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["cli"]["images"] == 3 and listed["cli"]["created_by"] == "cli-user"
    assert main(["queue", "show", "cli", "--json", *base]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in shown] == [1, 2, 3] and shown[0]["reason"].startswith("margin p1 - p2")
    assert main(["queue", "entropy", "--name", "x", "--per", "1h", *base]) == 2
    err = capsys.readouterr().err
    assert "unrecognized option(s) --per 1h; options of queue entropy: --name, --where" in err and "--fallback" in err
    assert main(["queue", "show", "nope", *base]) == 2
    assert "queue 'nope' does not exist; queues: cli, rt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_code:
        main(["queue", "bogus", "--name", "x", *base])
    assert exit_code.value.code == 2 and "invalid choice: 'bogus' (choose from 'random-time'" in capsys.readouterr().err
    assert main(["queue", "novelty", "--name", "n", *base]) == 2
    assert "review some images first" in capsys.readouterr().err
    assert main(["duplicates", "--threshold", "0.999999", "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 40


# -- forgotten: what a retrain broke -------------------------------------------------------------
def test_forgotten_lists_what_the_new_version_gets_wrong_and_the_old_got_right(tmp_path):
    from mining.core.schema import LABELS

    lake = Lake(str(tmp_path / "lake"))
    made = write_lake(lake, 40)
    rng = np.random.default_rng(5)
    predicted = {}
    for version, hour in (("old", 20), ("new", 30)):  # two versions predicting every image
        labels, confidence = rng.integers(0, 4, 40), rng.uniform(0.3, 1.0, 40).astype(np.float32)
        when = START + timedelta(hours=hour)
        tables.append(lake, PREDICTIONS, make_rows(
            PREDICTIONS, 40, prediction_id=[f"{version}-{i}" for i in made["ids"]], image_id=made["ids"],
            model_version=version, ts=when, label=[CLASSES[k] for k in labels], confidence=confidence,
            date=when.date()), tables.commit_info("test"))
        predicted |= {
            (i, version): (CLASSES[k], float(c)) for i, k, c in zip(made["ids"], labels, confidence, strict=True)
        }
    truth = {i: (predicted[i, "old"][0] if rng.random() < 0.6 else CLASSES[int(rng.integers(4))]) for i in made["ids"]}
    at = datetime(2026, 11, 1, tzinfo=UTC)
    tables.append(lake, LABELS, make_rows(LABELS, 40, label_id=[f"l-{i}" for i in truth], image_id=list(truth),
                                          label=list(truth.values()), annotator="a", batch="b", format="coco",
                                          labelled_at=at), tables.commit_info("test"))
    expected = {i for i in made["ids"] if predicted[i, "new"][0] != truth[i] and predicted[i, "old"][0] == truth[i]}
    assert expected  # the seeded data has some
    summary, picked = queue(lake, "forgotten", model_version="new", baseline="old", include_reviewed=True)
    assert {r["image_id"] for r in picked} == expected
    confidences = [predicted[r["image_id"], "new"][1] for r in picked]
    assert confidences == sorted(confidences, reverse=True)  # the most confidently wrong first
    assert "old said" in picked[0]["reason"] and f"labelled {truth[picked[0]['image_id']]}" in picked[0]["reason"]
    # reversed, the other way round; and a version that does not exist is refused with the list
    _, back = queue(lake, "forgotten", name="back", model_version="old", baseline="new", include_reviewed=True)
    assert {r["image_id"] for r in back} == {
        i for i in made["ids"] if predicted[i, "old"][0] != truth[i] and predicted[i, "new"][0] == truth[i]
    }
    _, default = queue(lake, "forgotten", name="default", include_reviewed=True)  # the newest against the one before
    assert {r["image_id"] for r in default} == expected
    with pytest.raises(QueueError, match="versions: .*old, new"):
        queue(lake, "forgotten", name="bad", model_version="new", baseline="v9")


def test_forgotten_without_labels_says_to_import_them(small):
    lake, _ = small
    with pytest.raises(QueueError, match="labels import"):
        queue(lake, "forgotten", model_version="v2", baseline="v1")
