"""`edgemine migrate`: a lake in the layout before Delta tables (folders of Parquet files,
several rows per key, deduplicated by the old views) becomes Delta tables with the rows
the old views showed; until then every command says to run it. On a folder and on S3."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from jobs.cli import main
from jobs.migrate import migrate_lake
from mining.core import tables
from mining.core.errors import LakeError
from mining.core.sql import LakeDB
from tests.helpers import local_only, rows

T0 = datetime(2026, 10, 1, 8, tzinfo=UTC)
STRING, TS = pa.string(), pa.timestamp("us", tz="UTC")


def old_file(lake, folder: str, name: str, columns: dict) -> None:
    """One Parquet file of the old layout: plain columns, partition values in the folder name."""
    lake.write_parquet(pa.table(columns), lake.path(folder, name))


@pytest.fixture
def old_lake(lake):
    """What jobs wrote before Delta: each table a folder of shard files, reruns and re-registrations as extra rows."""
    a, b = "a" * 20, "b" * 20
    image = {"width": [64], "height": [48], "bytes": [100], "sha256": ["s"], "format": ["JPEG"], "mode": ["RGB"],
             "source": ["/cams"]}
    old_file(lake, "images", "img-1-00000.parquet", {"image_id": [a], "uri": ["/cams/a.jpg"], **image,
                                                     "ingested_at": pa.array([T0], TS)})
    old_file(lake, "images", "img-2-00000.parquet", {"image_id": [a, b], "uri": ["/cams/copy/a.jpg", "/cams/b.jpg"],
                                                     **{k: v * 2 for k, v in image.items()},
                                                     "ingested_at": pa.array([T0 + timedelta(hours=1)] * 2, TS)})

    def prediction_file(name: str, ids: list[str], label: str, at: datetime) -> None:
        n = len(ids)
        old_file(
            lake,
            "predictions/date=2026-10-01",
            name,
            {
                "prediction_id": ids,
                "image_id": [a] * n,
                "image_uri": ["/cams/a.jpg"] * n,
                "model_version": ["v1"] * n,
                "ts": pa.array([T0] * n, TS),
                "label": [label] * n,
                "confidence": pa.array([0.5] * n, pa.float32()),
                "scores": pa.array([None] * n, pa.map_(pa.string(), pa.float32())),
                "source": [f"/in/{name}"] * n,
                "source_row": pa.array(range(1, n + 1), pa.int64()),
                "ingested_at": pa.array([at] * n, TS),
                "camera": ["c7"] * n,
            },
        )

    prediction_file("pred-1-00000.parquet", ["p1", "p2"], "car", T0)
    prediction_file("pred-2-00000.parquet", ["p2", "p3"], "truck", T0 + timedelta(hours=2))  # p2 again, later: wins
    old_file(
        lake,
        "detections/date=2026-10-01",
        "pred-1-00000.parquet",
        {
            "detection_id": ["p1-0"],
            "prediction_id": ["p1"],
            "image_id": [a],
            "model_version": ["v1"],
            "ts": pa.array([T0], TS),
            "box": pa.array([[1.0, 2.0, 3.0, 4.0]], pa.list_(pa.float32(), 4)),
            "label": ["car"],
            "score": pa.array([0.9], pa.float32()),
            "ingested_at": pa.array([T0], TS),
        },
    )
    old_file(
        lake,
        "errors",
        "pred-1-00000.parquet",
        {
            "job": ["ingest-predictions"] * 2,
            "source": ["/in/x"] * 2,
            "row": pa.array([3, 4], pa.int64()),
            "uri": pa.array([None, None], STRING),
            "reason": ["bad ts", "bad confidence"],
            "raw": ["{}", "{}"],
            "at": pa.array([T0] * 2, TS),
        },
    )
    for k, members in enumerate([[a, b], [b]]):  # set "s" saved twice: the second replaced the first
        old_file(
            lake,
            "sets",
            f"set-{k}-00000.parquet",
            {
                "name": ["s"] * len(members),
                "image_id": members,
                "rank": pa.array(range(1, len(members) + 1), pa.int32()),
                "score": pa.array([None] * len(members), pa.float32()),
                "source": ["t"] * len(members),
                "created_by": ["ana"] * len(members),
                "created_at": pa.array([T0 + timedelta(minutes=k)] * len(members), TS),
            },
        )
    for k, decision in enumerate(["accept", "reject"]):
        old_file(lake, "reviews", f"review-{k}-00000.parquet", {
            "review": ["r"], "image_id": [a], "decision": [decision], "reviewer": [f"rev{k}"], "source": ["t"],
            "decided_at": pa.array([T0 + timedelta(minutes=k)], TS)})
    lake.write_marker("ingest-predictions", "pred-1", {"status": "done", "identity": {"size": 1, "version": "x"}})
    lake.write_parquet(pa.table({"x": [1]}), lake.path("_staging", "ingest-predictions", "pred-9", "half.parquet"))
    return lake


def test_commands_on_an_old_lake_say_to_migrate(old_lake, capsys, request):
    with pytest.raises(LakeError, match="old layout .*edgemine migrate"):
        rows(old_lake, "SELECT count(*) FROM predictions")
    if old_lake.protocol == "s3":
        request.getfixturevalue("s3_env")  # the CLI finds the endpoint and keys in the environment
    assert main(["sql", "SELECT count(*) FROM images", "--lake", old_lake.uri]) == 2
    assert "edgemine migrate" in capsys.readouterr().err


def test_migrate_keeps_what_the_old_views_showed(old_lake, request, capsys):
    if old_lake.protocol == "s3":
        request.getfixturevalue("s3_env")
    assert main(["migrate", "--lake", old_lake.uri, "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    migrated = {t["table"]: (t["files"], t["stored_rows"], t["rows"]) for t in report["tables"]}
    assert migrated == {"images": (2, 3, 2), "predictions": (2, 4, 3), "detections": (1, 1, 1), "errors": (1, 2, 2),
                        "sets": (2, 3, 1), "reviews": (2, 2, 2)}
    assert rows(old_lake, "SELECT image_id, uri FROM images ORDER BY 1") == [
        {"image_id": "a" * 20, "uri": "/cams/copy/a.jpg"}, {"image_id": "b" * 20, "uri": "/cams/b.jpg"}]
    assert rows(old_lake, "SELECT count(*) n FROM image_files") == [{"n": 3}]  # every registered file
    assert rows(old_lake, "SELECT prediction_id, label, camera, date FROM predictions ORDER BY 1") == [
        {"prediction_id": "p1", "label": "car", "camera": "c7", "date": T0.date()},
        {"prediction_id": "p2", "label": "truck", "camera": "c7", "date": T0.date()},
        {"prediction_id": "p3", "label": "truck", "camera": "c7", "date": T0.date()}]
    assert rows(old_lake, "SELECT detection_id, source FROM detections") == [
        {"detection_id": "p1-0", "source": "/in/pred-1-00000.parquet"}]  # the source of its prediction
    assert rows(old_lake, "SELECT image_id FROM sets WHERE name = 's'") == [{"image_id": "b" * 20}]
    assert rows(old_lake, "SELECT decision FROM reviews") == [{"decision": "reject"}]
    assert rows(old_lake, "SELECT count(*) n FROM raw.reviews") == [{"n": 2}]
    assert {c["job"] for c in tables.history(old_lake, "predictions")} == {"migrate"}
    assert old_lake.read_marker("ingest-predictions", "pred-1")["status"] == "done"  # ingested files stay skipped
    assert not old_lake.fs.exists(old_lake.path("_staging"))
    assert old_lake.fs.exists(old_lake.path("_migrated", "predictions"))  # the old files, kept until you delete them

    assert main(["migrate", "--lake", old_lake.uri, "--quiet"]) == 0
    assert "nothing to migrate" in capsys.readouterr().out


def test_a_migration_killed_half_way_is_finished_by_the_next(old_lake, monkeypatch):
    real, written = tables.overwrite, []

    def die_on_the_third(lake, table, rows_, info):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        written.append(table.name)
        return real(lake, table, rows_, info)

    monkeypatch.setattr(tables, "overwrite", die_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        migrate_lake(old_lake, show_progress=False)
    monkeypatch.undo()
    assert written == ["image_files", "images"]
    done = migrate_lake(old_lake, show_progress=False)
    assert [t["table"] for t in done.tables] == ["predictions", "detections", "errors", "sets", "reviews"]
    with LakeDB(old_lake) as db:
        assert db.query("SELECT count(*) n FROM predictions").to_pylist() == [{"n": 3}]
        assert db.query("SELECT count(*) n FROM images").to_pylist() == [{"n": 2}]


@local_only
def test_migrate_looks_at_each_tables_folder_a_few_times_not_once_per_table(old_lake, monkeypatch):
    """On S3 each look is requests: asking for every old-layout table once per table cost
    about 500 listings per migration (30 s on moto)."""
    from mining.core.lake import Lake
    from mining.core.schema import TABLES

    looked, real = [], Lake.in_old_layout
    monkeypatch.setattr(Lake, "in_old_layout", lambda self, table: looked.append(table) or real(self, table))
    migrate_lake(old_lake, show_progress=False)
    assert 0 < len(looked) <= 2 * len(TABLES)  # whether it is old; once more as its Delta table is created
