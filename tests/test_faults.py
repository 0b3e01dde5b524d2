"""Faults and concurrent writers on S3: the lake's jobs run through a proxy that injects
S3's transient failures (tests/fault_proxy.py) in front of moto's server, and lose or double
nothing; two index syncs, and two reviewers on one narrowing session, at once.

The counts of the seeded run (fault points, what survived, what was lost) are printed with
``-s`` and asserted."""

from __future__ import annotations

import json
import threading
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from jobs.ingest_images import ingest_images
from jobs.ingest_predictions import ingest_predictions
from mining.core import tables
from mining.core.config import Config, IndexConfig, IngestConfig, MiningConfig, S3Config
from mining.core.errors import SessionError
from mining.core.lake import Lake
from mining.core.schema import NARROW_MEMBERS, NARROW_STEPS, TABLES
from mining.core.sql import LakeDB
from mining.labelling.labels import import_labels
from mining.review.decisions import decide, mark_page
from mining.search import sessions
from mining.search.backends import get_backend
from mining.search.index_store import load_index, load_manifest
from mining.search.index_sync import index_lake
from tests.fault_proxy import FaultPlan, FaultProxy
from tests.helpers import clustered, image_ids, jsonl, prediction, put_images, write_embeddings

SEED = 28
FAULT_POINTS = 100
# Short timeouts, so a request the proxy holds (a ``timeout`` fault) costs a second, not a minute.
FAST = {"read_timeout_s": 1.0, "connect_timeout_s": 1.0}
HOLD_S = 1.3  # past the read timeout
SMALL = IngestConfig(chunk_rows=20, image_batch=8, image_shard=10, compact_after_files=0)
IMAGES = 20


@pytest.fixture
def inputs(s3_config: S3Config, new_bucket: str, tmp_path: Path) -> tuple[str, str, Path]:
    """Image files on S3 (written straight to moto) and a predictions file and a COCO labels
    file on disk, for the sequence below: (images folder, predictions file, labels file)."""
    folder = f"s3://{new_bucket}/cams"
    uris = put_images(Lake(f"s3://{new_bucket}/lake", s3_config), folder, IMAGES)
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(jsonl([prediction(uri, i) for i, uri in enumerate(uris)]))
    coco = {"images": [{"id": i, "file_name": uri, "width": 64, "height": 48} for i, uri in enumerate(uris[:12])],
            "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}],
            "annotations": [{"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [2, 3, 20, 10], "area": 200,
                             "iscrowd": 0} for i in range(12)]}
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(coco))
    return folder, str(predictions), labels


def run_sequence(lake: Lake, inputs: tuple[str, str, Path]) -> None:
    """A day of small writes through the public jobs: images, predictions, decisions, labels."""
    folder, predictions, labels = inputs
    ingest_images(lake, folder, SMALL, show_progress=False)
    ingest_predictions(lake, [predictions], SMALL, show_progress=False)
    with LakeDB(lake) as db:
        ids = db.query("SELECT image_id FROM images ORDER BY image_id").column("image_id").to_pylist()
        for n in range(4):
            decide(db, "faults", ids[n * 3:(n + 1) * 3], "accept" if n % 2 else "reject", reviewer=f"r{n}")
        mark_page(db, "faults", shown=ids[12:20], selected=ids[12:14], reviewer="page")
        config = Config(lake=lake.uri, s3=lake.s3)
        import_labels(db, str(labels), fmt="coco", config=config, annotator="ann")


def lake_state(lake: Lake) -> dict[str, dict]:
    """Per table: rows, distinct keys (every key once), and commits."""
    state = {}
    with LakeDB(lake) as db:
        for name, table in TABLES.items():
            if not tables.exists(lake, name):
                continue
            key = ", ".join(table.key) if table.key else "*"
            every_row = f"raw.{name}" if table.latest_by else name  # raw: every row, not the latest per key
            counts = db.query(f"SELECT count(*) AS n, count(DISTINCT ({key})) AS keys FROM {every_row}").to_pylist()[0]
            state[name] = counts | {"commits": tables.version(lake, name) + 1}
    return state


