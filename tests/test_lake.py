from __future__ import annotations

import pytest

from mining.core.errors import LakeError
from mining.core.lake import Lake
from mining.core.schema import ERRORS, error_rows


def test_paths_and_urls(tmp_path):
    local = Lake(str(tmp_path / "lake") + "/")
    assert local.uri == str(tmp_path / "lake") and local.protocol == "file"
    assert local.url(local.table_dir("images")) == str(tmp_path / "lake" / "images")
    with pytest.raises(LakeError, match="unknown table 'nope'; tables: images, image_files"):
        local.table_dir("nope")


def test_contains_tells_inside_from_beside(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    assert lake.contains(str(tmp_path / "lake" / "predictions" / "x.parquet"))
    assert lake.contains(str(tmp_path / "lake"))
    assert not lake.contains(str(tmp_path / "lake2" / "x.parquet"))  # a shared name prefix is not inside
    assert not lake.contains("s3://bucket" + str(tmp_path / "lake"))


def test_an_old_layout_table_is_named_with_what_to_run(lake):
    from datetime import UTC, datetime

    lake.check_layout()  # an empty lake is fine
    lake.write_parquet(
        error_rows("t", [{"reason": "r"}], datetime.now(UTC)), lake.path("errors", "old-shard-00000.parquet")
    )
    assert lake.old_layout_tables() == [ERRORS.name]
    with pytest.raises(LakeError, match="old layout .*errors.*edgemine migrate"):
        lake.check_layout()


def test_a_table_whose_first_commit_is_under_way_is_not_the_old_layout(lake):
    """A first writer puts its data files down before its first commit; a reader or a second
    first writer seeing them (two reviewers' first decisions at once) must not call it old."""
    from datetime import UTC, datetime

    from mining.core import tables

    now = datetime.now(UTC)
    tables.append(lake, ERRORS, error_rows("t", [{"reason": "first"}], now), tables.commit_info("test"))
    lake.fs.rm(lake.path(ERRORS.name, "_delta_log"), recursive=True)  # the data file, before its commit
    assert [p for p in lake.fs.find(lake.table_dir(ERRORS)) if p.endswith(".parquet")]
    assert not lake.in_old_layout(ERRORS)
    lake.check_layout()
    tables.append(lake, ERRORS, error_rows("t", [{"reason": "second"}], now), tables.commit_info("test"))
    assert tables.open_table(lake, ERRORS).to_pyarrow_table().column("reason").to_pylist() == ["second"]


def test_markers_record_what_a_job_finished(lake):
    assert lake.read_marker("job", "s1") is None
    lake.write_marker("job", "s1", {"status": "done", "rows": 3})
    lake.write_marker("job", "s1", {"status": "done", "rows": 4})
    assert lake.read_marker("job", "s1") == {"status": "done", "rows": 4}


def test_read_many_reads_each_object_in_one_request_and_tells_empty_from_missing(lake, monkeypatch):
    from mining.core.lake import read_many

    lake.fs.makedirs(lake.path("src"), exist_ok=True)
    for name, data in (("a.jpg", b"abc" * 1000), ("empty.jpg", b"")):
        lake.fs.pipe_file(lake.path("src", name), data)
    # A size request (HEAD) per object would double the requests of every image read on S3.
    asked = []
    for method in ("_info", "info"):
        original = getattr(type(lake.fs), method, None)
        if original is not None:
            monkeypatch.setattr(
                type(lake.fs),
                method,
                lambda self, path, *a, _o=original, **k: asked.append(path) or _o(self, path, *a, **k),
            )
    got = read_many(lake.fs, [lake.path("src", n) for n in ("a.jpg", "empty.jpg", "gone.jpg")])
    assert got[:2] == [b"abc" * 1000, b""]
    assert isinstance(got[2], FileNotFoundError)
    assert asked == []


def test_a_query_on_a_lake_with_missing_tables_does_not_scan_every_table(lake, monkeypatch):
    from mining.core.sql import LakeDB

    # Each missing table looks at its own folder only: scanning all tables for each one
    # cost thousands of requests per command on S3.
    monkeypatch.setattr(Lake, "old_layout_tables", lambda self: pytest.fail("scanned every table"))
    with LakeDB(lake) as db:
        assert db.query("SELECT count(*) AS n FROM predictions JOIN images USING (image_id)").to_pylist() == [{"n": 0}]


@pytest.mark.parametrize("uri", ["/", "/proc", "/proc/self/status", "/sys/kernel", "/dev/null", "s3://", "s3:///"])
def test_a_job_never_walks_the_whole_file_system_a_system_folder_or_every_bucket(uri, tmp_path):
    """Found by the CLI fuzz test: `ingest feedback /` walked the whole machine and a file under
    /proc crashed the JSON reader."""
    from mining.core.config import S3Config
    from mining.core.errors import InputError
    from mining.core.lake import walkable

    with pytest.raises(InputError, match="root of the file system|a system folder|name a bucket"):
        walkable(uri, S3Config())
    (tmp_path / "in").mkdir()
    assert walkable(str(tmp_path / "in"), S3Config())[1] == str(tmp_path / "in")
