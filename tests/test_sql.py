from __future__ import annotations

import dataclasses
import json
import multiprocessing
import re
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from jobs.ingest_images import ingest_images
from jobs.ingest_predictions import ingest_predictions
from mining.core import sql
from mining.core.errors import QueryError, ReadOnlyError
from mining.core.schema import TABLES
from mining.core.sql import LakeDB, extension_path, view_statements
from tests.helpers import (
    clustered,
    jsonl,
    local_only,
    prediction,
    put,
    put_images,
    source_uri,
    write_embeddings,
    write_fixed_size_embeddings,
)


@pytest.fixture
def filled(lake, small_ingest):
    folder = source_uri(lake, "images")
    uris = put_images(lake, folder, 30)
    ingest_images(lake, folder, small_ingest, show_progress=False)
    uri = put(lake, source_uri(lake, "in/p.jsonl"), jsonl([prediction(u, i) for i, u in enumerate(uris)]))
    ingest_predictions(lake, [uri], small_ingest, show_progress=False)
    return lake


def test_every_table_has_a_view_even_when_empty(lake):
    with LakeDB(lake) as db:
        for name, table in TABLES.items():
            described = db.query(f"DESCRIBE {name}").column("column_name").to_pylist()
            assert described[: len(table.schema)] == table.schema.names
            assert db.query(f"SELECT count(*) AS n FROM {name}").column("n")[0].as_py() == 0


def test_views_join_and_aggregate(filled):
    with LakeDB(filled) as db:
        got = db.query(
            "SELECT p.label, count(*) AS n, min(i.width) AS w FROM predictions p JOIN images i USING (image_id) "
            "WHERE p.confidence < 0.99 GROUP BY ALL ORDER BY p.label"
        ).to_pylist()
    assert got == [{"label": "car", "n": 15, "w": 64}, {"label": "person", "n": 15, "w": 64}]


REFUSED = [
    "COPY (SELECT 1) TO '{root}/predictions/evil.parquet' (USE_TMP_FILE false)",
    "COPY (SELECT 1 AS a) TO '{root}/x.csv'",
    "CREATE TABLE t AS SELECT 1",
    "INSERT INTO predictions SELECT * FROM predictions",
    "DELETE FROM predictions",
    "DROP VIEW predictions",
    "ATTACH '{root}/other.db'",
    "INSTALL spatial",
    "SET enable_external_access = true",
    "EXPORT DATABASE '{root}/dump'",
    "SELECT 1; COPY (SELECT 1) TO '{root}/y.csv'",
]


# A statement that writes to a path in the lake runs on S3 too (an s3:// URL there); the rest touch no storage.
@pytest.mark.parametrize("lake, statement", [(leg, statement) for statement in REFUSED
                                             for leg in (("local", "s3") if "{root}" in statement else ("local",))],
                         indirect=["lake"])
def test_read_only_refuses_writes(filled, statement):
    root = filled.url(filled.root)
    files_before = sorted(filled.fs.find(filled.root))
    with LakeDB(filled) as db, pytest.raises(ReadOnlyError, match="read-only"):
        db.query(statement.format(root=root))
    assert sorted(filled.fs.find(filled.root)) == files_before


def test_read_only_cannot_read_outside_the_lake(filled, tmp_path):
    beside = put(filled, source_uri(filled, "secret.csv"), "a\n1\n")  # same storage, outside the lake
    (tmp_path / "local.csv").write_text("a\n1\n")
    with LakeDB(filled, read_only=False) as unlocked:  # control: the file is readable without the sandbox
        assert unlocked.query(f"SELECT * FROM read_csv('{beside}')").num_rows == 1
    with LakeDB(filled) as db:
        for outside in (beside, tmp_path / "local.csv", "/etc/passwd"):
            with pytest.raises(ReadOnlyError, match="table functions are refused \\(read_csv\\)"):
                db.query(f"SELECT * FROM read_csv('{outside}')")
            with pytest.raises(ReadOnlyError, match="is not a view of this lake"):
                db.query(f"SELECT * FROM '{outside}'")  # a file named as a table
        # Sandboxed, yet the lake itself still reads.
        assert db.query("SELECT count(*) AS n FROM predictions").column("n")[0].as_py() == 30


