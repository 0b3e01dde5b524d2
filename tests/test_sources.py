"""Image sources (mining/review/sources.py): each kind's images in its one order, ties broken by
image id, the names the UI's pickers offer, and what each bad spec says; on a small lake
of the tests' own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from mining.core import tables
from mining.core.errors import ExportError, QueryError, QueueError, SessionError, SourceError
from mining.core.lake import Lake
from mining.core.schema import IMAGES, NARROW_MEMBERS, NARROW_STEPS, PREDICTIONS, make_rows
from mining.core.sets import save_set
from mining.core.sql import LakeDB
from mining.labelling.export import resolve_source
from mining.review.decisions import decide
from mining.review.queues import write_queue
from mining.review.sources import names, resolve, where_spec
from tests.helpers import image_ids

START = datetime(2026, 10, 1, tzinfo=UTC)
IDS = image_ids(8)


def write_session(lake: Lake, name: str, steps: dict[int, list[tuple[str, int, float]]], at: datetime) -> None:
    """A narrowing session of clustering steps (step -> members: image id, cluster, similarity),
    each step picked from the one before; the last is current. A step's members carry its row's
    time, as the library writes them (docs/LAKE.md, narrow_members)."""
    for step, members in steps.items():
        info = tables.commit_info("test")
        tables.append(lake, NARROW_MEMBERS, make_rows(
            NARROW_MEMBERS, len(members), session=name, step=step, image_id=[m[0] for m in members],
            cluster=[m[1] for m in members], similarity=[m[2] for m in members], centre_distance=0.1,
            created_at=at + timedelta(minutes=step)), info)
        tables.append(lake, NARROW_STEPS, make_rows(
            NARROW_STEPS, 1, session=name, step=step, action="start" if step == 0 else "pick",
            parent=None if step == 0 else step - 1, current=step, picked=[[] if step == 0 else [0]], seeds=[[IDS[0]]],
            negatives=[[]], pool_size=len(members), created_by="t", created_at=at + timedelta(minutes=step)), info)


def picks(ids: list[str], scores: list[float | None]) -> pa.Table:
    return pa.table({"image_id": ids, "prediction_id": [f"p-{i}" for i in ids],
                     "score": pa.array(scores, pa.float64()), "reason": [f"because {i[-2:]}" for i in ids]})


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Lake:
    """Eight images, predicted once with confidence 0.25 and the last four twice more above 0.5;
    a set, a review, two sessions (one named like a step), a queue in two versions."""
    lake = Lake(str(tmp_path_factory.mktemp("sources") / "lake"))
    tables.append(lake, IMAGES, make_rows(IMAGES, len(IDS), image_id=IDS, uri=[f"mem://{i}.jpg" for i in IDS],
                                          ingested_at=START), tables.commit_info("test"))
    predicted = IDS + IDS[4:][::-1] + IDS[4:]
    tables.append(lake, PREDICTIONS, make_rows(
        PREDICTIONS, len(predicted), prediction_id=[f"p{k}" for k in range(len(predicted))], image_id=predicted,
        model_version="v1", ts=START, label="car", confidence=[0.25] * 8 + [0.75] * 4 + [0.875] * 4,
        date=START.date(), ingested_at=START), tables.commit_info("test"))
    with LakeDB(lake) as db:
        save_set(db, "picked", [IDS[5], IDS[2], IDS[7]], source="t", user="t")
        decide(db, "glare", [IDS[3]], "accept", reviewer="t")
        decide(db, "glare", [IDS[1], IDS[4]], "accept", reviewer="t")
        decide(db, "glare", [IDS[6]], "reject", reviewer="t")
        decide(db, "nothing-kept", [IDS[0]], "reject", reviewer="t")
        write_queue(db, "low", picks(IDS[:2], [0.9, 0.8]), sampler="entropy", params={}, user="t")
        write_queue(db, "low", picks([IDS[6], IDS[0], IDS[2]], [0.75, float("nan"), None]), sampler="entropy",
                    params={}, user="t")
    # Step 1: IDS[4] and IDS[2] tie on similarity (by id then), cluster 1 holds IDS[6].
    write_session(lake, "dusk", {0: [(i, 0, 0.5) for i in IDS[:4]],
                                 1: [(IDS[4], 0, 0.9), (IDS[2], 0, 0.9), (IDS[6], 1, 0.95), (IDS[1], 0, 0.2)]}, START)
    write_session(lake, "cam/1", {0: [(IDS[7], 0, 0.5), (IDS[3], 0, 0.6)]}, START + timedelta(hours=1))
    return lake


def test_each_kind_in_its_order(small):
    with LakeDB(small) as db:
        assert resolve(db, "set:picked").ids == [IDS[5], IDS[2], IDS[7]]  # by rank
        assert resolve(db, "review:glare").ids == [IDS[3], IDS[1], IDS[4]]  # earliest accepted, then by id
        current = resolve(db, "session:dusk")
        assert current.ids == [IDS[6], IDS[2], IDS[4], IDS[1]]  # most similar first, a tie by id
        assert current.origin == "narrow:dusk/1"
        chosen = resolve(db, "session:dusk", clusters=[0])
        assert chosen.ids == [IDS[2], IDS[4], IDS[1]] and chosen.origin == "narrow:dusk/1#0"
        assert resolve(db, "session:dusk/0").ids == IDS[:4] and resolve(db, "session:dusk/0").origin == "narrow:dusk/0"
        assert resolve(db, "session:cam/1").ids == [IDS[3], IDS[7]]  # a name ending in /N is the name
        latest = resolve(db, "queue:low")
        assert latest.ids == [IDS[6], IDS[0], IDS[2]] and latest.origin == "queue:low/2"
        assert latest.scores == {IDS[6]: 0.75}  # NaN and None: no score to show
        assert latest.reasons == {i: f"because {i[-2:]}" for i in latest.ids}
        assert resolve(db, "queue:low/1").ids == IDS[:2]
        twice = resolve(db, f"sql:SELECT image_id FROM images, range(2) WHERE image_id <= '{IDS[2]}' "
                            "ORDER BY image_id DESC")
        assert twice.ids == [IDS[2], IDS[1], IDS[0]] and twice.origin == "sql"  # each image once, in the query's order


def test_names_of_each_kind(small):
    with LakeDB(small) as db:
        assert names(db, "set") == ["picked"]
        assert names(db, "review") == ["glare"]  # "nothing-kept" accepted nothing: nothing to take
        assert names(db, "session") == ["cam/1", "dusk"]  # the last action first
        assert names(db, "queue") == ["low"]
        with pytest.raises(SourceError, match="no names"):
            names(db, "sql")


@pytest.mark.parametrize("spec, error, message", [
    ("glare", SourceError, "give set:NAME, review:NAME, session:NAME, queue:NAME or sql:QUERY"),
    ("set:", SourceError, "give set:NAME"),
    ("set:none-such", SourceError, "no set named 'none-such'"),
    ("review:nothing-kept", SourceError, "no accepted images"),
    ("session:none-such", SessionError, "no session 'none-such'"),
    ("session:dusk/7", SessionError, "no clustering step 7"),
    ("queue:none-such", QueueError, "does not exist"),
    ("queue:low/9", QueueError, "has no version 9"),
    ("sql:SELECT 1 AS x", SourceError, "must return an image_id column; it returned x"),
    ("sql:DELETE FROM images", QueryError, None),
])
def test_a_bad_spec_says_what_is_wrong(small, spec, error, message):
    with LakeDB(small) as db, pytest.raises(error, match=message):
        resolve(db, spec)


def test_clusters_choose_only_within_a_session(small):
    with LakeDB(small) as db:
        with pytest.raises(SourceError, match="has no cluster"):
            resolve(db, "session:dusk", clusters=[5])
        with pytest.raises(SourceError, match="only a narrowing session"):
            resolve(db, "set:picked", clusters=[0])


def test_export_takes_the_kinds_it_took(small):
    with LakeDB(small) as db:
        assert resolve_source(db, "set:picked") == resolve(db, "set:picked").ids
        assert resolve_source(db, "session:dusk") == resolve(db, "session:dusk").ids
        kinds = r"give set:NAME, review:NAME, session:NAME or sql:QUERY \(or --where SQL\)"
        with pytest.raises(ExportError, match=kinds):
            resolve_source(db, "queue:low")
        with pytest.raises(ExportError, match="no set named"):
            resolve_source(db, "set:none-such")


def test_a_where_slice_is_its_images_by_id(small):
    with LakeDB(small) as db:
        assert resolve(db, where_spec("p.confidence > 0.5")).ids == IDS[4:]  # each once, by id
