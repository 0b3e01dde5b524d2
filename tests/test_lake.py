from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from mining.lake import Lake
from mining.schema import ERRORS, PREDICTIONS
from tests.helpers import kill_commit_after_moves


def error_rows(n: int, reason: str) -> pa.Table:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    return pa.Table.from_pylist(
        [{"job": "t", "source": "s", "row": i, "uri": None, "reason": reason, "raw": None, "at": at} for i in range(n)],
        schema=ERRORS.schema,
    )


def published(lake: Lake) -> list[str]:
    return [p.rsplit("/", 1)[1] for p in lake.fs.find(lake.table_dir(ERRORS))] if lake.fs.exists(lake.table_dir(ERRORS)) else []


def test_staged_files_are_invisible_until_commit_and_replace_the_shards_earlier_files(lake):
    first = lake.shard_writer("job", "s1")
    for k in range(3):
        first.write(ERRORS, error_rows(2, f"first {k}"))
    assert published(lake) == []  # staged only
    record = first.commit({"note": "x"})
    assert record["status"] == "done" and record["rows"] == {"errors": 6} and record["note"] == "x"
    assert sorted(published(lake)) == ["s1-00000.parquet", "s1-00001.parquet", "s1-00002.parquet"]

    other = lake.shard_writer("job", "s2")
    other.write(ERRORS, error_rows(1, "other shard"))
    other.commit()

    second = lake.shard_writer("job", "s1")
    second.write(ERRORS, error_rows(4, "second"))
    second.commit()
    assert sorted(published(lake)) == ["s1-00000.parquet", "s2-00000.parquet"]
    assert lake.read_marker("job", "s1")["files"] == ["errors/s1-00000.parquet"]


def test_a_commit_killed_half_way_is_cleaned_up_by_the_redo(lake, monkeypatch):
    first = lake.shard_writer("job", "s1")
    for k in range(3):
        first.write(ERRORS, error_rows(1, f"v1 {k}"))
    first.commit()

    crashing = lake.shard_writer("job", "s1")
    for k in range(5):
        crashing.write(ERRORS, error_rows(1, f"v2 {k}"))
    kill_commit_after_moves(monkeypatch, lake, 4)
    with pytest.raises(KeyboardInterrupt):
        crashing.commit()
    monkeypatch.undo()
    assert lake.read_marker("job", "s1")["status"] == "committing"

    redo = lake.shard_writer("job", "s1")
    redo.write(ERRORS, error_rows(1, "v3"))
    redo.commit()
    assert published(lake) == ["s1-00000.parquet"]
    assert lake.read_marker("job", "s1")["status"] == "done"


def test_partitioned_tables_need_the_partition(lake):
    row = {"prediction_id": "a", "image_id": "b", "model_version": "m", "confidence": 0.5, "ts": datetime(2026, 1, 1, tzinfo=UTC)}
    rows = pa.Table.from_pylist([row], schema=PREDICTIONS.schema)
    with pytest.raises(ValueError, match="partitioned by date"):
        lake.shard_writer("job", "p").write(PREDICTIONS, rows)


def test_paths_and_urls(tmp_path):
    local = Lake(str(tmp_path / "lake") + "/")
    assert local.uri == str(tmp_path / "lake") and local.protocol == "file"
    assert local.url(local.table_dir("images")) == str(tmp_path / "lake" / "images")
    with pytest.raises(ValueError, match="unknown table 'nope'; tables: "):
        local.table_dir("nope")


def test_contains_tells_inside_from_beside(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    assert lake.contains(str(tmp_path / "lake" / "predictions" / "x.parquet"))
    assert lake.contains(str(tmp_path / "lake"))
    assert not lake.contains(str(tmp_path / "lake2" / "x.parquet"))  # a shared name prefix is not inside
    assert not lake.contains("s3://bucket" + str(tmp_path / "lake"))