def through(proxy: FaultProxy, s3_config: S3Config, uri: str) -> Lake:
    return Lake(uri, replace(s3_config, endpoint_url=proxy.endpoint, **FAST))


def test_a_seeded_hundred_faults_lose_and_double_nothing(s3_endpoint, s3_config, new_bucket, inputs):
    # The fault-free run: what the lake holds after the sequence, and how many requests it takes.
    with FaultProxy(s3_endpoint) as proxy:
        run_sequence(through(proxy, s3_config, f"s3://{new_bucket}/clean"), inputs)
        methods = proxy.stats()["methods"]
    expected = lake_state(Lake(f"s3://{new_bucket}/clean", s3_config))

    plan = FaultPlan.sample(seed=SEED, methods=methods, points=FAULT_POINTS, timeout_s=HOLD_S)
    with FaultProxy(s3_endpoint, plan) as proxy:
        run_sequence(through(proxy, s3_config, f"s3://{new_bucket}/faulty"), inputs)
        stats = proxy.stats()
    got = lake_state(Lake(f"s3://{new_bucket}/faulty", s3_config))  # read straight from S3: every table readable

    cases = sum(stats["fired"].values())
    rows = {t: (expected[t]["n"], got.get(t, {"n": 0})["n"]) for t in expected}
    lost = sum(max(0, want - have) for want, have in rows.values())
    doubled = sum(max(0, have - want) for want, have in rows.values())
    print(f"\nfaults: cases {cases}, survived {cases if got == expected else 0}, lost rows {lost}, doubled rows "
          f"{doubled} ({dict(stats['fired'])}; {stats['watched']} requests, fault-free {len(methods)}; "
          f"{len(got)} tables, {sum(s['n'] for s in got.values())} rows, {sum(s['commits'] for s in got.values())} "
          "commits)")
    assert sum(stats["fired"].values()) == FAULT_POINTS
    assert set(stats["fired"]) == {"slowdown", "reset", "timeout", "lost_response", "landed_500"}
    assert got == expected  # rows, keys once each, and one commit per write: nothing lost, nothing doubled
    assert all(s["n"] == s["keys"] for name, s in got.items() if TABLES[name].key)


@pytest.mark.parametrize("fault", ["lost_response", "landed_500"])
def test_a_commit_whose_answer_was_lost_lands_once(s3_endpoint, s3_config, new_bucket, inputs, fault):
    folder, _, _ = inputs
    ingest_images(Lake(f"s3://{new_bucket}/lake", s3_config), folder, SMALL, show_progress=False)
    # Every commit of a decision: written to S3, and the client never hears (or hears 500).
    plan = FaultPlan({n: fault for n in range(5)}, methods=frozenset({"PUT"}), paths=r"/reviews/_delta_log/\d+\.json")
    with FaultProxy(s3_endpoint, plan) as proxy:
        lake = through(proxy, s3_config, f"s3://{new_bucket}/lake")
        with LakeDB(lake) as db:
            ids = db.query("SELECT image_id FROM images ORDER BY image_id").column("image_id").to_pylist()
            for n in range(5):
                assert decide(db, "lost", ids[n * 2:(n + 1) * 2], "accept", reviewer=f"r{n}") == 2
        assert proxy.stats()["fired"] == {fault: 5}
    lake = Lake(f"s3://{new_bucket}/lake", s3_config)
    with LakeDB(lake) as db:
        decided = db.query("SELECT image_id, reviewer FROM raw.reviews ORDER BY image_id").to_pylist()
    assert [d["image_id"] for d in decided] == ids[:10]  # each decision once
    assert tables.version(lake, "reviews") == 4  # five writes, five commits: none committed twice
    assert [c["detail"]["review"] for c in tables.history(lake, "reviews")] == ["lost"] * 5