def test_another_delta_table_leaks_neither_rows_nor_schema_nor_statistics(filled, tmp_path):
    """A Delta table outside the lake: delta_scan is refused before DuckDB would read its log
    (which DuckDB's own sandbox lets through: it refuses only the data files)."""
    from deltalake import write_deltalake

    from mining.core.tables import delta_storage_options

    outside = source_uri(filled, "secret_table")
    write_deltalake(outside, pa.table({"salary": [1, 2, 3], "day": ["a", "a", "b"]}), partition_by=["day"],
                    storage_options=delta_storage_options(filled) or None)
    with LakeDB(filled) as db:
        for query in [
            f"SELECT * FROM delta_scan('{outside}')",
            f"DESCRIBE SELECT * FROM delta_scan('{outside}')",
            f"SELECT count(*) FROM delta_scan('{outside}') WHERE day = 'a'",
            f"SELECT * FROM predictions WHERE image_id IN (SELECT salary::VARCHAR FROM delta_scan('{outside}'))",
            f"SELECT * FROM parquet_metadata('{outside}/day=a')",
            "SELECT * FROM duckdb_settings()",
        ]:
            with pytest.raises(ReadOnlyError, match="table functions are refused"):
                db.query(query)
        assert db.query("SELECT count(*) n FROM range(3)").to_pylist() == [{"n": 3}]  # harmless ones still run
        assert db.query("WITH p AS (SELECT * FROM predictions) SELECT count(*) n FROM p").to_pylist() == [{"n": 30}]


@local_only
def test_duckdbs_spill_folder_is_not_readable_from_the_console(filled, tmp_path, monkeypatch):
    """DuckDB's default temporary folder (.tmp where it runs) counted as an allowed directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "planted.csv").write_text("a\n1\n")
    with LakeDB(filled) as db:
        setting = db.query("SELECT current_setting('temp_directory') AS t").column("t")[0].as_py()
        assert not setting.startswith(str(tmp_path)) and "edgemine-duckdb-" in setting
        with pytest.raises(QueryError):
            db.query(f"SELECT * FROM '{tmp_path}/.tmp/planted.csv'")


def test_view_statements_work_in_a_plain_duckdb_client(filled):
    text = view_statements(filled)
    assert "INSTALL delta;\nLOAD delta;" in text and "delta_scan(" in text
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    # This machine cannot reach DuckDB's extension server: the packages' files instead.
    text = text.replace("INSTALL delta;\nLOAD delta;", f"LOAD '{extension_path('delta')}';")
    if filled.protocol == "s3":
        s3 = filled.s3
        text = text.replace("INSTALL httpfs;\nLOAD httpfs;", f"LOAD '{extension_path('httpfs')}';")
        text = text.replace("<AWS_ACCESS_KEY_ID>", s3.key).replace("<AWS_SECRET_ACCESS_KEY>", s3.secret)
    con.execute(text)
    assert con.sql("SELECT count(*) FROM predictions").fetchone()[0] == 30
    assert con.sql("SELECT count(*) FROM images").fetchone()[0] == 30


def test_embeddings_view_is_a_float_list_for_similarity(lake):
    """Backbones differ in width (512, 1280): the view keeps Delta's list, which list_* functions take."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    write_embeddings(lake, [f"id{i}" for i in range(4)], vectors, "test")
    with LakeDB(lake) as db:
        [kind] = db.query("SELECT DISTINCT typeof(embedding) AS t, len(embedding) AS n FROM embeddings").to_pylist()
        assert kind == {"t": "FLOAT[]", "n": 512}
        sims = db.query(
            "SELECT b.image_id, list_cosine_similarity(a.embedding, b.embedding) AS s FROM embeddings a, embeddings b "
            "WHERE a.image_id = 'id0' ORDER BY b.image_id"
        ).column("s").to_numpy()
    assert sims == pytest.approx(vectors @ vectors[0], abs=1e-5)


