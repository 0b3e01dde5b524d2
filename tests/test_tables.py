"""The lake's Delta tables (mining.core.tables), on a folder and on S3 (moto): each write one
transaction, keys kept once, concurrent writers (threads and processes) losing nothing,
history and time travel, compaction, and the tables that cannot be read said clearly."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from mining.core import tables
from mining.core.errors import LakeError
from mining.core.schema import ERRORS, PREDICTIONS, REVIEWS, SETS, error_rows, make_rows
from mining.core.sql import LakeDB
from tests.helpers import local_only, rows

INFO = tables.commit_info("test", "tester", about="a test")


def predictions(ids: list[int], label: str = "car", day: int = 1, source: str = "f1") -> pa.Table:
    ts = datetime(2026, 10, day, 12, tzinfo=UTC)
    return make_rows(PREDICTIONS, len(ids), prediction_id=[f"p{i}" for i in ids], image_id=[f"{i:020x}" for i in ids],
                     model_version="v1", ts=ts, label=label, confidence=0.5, source=source, date=ts.date())


def reviews(n: int, reviewer: str, review: str = "r") -> pa.Table:
    return make_rows(REVIEWS, n, review=review, image_id=[f"{i:020x}" for i in range(n)], decision="accept",
                     reviewer=reviewer, decided_at=datetime.now(UTC))


def test_each_write_is_one_version_and_says_who_and_what(lake):
    assert tables.version(lake, ERRORS) is None
    at = datetime.now(UTC)
    assert tables.append(lake, ERRORS, error_rows("a", [{"reason": "x"}] * 3, at), INFO) == 0
    assert tables.append(lake, ERRORS, error_rows("b", [{"reason": "y"}] * 2, at), INFO) == 1
    assert tables.append(lake, ERRORS, error_rows("b", [], at), INFO) is None  # nothing: no commit
    assert tables.replace(lake, ERRORS, error_rows("b", [{"reason": "z"}], at), "job = 'b'", INFO) == 2
    assert tables.delete(lake, ERRORS, "job = 'a'", INFO) == 3
    assert rows(lake, "SELECT job, reason FROM errors") == [{"job": "b", "reason": "z"}]
    history = tables.history(lake, ERRORS)
    assert [h["version"] for h in history] == [3, 2, 1, 0]
    assert [h["operation"] for h in history] == ["DELETE", "WRITE", "WRITE", "WRITE"]
    assert {(h["job"], h["user"], h["detail"]["about"]) for h in history} == {("test", "tester", "a test")}
    assert history[-1]["rows_added"] == 3 and history[0]["rows_removed"] == 3


def test_upsert_keeps_one_row_per_key_and_replaces_it(lake):
    tables.upsert(lake, PREDICTIONS, predictions([1, 2, 3]), INFO)
    tables.upsert(lake, PREDICTIONS, predictions([3, 4], label="truck"), INFO)  # 3 again, from another file
    tables.upsert(lake, PREDICTIONS, predictions([3, 4], label="truck"), INFO)  # a rerun
    got = rows(lake, "SELECT prediction_id, label FROM predictions ORDER BY prediction_id")
    assert got == [{"prediction_id": "p1", "label": "car"}, {"prediction_id": "p2", "label": "car"},
                   {"prediction_id": "p3", "label": "truck"}, {"prediction_id": "p4", "label": "truck"}]
    assert tables.insert_new(lake, PREDICTIONS, predictions([4, 5], label="bus"), INFO) == 1  # 4 is there: kept
    assert rows(lake, "SELECT label FROM predictions WHERE prediction_id IN ('p4', 'p5') ORDER BY 1") == [
        {"label": "bus"}, {"label": "truck"}]


@local_only
def test_a_key_repeated_within_the_rows_lands_once(lake):
    """An input that sends a prediction twice: the later row wins (a MERGE would fail on a
    key the table has, and insert both copies of a key it has not)."""
    twice = pa.concat_tables([predictions([1, 2], label="car"), predictions([2, 3], label="truck")])
    tables.upsert(lake, PREDICTIONS, predictions([9]), INFO)  # the table exists: the MERGE path
    tables.upsert(lake, PREDICTIONS, twice, INFO)
    tables.upsert(lake, PREDICTIONS, twice, INFO)  # now 1, 2 and 3 are in the table too
    assert rows(lake, "SELECT prediction_id, label FROM predictions ORDER BY 1") == [
        {"prediction_id": "p1", "label": "car"}, {"prediction_id": "p2", "label": "truck"},
        {"prediction_id": "p3", "label": "truck"}, {"prediction_id": "p9", "label": "car"}]
    # Insert-if-absent keeps the first of each key: 4 once, as a car.
    again = pa.concat_tables([predictions([4], label="car"), predictions([4], label="bus")])
    assert tables.insert_new(lake, PREDICTIONS, again, INFO) == 1
    assert rows(lake, "SELECT label FROM predictions WHERE prediction_id = 'p4'") == [{"label": "car"}]


def test_a_set_replaced_is_still_there_as_of_its_earlier_version(lake):
    def named_set(ids):
        return make_rows(
            SETS, len(ids), name="s", image_id=ids, rank=list(range(1, len(ids) + 1)), created_at=datetime.now(UTC)
        )

    first = tables.replace(lake, SETS, named_set(["a", "b"]), "name = 's'", INFO)
    tables.replace(lake, SETS, named_set(["c"]), "name = 's'", INFO)
    assert rows(lake, "SELECT image_id FROM sets") == [{"image_id": "c"}]
    with LakeDB(lake, as_of={"sets": first}) as db:
        assert db.query("SELECT image_id FROM sets ORDER BY 1").to_pylist() == [{"image_id": "a"}, {"image_id": "b"}]
    assert tables.resolve_as_of(lake, str(first), ["sets"]) == {"sets": first}
    assert tables.resolve_as_of(lake, f"sets@{first}", ["sets", "images"]) == {"sets": first}
    assert tables.resolve_as_of(lake, "2001-01-01", ["sets"]) == {"sets": None}  # before the table existed
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert tables.resolve_as_of(lake, later, ["sets"]) == {"sets": first + 1}
    for spec, message in [("1", "reads images, sets"), ("sets@x", "TABLE@VERSION"), ("yesterday", "give a time")]:
        with pytest.raises(LakeError, match=message):
            tables.resolve_as_of(lake, spec, ["sets", "images"])


def test_blind_appends_from_many_threads_all_land(lake):
    tables.append(lake, REVIEWS, reviews(1, "first"), INFO)  # the table exists: the others race on commits only
    failures = []

    def decide(n: int) -> None:
        try:
            tables.append(lake, REVIEWS, reviews(10, f"t{n}"), INFO)
        except Exception as e:  # noqa: BLE001 - asserted below
            failures.append(e)

    threads = [threading.Thread(target=decide, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert rows(lake, "SELECT reviewer, count(*) n FROM raw.reviews GROUP BY ALL ORDER BY 1") == [
        {"reviewer": "first", "n": 1}, *({"reviewer": f"t{n}", "n": 10} for n in range(4))]
    assert tables.version(lake, REVIEWS) == 4


APPEND_FROM_A_PROCESS = """
import json, sys
from datetime import UTC, datetime
from mining.core import tables
from mining.core.config import S3Config
from mining.core.lake import Lake
from mining.core.schema import REVIEWS, make_rows
lake = Lake(sys.argv[1], S3Config(**json.loads(sys.argv[2])))
for k in range(3):
    rows = make_rows(REVIEWS, 5, review="p", image_id=[f"{sys.argv[3]}-{k}-{i}" for i in range(5)], decision="reject",
                     reviewer=sys.argv[3], decided_at=datetime.now(UTC))
    tables.append(lake, REVIEWS, rows, tables.commit_info("test", sys.argv[3]))
