"""Suspected label errors (mining.review.label_errors, the label-errors queue): cleanlab and the
kNN vote find planted label flips; labels from a labels table or from a review."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from mining.core import tables
from mining.core.errors import QueueError
from mining.core.lake import Lake
from mining.core.schema import LABELS, PREDICTIONS, make_rows
from mining.core.sql import LakeDB
from mining.review.decisions import decide
from mining.review.label_errors import confident_learning, knn_disagreement
from tests.helpers import clustered
from tests.test_queues import CLASSES, queue, write_lake


def flipped(n: int, flips: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A confident model's probabilities for ``n`` images of 4 classes, the true labels, and
    given labels with ``flips`` of them changed (returns probs, given, flipped rows)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, n)
    rows = rng.choice(n, flips, replace=False)
    # The model is sure of the true class (0.6 to 0.95), surest where the label was flipped
    # (0.97): confident learning flags what is contradicted more confidently than usual.
    sure = rng.uniform(0.6, 0.95, n)
    sure[rows] = 0.97
    probs = rng.dirichlet(np.full(4, 0.3), n) * (1 - sure)[:, None]
    probs[np.arange(n), true] += sure
    given = true.copy()
    given[rows] = (true[rows] + rng.integers(1, 4, flips)) % 4
    return probs, np.array(CLASSES)[given], rows


def test_cleanlab_finds_planted_label_flips():
    probs, given, planted = flipped(400, 20)
    found = confident_learning(given, probs, CLASSES)
    assert set(found.rows.tolist()) == set(planted.tolist())
    # Ranked by self-confidence: the given label's probability, lowest first.
    p = probs / probs.sum(1, keepdims=True)
    self_confidence = p[found.rows, [CLASSES.index(g) for g in given[found.rows]]]
    assert np.all(np.diff(self_confidence) >= -1e-9)
    true = np.array(CLASSES)[probs.argmax(1)]
    assert found.suggested.tolist() == true[found.rows].tolist()
    with pytest.raises(QueueError, match="label\\(s\\) bird have no per-class score"):
        confident_learning(np.array(["bird", *given[1:]]), probs, CLASSES)


def test_knn_vote_finds_planted_flips_in_clusters():
    rng = np.random.default_rng(1)
    cluster = rng.integers(0, 4, 300)
    x = rng.standard_normal((4, 512))[cluster] + 0.3 * rng.standard_normal((300, 512))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    labels = np.array([f"c{c}" for c in cluster])
    planted = rng.choice(300, 10, replace=False)
    given = labels.copy()
    given[planted] = [f"c{(cluster[i] + 1) % 4}" for i in planted]
    found = knn_disagreement(x, given, k=10)
    assert set(planted.tolist()) <= set(found.rows.tolist())
    assert set(found.rows[:10].tolist()) == set(planted.tolist())  # the flips rank first
    assert found.suggested[:10].tolist() == labels[found.rows[:10]].tolist()
    with pytest.raises(QueueError, match="two different labels"):
        knn_disagreement(x[:5], np.array(["a"] * 5))


def test_label_errors_queue_uses_the_labels_table_with_cleanlab(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    probs, given, planted = flipped(120, 8, seed=3)
    truth = write_lake(lake, 120)
    with LakeDB(lake) as db:  # the model's scores become the planted probabilities
        kept = db.query("SELECT * FROM predictions ORDER BY prediction_id")
    maps = [[(c, float(p)) for c, p in zip(CLASSES, row)] for row in probs]
    kept = kept.set_column(
        kept.schema.get_field_index("scores"), "scores", pa.array(maps, kept.schema.field("scores").type)
    )
    tables.overwrite(lake, PREDICTIONS, kept, tables.commit_info("test"))
    with pytest.raises(QueueError, match="no labels table, so labels come from review decisions"):
        queue(lake, "label-errors")
    old = datetime(2026, 1, 1, tzinfo=UTC)
    rows = make_rows(LABELS, 240, label_id=[f"l{i}" for i in range(240)], image_id=truth["ids"] * 2,
                     label=["dog"] * 120 + given.tolist(), annotator="ann", batch="b1", format="coco",
                     labelled_at=[old] * 120 + [datetime.now(UTC)] * 120)
    # A box label is about one object, not the image: label-errors leaves it out.
    boxed = make_rows(LABELS, 1, label_id=["box"], image_id=[truth["ids"][0]], label=["truck"], box=[[0, 0, 5, 5]],
                      annotator="ann", batch="b1", format="coco", labelled_at=datetime.now(UTC))
    tables.append(
        lake, LABELS, pa.concat_tables([rows, boxed]), tables.commit_info("test")
    )  # the latest label per image counts
    made, picked = queue(lake, "label-errors", limit=50)
    assert {r["image_id"] for r in picked} == {truth["ids"][i] for i in planted}
    assert (
        "cleanlab" in picked[0]["reason"]
        and made.notes[0] == "labels from the labels table (image labels, not boxes): 120 images"
    )
    with pytest.raises(QueueError, match="cleanlab needs per-class scores"):
        tables.delete(lake, PREDICTIONS, "prediction_id = 'p00000'", tables.commit_info("test"))
        queue(lake, "label-errors", method="cleanlab")
    made, _ = queue(lake, "label-errors", "knn")  # auto: one image without scores, so the kNN vote
    assert any(n.startswith("method knn: 1 labelled images have no per-class score") for n in made.notes)


def test_label_errors_from_a_review_vote_with_neighbours(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    x = clustered(60, 5, centres=2)
    cluster = (x @ x[0] > x @ x[int(np.argmin(x @ x[0]))]).astype(int)
    truth = write_lake(lake, 60, embeddings=x)
    ids = np.array(truth["ids"])
    wrong = [int(np.flatnonzero(cluster == 1)[0]), int(np.flatnonzero(cluster == 0)[0])]
    accept = [i for i in range(60) if (cluster[i] == 1) != (i in wrong)]
    with LakeDB(lake) as db:
        decide(db, "glare", ids[accept].tolist(), "accept", reviewer="ana")
        decide(db, "glare", ids[[i for i in range(60) if i not in accept]].tolist(), "reject", reviewer="ana")
    made, picked = queue(lake, "label-errors", limit=2, neighbours=8)
    assert {r["image_id"] for r in picked} == set(ids[wrong].tolist())
    assert made.notes[0] == "labels from the review 'glare': 60 images" and "(kNN)" in picked[0]["reason"]
    with LakeDB(lake) as db:
        decide(db, "other", ids[:3].tolist(), "accept", reviewer="ana")
    with pytest.raises(QueueError, match="name the review with --review \\(glare, other\\)"):
        queue(lake, "label-errors")
    made, _ = queue(lake, "label-errors", review="glare", where="p.camera = 'cam-0'")
    assert made.candidates == 20