def test_readmes_nearest_neighbours_sql_runs_on_a_lake_of_two_widths_old_files_included(lake):
    """The README's example, verbatim, where an older lake's fixed-size 512-d files sit beside
    EfficientNet-Lite0's 1280-d lists: it compares each vector with those of its own set only."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = re.search(r'edgemine sql "(WITH q AS .*?)"\s+# nearest neighbours', readme, flags=re.S)
    assert example, "README's nearest-neighbour example moved: keep this test on it"
    old = clustered(6, seed=1)
    write_fixed_size_embeddings(lake, [f"r{i}" for i in range(6)], old)
    write_embeddings(lake, [f"e{i}" for i in range(4)], clustered(4, seed=2, width=1280), "lite0",
                     backbone="efficientnet-lite0", weights="imagenet1k_tf")
    with LakeDB(lake) as db:
        widths = db.query("SELECT backbone, min(len(embedding)) lo, max(len(embedding)) hi FROM embeddings "
                          "GROUP BY ALL ORDER BY ALL").to_pylist()
        assert widths == [{"backbone": "efficientnet-lite0", "lo": 1280, "hi": 1280},
                          {"backbone": "resnet18", "lo": 512, "hi": 512}]
        found = db.query(example[1]).to_pylist()
    # The query image first (itself: similarity 1), then only images of its own embedding set.
    own_set = {row["image_id"][0] for row in found}
    assert found[0]["sim"] == pytest.approx(1.0, abs=1e-5) and len(own_set) == 1
    assert len(found) == {"r": 5, "e": 4}[own_set.pop()]


@local_only
def test_a_filter_on_the_partition_reads_only_that_day(filled):
    """The views are the tables as they are (no window over them): DuckDB prunes the other days."""
    with LakeDB(filled) as db:
        plan = db.query("EXPLAIN ANALYZE SELECT count(*) FROM predictions WHERE date = DATE '2026-10-02'")
        text = "\n".join(str(v) for v in plan.column(1).to_pylist())
        assert db.query("SELECT count(*) n FROM predictions WHERE date = DATE '2026-10-02'").to_pylist() == [{"n": 10}]
    assert "date=" in text or "Filters" in text  # the filter is pushed into delta_scan, not applied after a window
    assert "WINDOW" not in text.upper()


def test_reviews_keep_every_decision_and_show_the_latest(filled):
    from mining.review.decisions import decide

    image_id = _one(filled, "SELECT min(image_id) FROM images")
    with LakeDB(filled) as db:
        decide(db, "r", [image_id], "accept", reviewer="ana")
        decide(db, "r", [image_id], "reject", reviewer="bob")
        assert db.query("SELECT decision, reviewer FROM reviews").to_pylist() == [
            {"decision": "reject", "reviewer": "bob"}
        ]
        assert db.query("SELECT count(*) n FROM raw.reviews").to_pylist() == [{"n": 2}]
        with pytest.raises(ReadOnlyError, match="raw.predictions is not a view of this lake"):
            db.query("SELECT * FROM raw.predictions")  # history is kept where it matters only


def test_shared_views_see_what_this_process_and_others_publish(filled, small_ingest, monkeypatch):
    """Read-only LakeDBs share one database per lake; commits made after it was built
    still show, by this process (more images) or another (the reviews table's first)."""
    monkeypatch.setattr(sql, "RECHECK_MISSING_S", 0.0)  # other processes' new tables: looked for on every query
    image_id = _one(filled, "SELECT min(image_id) FROM images")
    with LakeDB(filled) as db:
        held = db.query("SELECT count(*) FROM images").column(0)[0].as_py()
        assert _one(filled, "SELECT count(*) FROM reviews") == 0 and held == 30

        other_process = (
            "import json, sys; from mining.review.decisions import decide; from mining.core.config import S3Config; "
            "from mining.core.lake import Lake; from mining.core.sql import LakeDB; "
            "decide(LakeDB(Lake(sys.argv[1], S3Config(**json.loads(sys.argv[2])))), 'r1', [sys.argv[3]], 'accept', "
            "reviewer='bob')"
        )
        s3 = json.dumps(dataclasses.asdict(filled.s3))
        subprocess.run([sys.executable, "-c", other_process, filled.uri, s3, image_id], check=True, timeout=120)
        assert (
            db.query("SELECT count(*) FROM reviews WHERE reviewer = 'bob'").column(0)[0].as_py() == 1
        )  # held, yet sees it

        folder = source_uri(filled, "more")
        put_images(filled, folder, 10, start=30)
        ingest_images(filled, folder, small_ingest, show_progress=False)
        assert _one(filled, "SELECT count(*) FROM images") == 40
        assert db.query("SELECT count(*) FROM images").column(0)[0].as_py() == 40  # the view reads the latest version


def test_shared_views_serve_many_threads_at_once_in_utc(filled):
    expected = _one(filled, "SELECT count(*) FROM predictions p JOIN images USING (image_id)")
    results, failures = [], []

    def read() -> None:
        try:
            for _ in range(5):
                with LakeDB(filled) as db:
                    row = db.query("SELECT count(*) AS n, current_setting('TimeZone') AS tz "
                                   "FROM predictions p JOIN images USING (image_id)").to_pylist()[0]
                    results.append((row["n"], row["tz"]))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            failures.append(e)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures and results == [(expected, "UTC")] * 40


def _one(lake, sql: str):
    with LakeDB(lake) as db:
        return db.query(sql).column(0)[0].as_py()


def _count_images(lake) -> int:
    return _one(lake, "SELECT count(*) FROM images")


def test_a_forked_worker_reads_the_lake(filled):
    """DataLoader and pool workers are forked after the parent opened its shared database.
    (The child builds its own; a database forked mid-query could hold locks no child thread releases.)"""
    parent = _count_images(filled)  # the parent's database exists before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_count_images, (filled,)).get(timeout=120) == parent == 30


PLAIN_AND_NOT = {  # head_rows fetches the first as DuckDB's rows, the second through Arrow
    "plain": "SELECT range::INTEGER AS i, range * 2 AS b, range / 3 AS d, (range / 7)::FLOAT AS f, 'x' || range AS s, "
             "range % 2 = 0 AS t, CASE WHEN range = 1 THEN NULL END AS n FROM range(7)",
    "other": "SELECT TIMESTAMPTZ '2026-01-02 03:04:05+00' + to_seconds(range) AS ts, MAP {'k': range} AS m, "
             "[range, NULL] AS l, {'a': range} AS st, (range / 3)::DECIMAL(6, 2) AS dec, DATE '2026-01-02' AS day, "
             "'\\x01'::BLOB AS raw, 'cpu'::ENUM('cpu', 'gpu') AS e FROM range(7)",
}


@pytest.mark.parametrize("kind", PLAIN_AND_NOT)
@pytest.mark.parametrize("max_rows", [3, 7, 50])
def test_head_rows_are_heads_values_plain_columns_without_arrow(lake, kind, max_rows):
    query = PLAIN_AND_NOT[kind]
    with LakeDB(lake) as db:
        head = db.head(query, max_rows)
        rows = db.head_rows(query, max_rows)
    assert rows.names == head.table.column_names
    assert rows.to_pylist() == head.table.to_pylist() and len(rows.rows) == min(max_rows, 7)
    assert rows.cut is head.cut is (max_rows < 7)
    if kind == "plain":  # the rows DuckDB gave, not Arrow's (a float32 still its float32 value)
        assert sql.PLAIN_TYPES >= {"INTEGER", "BIGINT", "DOUBLE", "FLOAT", "VARCHAR", "BOOLEAN"}
        assert rows.rows[1][3] == float(np.float32(1 / 7)) and rows.rows[1][6] is None


def test_head_rows_keep_columns_of_the_same_name(lake):
    with LakeDB(lake) as db:
        assert db.head_rows("SELECT 1 AS a, 2 AS a").rows == [(1, 2)]
        assert db.head_rows("SELECT [1] AS a, [2] AS a").rows == [([1], [2])]