def test_two_index_syncs_at_once_leave_one_consistent_index(lake):
    vectors = clustered(300, seed=3)
    write_embeddings(lake, image_ids(300), vectors, "part-a")
    errors, summaries = [], []
    start = threading.Barrier(2, timeout=60)

    def sync() -> None:
        try:
            start.wait()
            with LakeDB(lake) as db:
                summaries.append(index_lake(db, IndexConfig(device="cpu"))[1])
        except Exception as e:  # reported below
            errors.append("".join(traceback.format_exception(e)))

    threads = [threading.Thread(target=sync) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert sorted(s.action for s in summaries) in (["built", "built"], ["built", "up to date"])
    manifest = load_manifest(lake, "resnet18", "random-seed0")
    index = load_index(lake, manifest, get_backend("cpu"))
    assert sorted(index.ids) == image_ids(300) and manifest.count == 300
    np.testing.assert_allclose(index.vectors[np.argsort(index.ids)], vectors, rtol=1e-6)
    with LakeDB(lake) as db:
        assert index_lake(db, IndexConfig(device="cpu"))[1].action == "up to date"


def test_two_reviewers_picking_on_one_session_at_once_lose_nothing(lake, monkeypatch):
    write_embeddings(lake, image_ids(200), clustered(200, seed=4), "part-a")
    config = MiningConfig(pool=200, clusters=4, user="starter")
    backend = get_backend("cpu")
    with LakeDB(lake) as db:
        index = index_lake(db, IndexConfig(device="cpu"))[0]
        sessions.start(db, index, backend, config, seeds=[index.ids[0]], seed_vectors=index.vectors[:1],
                       session="shared")
        parent = sessions.members_of(db, "shared", 0).to_pylist()
    # The race, in this order: ana writes her step's members, bo his, ana records her step (and
    # wins it), bo tries to record his.
    order = {name: threading.Event() for name in ("ana members", "bo members", "ana step")}
    real = {name: getattr(tables, name) for name in ("replace", "append", "insert_new")}

    def in_turn(name: str):
        def write(lake, table, *args, **kwargs):
            me = threading.current_thread().name
            what = "members" if table is NARROW_MEMBERS else "step" if table is NARROW_STEPS else None
            waits_for = {("bo", "members"): "ana members", ("ana", "step"): "bo members",
                         ("bo", "step"): "ana step"}.get((me, what))
            if waits_for:
                assert order[waits_for].wait(60)
            try:
                return real[name](lake, table, *args, **kwargs)
            finally:
                if what and f"{me} {what}" in order:
                    order[f"{me} {what}"].set()
        return write

    for name in real:
        monkeypatch.setattr(tables, name, in_turn(name))
    outcomes: dict[str, object] = {}

    def pick(reviewer: str, clusters: list[int]) -> None:
        try:
            with LakeDB(lake) as db:
                outcomes[reviewer] = sessions.pick(db, index, backend, replace(config, user=reviewer), "shared",
                                                   clusters, clusters=2)
        except Exception as e:  # the loser is told to redo its pick
            outcomes[reviewer] = e

    threads = [threading.Thread(target=pick, args=(name, clusters), name=name)
               for name, clusters in (("ana", [0, 1]), ("bo", [2, 3]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, function in real.items():
        monkeypatch.setattr(tables, name, function)
    assert isinstance(outcomes["bo"], SessionError) and "redo yours" in str(outcomes["bo"]), outcomes
    winner, lost = "ana", ["bo"]
    with LakeDB(lake) as db:  # the loser redoes its pick on the step the winner made
        again = sessions.pick(db, index, backend, replace(config, user=lost[0]), "shared", [0], clusters=2)
        steps = db.query("SELECT step, parent, picked, created_by FROM narrow_steps WHERE session = 'shared' "
                         "ORDER BY step").to_pylist()
        first = sessions.members_of(db, "shared", 1).to_pylist()
    assert again.step == 2 and [(s["step"], s["created_by"]) for s in steps] == [(0, "starter"), (1, winner),
                                                                                  (2, lost[0])]
    # Step 1's members are the pool of the clusters its row says were picked: the winner's.
    picked = set(steps[1]["picked"])
    assert sorted(m["image_id"] for m in first) == sorted(m["image_id"] for m in parent if m["cluster"] in picked)