"""


@pytest.mark.slow
def test_reviewers_in_separate_processes_lose_no_decision(lake):
    tables.append(lake, REVIEWS, reviews(1, "first"), INFO)
    s3 = json.dumps(dataclasses.asdict(lake.s3))
    processes = [subprocess.Popen([sys.executable, "-c", APPEND_FROM_A_PROCESS, lake.uri, s3, f"p{n}"],
                                  stderr=subprocess.PIPE, text=True) for n in range(4)]
    for p in processes:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert rows(lake, "SELECT count(*) n, count(DISTINCT image_id) ids FROM raw.reviews WHERE review = 'p'") == [
        {"n": 60, "ids": 60}]
    assert tables.version(lake, REVIEWS) == 12  # the first commit and 4 x 3 more, none lost


def test_concurrent_upserts_of_the_same_rows_leave_each_key_once(lake):
    tables.upsert(lake, PREDICTIONS, predictions(list(range(50))), INFO)
    failures = []

    def rerun(n: int) -> None:
        try:
            tables.upsert(lake, PREDICTIONS, predictions(list(range(40, 80)), label=f"run{n}"), INFO)
        except Exception as e:  # noqa: BLE001 - asserted below
            failures.append(e)

    threads = [threading.Thread(target=rerun, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert rows(lake, "SELECT count(*) n, count(DISTINCT prediction_id) ids FROM predictions") == [{"n": 80, "ids": 80}]


def test_a_commit_killed_before_its_log_entry_is_invisible_and_vacuum_removes_it(lake):
    tables.append(lake, ERRORS, error_rows("a", [{"reason": "kept"}], datetime.now(UTC)), INFO)
    orphan = lake.path("errors", "part-00000-killed-before-commit.parquet")  # data written, no log entry
    import pyarrow.parquet as pq

    with lake.fs.open(orphan, "wb") as f:
        pq.write_table(error_rows("a", [{"reason": "orphan"}] * 5, datetime.now(UTC)), f)
    assert rows(lake, "SELECT reason FROM errors") == [{"reason": "kept"}]
    assert orphan.rsplit("/", 1)[1] in [p.rsplit("/", 1)[-1] for p in tables.vacuum(lake, ERRORS, 0)]
    assert not lake.fs.exists(orphan)
    assert rows(lake, "SELECT reason FROM errors") == [{"reason": "kept"}]


def test_compaction_makes_few_files_of_the_same_rows(lake):
    for day in (1, 2):
        for k in range(4):
            tables.append(
                lake, PREDICTIONS, predictions(list(range(k * 10 + day * 100, k * 10 + day * 100 + 10)), day=day), INFO
            )
    assert tables.files(lake, PREDICTIONS).num_rows == 8
    before = rows(lake, "SELECT * FROM predictions ORDER BY prediction_id")
    metrics = tables.compact(lake, PREDICTIONS, INFO, partitions=["2026-10-01"])
    assert metrics["numFilesRemoved"] == 4 and metrics["numFilesAdded"] == 1
    assert tables.files(lake, PREDICTIONS).num_rows == 5  # day 2 left as it was
    tables.compact(lake, PREDICTIONS, INFO, z_order=["label", "ts"])
    assert tables.files(lake, PREDICTIONS).num_rows == 2  # one per day
    assert rows(lake, "SELECT * FROM predictions ORDER BY prediction_id") == before
    assert len(tables.vacuum(lake, PREDICTIONS, 0)) == 9  # the 8 small files and the first compaction's, unused now


def test_a_damaged_log_or_a_newer_protocol_is_named(lake):
    tables.append(lake, ERRORS, error_rows("a", [{"reason": "x"}], datetime.now(UTC)), INFO)
    log = lake.path("errors", "_delta_log", "00000000000000000001.json")
    with lake.fs.open(log, "w") as f:
        f.write(json.dumps({"protocol": {"minReaderVersion": 99, "minWriterVersion": 99}}) + "\n")
    with pytest.raises(LakeError, match="table errors was written by a newer Delta Lake writer"):
        tables.open_table(lake, ERRORS)
    with pytest.raises(LakeError, match="table errors"):
        rows(lake, "SELECT count(*) FROM errors")
    with lake.fs.open(log, "w") as f:
        f.write("{not json\n")
    with pytest.raises(LakeError, match="table errors cannot be read: its Delta log is damaged"):
        tables.open_table(lake, ERRORS)


def test_other_engines_read_the_same_tables(lake):
    """Polars (through delta-rs) reads a table edgemine wrote, with the same rows."""
    polars = pytest.importorskip("polars")
    tables.upsert(lake, PREDICTIONS, predictions([1, 2, 3]), INFO)
    frame = polars.read_delta(tables.table_uri(lake, PREDICTIONS),
                              storage_options=tables.delta_storage_options(lake) or None)
    assert sorted(frame["prediction_id"].to_list()) == ["p1", "p2", "p3"]


@local_only
@pytest.mark.parametrize("column", [
    pa.array([datetime(2026, 11, 4, 23, 59)], pa.timestamp("us")),  # zone-less: the timestampNtz table feature
    pa.array([1], pa.uint64()), pa.array([1.5], pa.float16()), pa.array([1], pa.duration("s")),
    pa.array([3600], pa.time32("s")), pa.array([None], pa.null()),
], ids=lambda c: str(c.type))
@pytest.mark.parametrize("how", ["append", "upsert", "new table"])
def test_a_column_that_would_make_a_table_unreadable_is_never_committed(lake, column, how):
    """The writer's last guard, whatever a caller hands it: refused before the commit, and
    every reader still reads the table (the issue's finding: one timestamp field broke
    `predictions` for good)."""
    if how != "new table":
        tables.append(lake, PREDICTIONS, predictions([1, 2]), INFO)
    before = tables.version(lake, PREDICTIONS)
    bad = predictions([3]).append_column("captured_at", column)
    write = tables.upsert if how == "upsert" else tables.append
    with pytest.raises(LakeError, match=r"refused before committing to table predictions: column\(s\) captured_at"):
        write(lake, PREDICTIONS, bad, INFO)
    assert tables.version(lake, PREDICTIONS) == before
    if how != "new table":
        assert rows(lake, "SELECT count(*) n FROM predictions")[0]["n"] == 2
        assert "captured_at" not in tables.open_table(lake, PREDICTIONS).schema().to_arrow().names
