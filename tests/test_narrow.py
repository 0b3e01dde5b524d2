"""Narrowing sessions (mining.search.sessions over mining.search.clustering): saved in the lake,
resumed in another process, audited row by row; on a folder and on S3."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mining.core.config import IndexConfig, MiningConfig
from mining.core.errors import SearchError, SessionError
from mining.core.sql import LakeDB
from mining.search import sessions
from mining.search.backends import get_backend
from mining.search.clustering import project_2d
from mining.search.index_sync import open_index
from tests.helpers import clustered, image_ids, local_only, rows, run_cli, write_embeddings

MINING = MiningConfig(pool=60, clusters=4, user="tester")


@pytest.fixture
def vector_lake(lake):
    write_embeddings(lake, image_ids(200), clustered(200, seed=1), "part-a")
    return lake


def test_a_session_is_saved_and_resumed_in_another_process(vector_lake, request):
    lake = vector_lake
    backend = get_backend("cpu")
    with LakeDB(lake) as db:
        index = open_index(db, IndexConfig())
        first = sessions.start(db, index, backend, MINING, seeds=image_ids(1, start=3), seed_vectors=index.vectors[[3]],
                               session="glare-hunt")
        assert first.step == 0 and first.pool_size == 60 and sum(c.size for c in first.clusters) == 60
        distances = [c.seed_distance for c in first.clusters]
        assert distances == sorted(distances)  # cluster 0 is the closest to the seeds
        with pytest.raises(SessionError, match="exists already"):
            sessions.start(
                db, index, backend, MINING, seeds=image_ids(1), seed_vectors=index.vectors[:1], session="glare-hunt"
            )

    # Another process (the CLI) picks clusters 0 and 1 of the saved step, then shows it.
    env = dict(os.environ, EDGEMINE_USER="second-reviewer")
    if lake.protocol == "s3":
        env |= request.getfixturevalue("s3_env")
    picked = run_cli("narrow", "pick", "glare-hunt", "0", "1", "--clusters", "2", "--json", "--lake", lake.uri, env=env)
    step = json.loads(picked.stdout)
    chosen = first.clusters[0].size + first.clusters[1].size
    assert step["step"] == 1 and step["path"] == [0, 1] and step["pool_size"] == chosen
    assert sum(c["size"] for c in step["clusters"]) == chosen and len(step["clusters"]) == 2

    shown = json.loads(run_cli("narrow", "show", "glare-hunt", "--json", "--lake", lake.uri, env=env).stdout)
    assert shown["step"] == 1 and shown["clusters"] == step["clusters"]

    with LakeDB(lake) as db:
        back = sessions.back(db, "glare-hunt", "tester")
        assert back.step == 0 and back.clusters == first.clusters
        with pytest.raises(SessionError, match="nothing to go back to"):
            sessions.back(db, "glare-hunt", "tester")
        with pytest.raises(SessionError, match="cannot pick \\[9\\]"):
            sessions.pick(db, index, backend, MINING, "glare-hunt", [9])
        assert sessions.save_session(db, "glare-hunt", "glare-v1", "tester", clusters=[0]) == first.clusters[0].size
    audit = rows(
        lake,
        "SELECT step, action, current, picked, created_by FROM narrow_steps WHERE session = 'glare-hunt' ORDER BY step",
    )
    members = rows(lake, "SELECT count(*) AS n FROM sets JOIN narrow_members USING (image_id) "
                         "WHERE name = 'glare-v1' AND session = 'glare-hunt' AND step = 0 AND cluster = 0")
    assert audit == [
        {"step": 0, "action": "start", "current": 0, "picked": [], "created_by": "tester"},
        {"step": 1, "action": "pick", "current": 1, "picked": [0, 1], "created_by": "second-reviewer"},
        {"step": 2, "action": "back", "current": 0, "picked": [], "created_by": "tester"},
    ]
    assert members == [{"n": first.clusters[0].size}]


@local_only
def test_bad_narrowing_inputs_give_clear_errors(vector_lake):
    with LakeDB(vector_lake) as db:
        index = open_index(db, IndexConfig())
        with pytest.raises(SearchError, match="pool must hold at least 1"):
            sessions.start(
                db, index, get_backend("cpu"), MINING, seeds=image_ids(1), seed_vectors=index.vectors[:1], pool=0
            )
        with pytest.raises(SearchError, match="clusters must be at least 1"):
            sessions.start(db, index, get_backend("cpu"), MINING, seeds=image_ids(1), seed_vectors=index.vectors[:1],
                           clusters=0)
        with pytest.raises(SessionError, match="no session 'nope'"):
            sessions.show(db, "nope")
        with pytest.raises(SessionError, match="no session 'nope'"):
            sessions.session_embedding_set(db, "nope")


def test_pool_map_keeps_the_two_widest_axes():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300, 16)).astype(np.float32) * np.r_[5.0, 3.0, np.full(14, 0.1)].astype(np.float32)
    xy = project_2d(points)
    assert xy.shape == (300, 2)
    # The first two principal axes are the two wide dimensions: the map keeps their spread.
    assert np.allclose(np.abs(np.corrcoef(xy[:, 0], points[:, 0])[0, 1]), 1, atol=1e-3)
    assert np.allclose(np.abs(np.corrcoef(xy[:, 1], points[:, 1])[0, 1]), 1, atol=1e-2)
