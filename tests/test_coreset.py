"""Diverse picks (mining.search.coreset) against a brute-force k-center greedy, and
near-duplicate groups (mining.search.duplicates) found exactly for planted near-copies."""

from __future__ import annotations

import numpy as np
import pytest

from mining.core.errors import QueueError
from mining.core.sql import LakeDB
from mining.search.coreset import k_center_brute_force, k_center_greedy
from mining.search.duplicates import find_duplicates, group_duplicates
from mining.search.index import IndexSpec, VectorIndex
from tests.helpers import clustered, image_ids, local_only, rows

TOLERANCE = 1e-4  # float32 passes against the float64 reference: distances agree to this


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_center_greedy_picks_what_brute_force_picks(seed):
    x = clustered(300, seed, centres=12)
    ours = k_center_greedy(x, 40, first=5)
    reference = k_center_brute_force(x, 40, first=5)
    assert ours.order.tolist() == reference.order.tolist()
    np.testing.assert_allclose(ours.distances[1:], reference.distances[1:], atol=TOLERANCE)
    assert np.all(np.diff(ours.distances[1:]) <= TOLERANCE)  # the covering radius only shrinks
    # Every point is within the last distance of a pick (the covering radius), and 40 picks
    # of 12 tight clusters reach each of them.
    nearest = np.sqrt(((x[:, None] - x[ours.order][None]) ** 2).sum(-1)).min(1)
    assert nearest.max() <= ours.distances[-1] + TOLERANCE


def test_k_center_greedy_starts_away_from_given_centers():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    centers = rng.standard_normal((30, 8)).astype(np.float32)
    ours = k_center_greedy(x, 25, centers=centers)
    reference = k_center_brute_force(x, 25, centers=centers)
    assert ours.order.tolist() == reference.order.tolist()
    np.testing.assert_allclose(ours.distances, reference.distances, rtol=TOLERANCE, atol=TOLERANCE)


def test_k_center_greedy_covers_every_cluster_before_repeating_one():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 16)) * 10
    x = (centres[np.repeat(np.arange(5), [200, 50, 20, 5, 1])] + rng.standard_normal((276, 16)) * 0.1).astype(
        np.float32
    )
    cluster = np.repeat(np.arange(5), [200, 50, 20, 5, 1])
    assert sorted(cluster[k_center_greedy(x, 5).order].tolist()) == [0, 1, 2, 3, 4]


def test_k_center_greedy_bad_input():
    with pytest.raises(QueueError, match="no candidates"):
        k_center_greedy(np.zeros((0, 4), np.float32), 3)
    with pytest.raises(QueueError, match="at least 1"):
        k_center_greedy(np.ones((3, 4), np.float32), 0)
    assert len(k_center_greedy(np.eye(3, dtype=np.float32), 10).order) == 3  # at most n


def planted(n: int, copies: dict[int, int], seed: int = 0) -> tuple[np.ndarray, dict[int, list[int]]]:
    """``n`` well-spread unit vectors, then near-copies: ``copies[i]`` copies of row i (cosine > 0.999)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 512))
    groups = {}
    extra = []
    for source, count in copies.items():
        groups[source] = []
        for _ in range(count):
            groups[source].append(n + len(extra))
            extra.append(x[source] + 0.01 * rng.standard_normal(512))
    x = np.vstack([x, np.array(extra)])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), groups


def test_planted_near_copies_are_grouped_exactly_and_nothing_else():
    x, groups = planted(400, {3: 1, 10: 2, 77: 40})  # 40 copies: more than k, so the search widens
    ids = np.array(image_ids(len(x)))
    index = VectorIndex(ids, x, IndexSpec("flat"))
    found = group_duplicates(index, 0.98, k=8)
    got = {}
    for leader, member in zip(found.leaders.tolist(), found.members.tolist()):
        got.setdefault(leader, set()).add(member)
    assert got == {source: {source, *copies} for source, copies in groups.items()}
    assert np.all(found.similarity >= 0.98) and np.all(found.similarity[found.leaders == found.members] == 1.0)
    assert len(group_duplicates(index, 0.99999, k=8).members) == 0  # no copy is that close (cosine about 0.99995)
    with pytest.raises(QueueError, match=r"--threshold must be in \(0, 1\]"):
        group_duplicates(index, 1.5)


@local_only
def test_duplicates_are_written_and_dropped_from_queues(lake):
    from tests.test_queues import queue, write_lake

    x, groups = planted(30, {0: 2, 5: 1})
    truth = write_lake(lake, len(x), embeddings=x)
    with LakeDB(lake) as db:
        index = VectorIndex(np.array(truth["ids"]), x, IndexSpec("flat"))
        summary = find_duplicates(db, index, threshold=0.98, user="tester")
    assert (summary.groups, summary.duplicates, summary.images) == (2, 3, 33)
    stored = rows(
        lake, "SELECT group_id, list(image_id ORDER BY image_id) AS members FROM duplicates GROUP BY ALL ORDER BY 1"
    )
    ids = truth["ids"]
    assert stored == [{"group_id": ids[0], "members": [ids[0], ids[30], ids[31]]},
                      {"group_id": ids[5], "members": [ids[5], ids[32]]}]
    _, everything = queue(lake, "least-confidence", "all", limit=33)
    made, kept = queue(lake, "least-confidence", "dedup", limit=33, drop_duplicates=True)
    assert made.duplicates_dropped == 3 and len(kept) == 30
    in_group = {ids[i]: g for g, members in ((0, [0, 30, 31]), (5, [5, 32])) for i in members}
    first_of_group = {}
    for r in everything:
        if r["image_id"] in in_group:
            first_of_group.setdefault(in_group[r["image_id"]], r["image_id"])
    kept_ids = [r["image_id"] for r in kept]
    assert [i for i in kept_ids if i in in_group] == sorted(first_of_group.values(), key=kept_ids.index)
    assert kept_ids == [r["image_id"] for r in everything if r["image_id"] not in in_group
                        or r["image_id"] in first_of_group.values()]
    with LakeDB(lake) as db:  # a second run replaces the groups
        find_duplicates(db, index, threshold=0.99999)
    assert rows(lake, "SELECT count(*) n FROM duplicates") == [{"n": 0}]
