from __future__ import annotations

import gzip
import io
import json
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.ingest_images import ingest_images
from jobs.ingest_predictions import IngestFileError, ingest_predictions
from mining.core import tables
from mining.core.sql import LakeDB
from tests.helpers import jsonl, local_only, prediction, put, put_images, source_uri


def rows(lake, sql):
    with LakeDB(lake) as db:
        return db.query(sql).to_pylist()


@pytest.fixture
def images(lake, small_ingest):
    folder = source_uri(lake, "images")
    uris = put_images(lake, folder, 120)
    ingest_images(
        lake, folder, replace(small_ingest, image_shard=200), show_progress=False
    )  # one shard: 3 commits, not 9
    return uris


def test_jsonl_rows_land_in_predictions_and_detections(lake, images, small_ingest):
    preds = [prediction(u, i) for i, u in enumerate(images)]
    preds[0] |= {
        "scores": {"car": 0.7, "person": 0.3},
        "detections": [
            {"box": [1, 2, 30, 40], "label": "car", "score": 0.9},
            {"box": [5, 5, 9, 9], "label": "dog", "score": 0.2},
        ],
    }
    uri = put(lake, source_uri(lake, "in/preds.jsonl"), jsonl(preds))

    summary = ingest_predictions(lake, [uri], small_ingest, show_progress=False)

    assert summary.to_dict()["rows"] == {"predictions": 120, "detections": 2}
    assert summary.to_dict()["errors"] == 0
    got = rows(lake, "SELECT * FROM predictions ORDER BY source_row")
    assert len(got) == 120
    first = got[0]
    assert first["image_uri"] == images[0]
    assert first["model_version"] == "v7" and first["label"] == "car"
    assert first["confidence"] == pytest.approx(preds[0]["confidence"], abs=1e-6)
    assert dict(first["scores"]) == pytest.approx({"car": 0.7, "person": 0.3})
    assert first["camera"] == "cam-0"  # an input field beyond the documented ones is kept
    assert str(first["date"]) == "2026-10-01"
    assert first["source_row"] == 1
    image_ids = {r["uri"]: r["image_id"] for r in rows(lake, "SELECT uri, image_id FROM images")}
    assert first["image_id"] == image_ids[images[0]]
    dets = rows(lake, "SELECT label, box, score, prediction_id FROM detections ORDER BY detection_id")
    assert [d["label"] for d in dets] == ["car", "dog"]
    assert dets[0]["box"] == pytest.approx([1, 2, 30, 40])
    assert {d["prediction_id"] for d in dets} == {first["prediction_id"]}
    # Partitioned by the date of ts: one folder per day.
    days = {str(d) for d in tables.files(lake, "predictions").column("partition.date").to_pylist()}
    assert days == {"2026-10-01", "2026-10-02", "2026-10-03"}


@local_only
def test_bad_rows_are_recorded_with_reasons_and_the_rest_lands(lake, images, small_ingest):
    good = [prediction(u, i) for i, u in enumerate(images[:10])]
    bad = [
        prediction(images[10], 10, confidence=1.5),
        prediction(images[11], 11, confidence=float("nan")),
        prediction(images[12], 12, ts="last tuesday"),
        prediction(images[13], 13, image_uri=None),
        prediction("s3://nowhere/unknown.jpg", 14),
        prediction(images[15], 15, confidence="high"),
        '{"image_uri": "broken json',
        prediction(images[16], 16, detections=[{"box": [1, 2, 3], "label": "car", "score": 0.5}]),
        prediction(images[17], 17, model_version=None),
    ]
    text = jsonl(good[:5] + bad + good[5:])
    uri = put(lake, source_uri(lake, "in/mixed.jsonl"), text)

    summary = ingest_predictions(lake, [uri], small_ingest, show_progress=False).to_dict()

    assert summary["rows"]["predictions"] == 10
    assert summary["errors"] == len(bad)
    errors = {r["row"]: r for r in rows(lake, "SELECT * FROM errors ORDER BY row")}
    reasons = {row: e["reason"] for row, e in errors.items()}
    assert set(reasons) == set(range(6, 6 + len(bad)))
    assert "outside [0, 1]" in reasons[6]
    assert reasons[7] == "confidence is NaN"
    assert reasons[8].startswith("bad or missing ts 'last tuesday'")
    assert reasons[9] == "missing image_uri (or image_id)"
    assert reasons[10].startswith("unknown image s3://nowhere/unknown.jpg")
    assert "not a number" in reasons[11]
    assert reasons[12].startswith("invalid JSON")
    assert reasons[13].startswith("bad detections")
    assert reasons[14] == "missing model_version"
    assert all(e["source"] == uri and e["job"] == "ingest-predictions" for e in errors.values())
    # The offending row is kept for the record (as text here: one odd value in the
    # block made its confidence column text).
    assert float(json.loads(errors[6]["raw"])["confidence"]) == 1.5


@local_only
def test_csv_and_parquet_inputs(lake, images, small_ingest):
    header = "image_uri,model_version,ts,label,confidence,scores,detections,site\n"
    lines = [
        f'{images[0]},v1,2026-10-05T10:00:00Z,car,0.9,"{{""car"": 0.9}}",'
        '"[{""box"": [1,1,5,5], ""label"": ""car"", ""score"": 0.9}]",north',
        f"{images[1]},v1,1790000000,person,0.4,,,south",
        f"{images[2]},v1,2026-10-05,person",  # too few fields
        f"{images[3]},v1,2026-10-05T11:00:00Z,car,2.0,,,east",
    ]
    csv_uri = put(lake, source_uri(lake, "in/p.csv"), header + "\n".join(lines) + "\n")
    table = pa.table(
        {
            "image_id": [
                r["image_id"]
                for r in rows(
                    lake, f"SELECT image_id FROM images WHERE uri IN ('{images[4]}', '{images[5]}') ORDER BY uri"
                )
            ],
            "model_version": ["v2", "v2"],
            "ts": pa.array([1_790_000_000_000_000, 1_790_000_100_000_000], pa.timestamp("us", tz="UTC")),
            "label": ["dog", "car"],
            "confidence": [0.55, 0.65],
            "weather": ["rain", "fog"],
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    parquet_uri = put(lake, source_uri(lake, "in/p.parquet"), buffer.getvalue())

    summary = ingest_predictions(lake, [csv_uri, parquet_uri], small_ingest, show_progress=False).to_dict()

    assert summary["rows"]["predictions"] == 4 and summary["rows"]["detections"] == 1
    assert summary["errors"] == 2
    errors = rows(lake, "SELECT row, reason FROM errors ORDER BY row")
    assert errors == [
        {"row": 4, "reason": "expected 8 fields, found 4"},
        {"row": 5, "reason": "confidence 2.0 outside [0, 1]"},
    ]
    csv_rows = rows(
        lake,
        "SELECT label, site, scores, epoch(ts) AS t FROM predictions WHERE model_version = 'v1' ORDER BY source_row",
    )
    assert [r["site"] for r in csv_rows] == ["north", "south"]
    assert csv_rows[1]["t"] == 1_790_000_000  # epoch seconds accepted
    pq_rows = rows(lake, "SELECT label, weather, image_uri FROM predictions WHERE model_version = 'v2' ORDER BY label")
    assert [(r["label"], r["weather"]) for r in pq_rows] == [("car", "fog"), ("dog", "rain")]


@local_only
def test_overlapping_files_show_each_prediction_once(lake, images, small_ingest):
    preds = [prediction(u, i) for i, u in enumerate(images[:30])]
    a = put(lake, source_uri(lake, "in/a.jsonl"), jsonl(preds[:20]))
    b = put(lake, source_uri(lake, "in/b.jsonl"), jsonl(preds[10:]))
    ingest_predictions(lake, [a, b], small_ingest, show_progress=False)
    # Merged on the key as they are written: the table itself holds each prediction once.
    assert rows(lake, "SELECT count(*) n, count(DISTINCT prediction_id) ids FROM predictions")[0] == {
        "n": 30,
        "ids": 30,
    }
    assert rows(lake, "SELECT source, count(*) n FROM predictions GROUP BY ALL ORDER BY 1") == [
        {"source": a, "n": 10}, {"source": b, "n": 20}]  # the later file's rows won the overlap


def test_rerun_skips_unchanged_and_replaces_changed_files(lake, images, small_ingest):
    uri = put(lake, source_uri(lake, "in/p.jsonl"), jsonl([prediction(u, i) for i, u in enumerate(images)]))
    first = ingest_predictions(lake, [uri], small_ingest, show_progress=False).to_dict()
    assert first["ingested"] == 1
    version_before = tables.version(lake, "predictions")

    again = ingest_predictions(lake, [uri], small_ingest, show_progress=False).to_dict()
    assert (again["ingested"], again["skipped"]) == (0, 1)
    assert tables.version(lake, "predictions") == version_before  # not even a commit

    put(lake, uri, jsonl([prediction(u, i, model_version="v8") for i, u in enumerate(images[:7])]))
    changed = ingest_predictions(lake, [uri], small_ingest, show_progress=False).to_dict()
    assert changed["ingested"] == 1
    assert rows(lake, "SELECT model_version, count(*) n FROM predictions GROUP BY ALL") == [
        {"model_version": "v8", "n": 7}
    ]

    forced = ingest_predictions(lake, [uri], small_ingest, force=True, show_progress=False).to_dict()
    assert forced["ingested"] == 1
    assert rows(lake, "SELECT count(*) n FROM predictions")[0]["n"] == 7


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "cols.jsonl",
            jsonl([{"image_uri": "x.jpg", "label": "car"}]),
            "missing required column(s): model_version, ts, confidence",
        ),
        ("binary.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 5, "could be read as jsonl"),
        ("fake.parquet", "not parquet at all", "not a Parquet file"),
        ("data.xml", "<xml/>", "cannot tell the format"),
        ("empty.csv", "", "empty CSV file"),
    ],
)
@local_only
def test_wrong_format_fails_clearly_and_writes_nothing(lake, images, small_ingest, name, content, message):
    uri = put(lake, source_uri(lake, f"in/{name}"), content)
    summary = ingest_predictions(lake, [uri], small_ingest, show_progress=False)
    [failed] = summary.failed
    assert message in failed.reason
    assert rows(lake, "SELECT (SELECT count(*) FROM predictions) p, (SELECT count(*) FROM errors) e") == [
        {"p": 0, "e": 0}
    ]


def test_a_file_that_breaks_part_way_leaves_nothing(lake, images, small_ingest):
    """Gzip cut off after 120 of 400 lines: the first batches were committed, and are deleted again."""
    whole = gzip.compress(jsonl([prediction(images[i % 120], i, model_version=f"v{i}") for i in range(400)]).encode())
    uri = put(lake, source_uri(lake, "in/cut.jsonl.gz"), whole[: len(whole) // 3])
    summary = ingest_predictions(lake, [uri], small_ingest, show_progress=False)
    [failed] = summary.failed
    assert "could not read the file" in failed.reason and "Nothing of it was written" in failed.reason
    assert tables.version(lake, "predictions") >= 1  # something was committed before the break ...
    assert rows(lake, "SELECT (SELECT count(*) FROM predictions) p, (SELECT count(*) FROM errors) e") == [
        {"p": 0, "e": 0}
    ]
    put(lake, uri, whole)  # ... and the whole file, given again, lands whole
    assert ingest_predictions(lake, [uri], small_ingest, show_progress=False).to_dict()["rows"]["predictions"] == 400


@local_only
def test_missing_input_and_empty_glob(lake, images, small_ingest):
    summary = ingest_predictions(lake, [source_uri(lake, "in/nope.jsonl")], small_ingest, show_progress=False)
    assert "file not found" in summary.failed[0].reason
    with pytest.raises(IngestFileError, match="no prediction file"):
        ingest_predictions(lake, [source_uri(lake, "in/*.nothing")], small_ingest, show_progress=False)


@local_only
def test_a_folder_means_the_prediction_files_in_it(lake, images, small_ingest):
    put(lake, source_uri(lake, "feed/a.jsonl"), jsonl([prediction(u, i) for i, u in enumerate(images[:4])]))
    put(lake, source_uri(lake, "feed/2026/b.jsonl.gz"), gzip.compress(jsonl([prediction(images[9], 9)]).encode()))
    put(lake, source_uri(lake, "feed/README.txt"), "not a prediction file")
    summary = ingest_predictions(lake, [source_uri(lake, "feed")], small_ingest, show_progress=False).to_dict()
    assert summary["ingested"] == 2 and summary["rows"]["predictions"] == 5


@local_only
def test_glob_of_inputs_and_reserved_names(lake, images, small_ingest):
    for k in range(3):
        rows_k = [
            prediction(u, i, source="camera-app", date="yesterday") for i, u in enumerate(images[k * 10 : k * 10 + 10])
        ]
        put(lake, source_uri(lake, f"in/day-{k}.jsonl"), jsonl(rows_k))
    summary = ingest_predictions(
        lake, [source_uri(lake, "in/day-*.jsonl")], small_ingest, show_progress=False
    ).to_dict()
    assert summary["ingested"] == 3 and summary["rows"]["predictions"] == 30
    got = rows(lake, "SELECT source, input_source, input_date FROM predictions LIMIT 1")[0]
    assert got["input_source"] == "camera-app" and got["input_date"] == "yesterday"
    assert got["source"].endswith(".jsonl")


@local_only
def test_compressed_input(lake, images, small_ingest):
    data = gzip.compress(jsonl([prediction(u, i) for i, u in enumerate(images[:25])]).encode())
    uri = put(lake, source_uri(lake, "in/p.jsonl.gz"), data)
    summary = ingest_predictions(lake, [uri], small_ingest, show_progress=False).to_dict()
    assert summary["rows"]["predictions"] == 25 and summary["errors"] == 0


def parquet_of(columns: dict) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


@local_only
def test_every_arrow_type_an_input_brings_lands_in_a_table_every_reader_still_reads(lake, images, small_ingest):
    """Extra fields of types Delta has no feature-free match for once broke `predictions` for
    good (a zone-less timestamp merged as timestamp_ntz) or crashed the ingest (time, duration,
    uint64, float16): each is now stored as a type any reader reads, values kept."""
    from datetime import UTC, date, datetime, time, timedelta
    from decimal import Decimal
    from zoneinfo import ZoneInfo

    first = put(lake, source_uri(lake, "in/first.jsonl"), jsonl([prediction(images[0], 0)]))
    ingest_predictions(lake, [first], small_ingest, show_progress=False)  # the table exists before the new fields
    zoneless = put(lake, source_uri(lake, "in/zoneless.jsonl"),
                   jsonl([prediction(images[1], 1) | {"captured_at": "2026-11-04T23:59:00"}]))
    n = 2
    odd = parquet_of({
        "image_uri": images[2:4], "model_version": ["v7"] * n, "label": ["car"] * n, "confidence": [0.5] * n,
        "ts": pa.array([datetime(2026, 10, 1, 8)] * n, pa.timestamp("ns")),  # zone-less Parquet timestamp
        "seen_ns": pa.array([datetime(2026, 10, 1, 8, 0, 0, 123456, tzinfo=ZoneInfo("Europe/Paris"))] * n,
                            pa.timestamp("ns", "Europe/Paris")),
        "clock": pa.array([time(13, 5)] * n, pa.time64("us")),
        "exposure": pa.array([timedelta(milliseconds=5)] * n, pa.duration("ns")),
        "frame": pa.array([2**64 - 1, 3], pa.uint64()),
        "lane": pa.array([255, 1], pa.uint8()),
        "gain": pa.array([1.5, 2.0], pa.float16()),
        "day": pa.array([date(2026, 10, 1)] * n, pa.date64()),
        "nothing": pa.array([None] * n, pa.null()),
        "site": pa.array(["north", "south"]).dictionary_encode(),
        "meta": pa.array([{"at": time(1, 2), "count": 7}] * n,
                         pa.struct([("at", pa.time32("s")), ("count", pa.uint32())])),
    })
    odd_uri = put(lake, source_uri(lake, "in/odd.parquet"), odd)

    summary = ingest_predictions(lake, [zoneless, odd_uri], small_ingest, show_progress=False).to_dict()

    assert summary["failed"] == 0 and summary["rows"]["predictions"] == 3
    got = rows(lake, "SELECT * FROM predictions WHERE image_uri <> '" + images[0] + "' ORDER BY image_uri")
    assert len(got) == 3 and len(rows(lake, "SELECT * FROM predictions")) == 4  # every command still reads it
    by_uri = {r["image_uri"]: r for r in got}
    assert by_uri[images[1]]["captured_at"] == datetime(2026, 11, 4, 23, 59, tzinfo=UTC)  # zone-less read as UTC
    row = by_uri[images[2]]
    assert row["seen_ns"] == datetime(2026, 10, 1, 6, 0, 0, 123456, tzinfo=UTC)  # the instant, at microseconds
    assert row["clock"] == "13:05:00.000000"
    assert row["exposure"] == 5000  # microseconds
    assert row["frame"] == Decimal(2**64 - 1) and by_uri[images[3]]["frame"] == Decimal(3)
    assert row["lane"] == 255 and row["gain"] == pytest.approx(1.5) and row["day"] == date(2026, 10, 1)
    assert row["nothing"] is None and row["site"] == "north"
    assert row["meta"] == {"at": "01:02:00.000", "count": 7}
    # Delta's own reader agrees, and the table needs no reader feature.
    delta = tables.open_table(lake, "predictions")
    assert delta.protocol().min_reader_version == 1
    assert delta.to_pyarrow_table().num_rows == 4


@local_only
def test_a_field_whose_values_do_not_fit_the_stored_column_fails_its_file_alone(lake, images, small_ingest):
    """delta-rs casts an extra field to the column it already has on its own: 1.5 into a long
    column as 1, 'abc' failing midway. A value that does not fit now fails its file, named, and
    nothing of that file is written; the other files land."""
    shift = put(lake, source_uri(lake, "in/a.jsonl"), jsonl([prediction(images[0], 0, shift=3)]))
    ingest_predictions(lake, [shift], small_ingest, show_progress=False)
    text = put(lake, source_uri(lake, "in/b.jsonl"), jsonl([prediction(images[1], 1, shift="night")]))
    fraction = put(lake, source_uri(lake, "in/c.jsonl"), jsonl([prediction(images[2], 2, shift=1.5)]))
    fits = put(lake, source_uri(lake, "in/d.jsonl"), jsonl([prediction(images[3], 3, Shift=4)]))  # any case

    summary = ingest_predictions(lake, [text, fraction, fits], small_ingest, show_progress=False).to_dict()

    failed = {f["source"]: f["reason"] for f in summary["files"] if f["status"] == "failed"}
    assert set(failed) == {text, fraction}
    assert "field 'shift'" in failed[text] and "int64" in failed[text] and "Nothing of this file" in failed[text]
    assert "field 'shift'" in failed[fraction]
    assert sorted(r["shift"] for r in rows(lake, "SELECT shift FROM predictions")) == [3, 4]


@local_only
def test_fields_that_differ_only_in_case_fail_their_file(lake, images, small_ingest):
    uri = put(lake, source_uri(lake, "in/a.jsonl"), jsonl([prediction(images[0], 0, Camera="x")]))

    summary = ingest_predictions(lake, [uri], small_ingest, show_progress=False).to_dict()

    assert summary["failed"] == 1
    assert "'camera' and 'Camera' differ only in case" in summary["files"][0]["reason"]
    assert rows(lake, "SELECT count(*) AS n FROM predictions")[0]["n"] == 0


@local_only
def test_a_prediction_id_repeated_in_one_file_keeps_the_first_and_records_the_rest(lake, images, small_ingest):
    """The last row once won silently, even for another image, and the summary counted every row.
    Across chunks of the file too (chunk_rows=2 here)."""
    preds = [prediction(images[i], i, prediction_id=pid) for i, pid in enumerate(["a", "b", "a", "c", "b", "a"])]
    preds.append(prediction(images[6], 6))  # no id given: derived, distinct
    uri = put(lake, source_uri(lake, "in/dups.jsonl"), jsonl(preds))

    summary = ingest_predictions(lake, [uri], replace(small_ingest, chunk_rows=2), show_progress=False).to_dict()

    assert summary["rows"]["predictions"] == 4 and summary["errors"] == 3
    got = {r["prediction_id"]: r["image_uri"] for r in rows(lake, "SELECT prediction_id, image_uri FROM predictions")}
    assert got["a"] == images[0] and got["b"] == images[1] and got["c"] == images[3] and len(got) == 4
    errors = rows(lake, "SELECT row, reason FROM errors ORDER BY row")
    assert [e["row"] for e in errors] == [3, 5, 6]
    assert errors[0]["reason"] == "duplicate prediction_id a (first at row 1): one row per prediction in a file; " \
        "the first is kept"
    assert "(first at row 2)" in errors[1]["reason"] and "(first at row 1)" in errors[2]["reason"]
    # The same ids in another file later: a correction, the newer rows replace the older.
    again = put(lake, source_uri(lake, "in/fix.jsonl"), jsonl([prediction(images[9], 9, prediction_id="a")]))
    assert ingest_predictions(lake, [again], small_ingest, show_progress=False).to_dict()["errors"] == 0
    assert rows(lake, "SELECT image_uri FROM predictions WHERE prediction_id = 'a'") == [{"image_uri": images[9]}]


def test_a_folder_holding_the_lake_does_not_ingest_the_lakes_own_files(tmp_path, small_ingest):
    """`edgemine ingest predictions .` run where the lake lives (found by the CLI fuzz test: the
    lake's own Parquet files were read as predictions and one crashed the job)."""
    from mining.core.lake import Lake

    lake = Lake(str(tmp_path / "work" / "lake"))
    uris = put_images(lake, str(tmp_path / "work" / "src"), 4)
    ingest_images(lake, str(tmp_path / "work" / "src"), small_ingest, show_progress=False)
    (tmp_path / "work" / "p.jsonl").write_text(jsonl([prediction(u, i, source="app") for i, u in enumerate(uris)]))
    first = ingest_predictions(lake, [str(tmp_path / "work" / "p.jsonl")], small_ingest, show_progress=False)
    assert first.to_dict()["rows"]["predictions"] == 4
    again = ingest_predictions(lake, [str(tmp_path / "work"), str(tmp_path / "work" / "p.jsonl")], small_ingest,
                               show_progress=False).to_dict()
    inside = [f for f in again["files"] if f["source"].startswith(lake.uri)]
    assert inside and all(f["status"] == "failed" and "a file of the lake" in f["reason"] for f in inside)
    assert [f["status"] for f in again["files"] if f["source"].endswith("p.jsonl")] == ["skipped"]  # once, done before
    assert rows(lake, "SELECT count(*) n FROM predictions")[0]["n"] == 4


@local_only
def test_a_field_kept_under_a_name_the_file_also_has_is_refused(lake, images, small_ingest):
    uri = put(lake, source_uri(lake, "in/clash.jsonl"),
              jsonl([prediction(u, i, source="app", input_source="other") for i, u in enumerate(images[:3])]))
    summary = ingest_predictions(lake, [uri], small_ingest, show_progress=False).to_dict()
    assert summary["files"][0]["status"] == "failed"
    assert "also has input_source; rename one" in summary["files"][0]["reason"]
    assert not tables.exists(lake, "predictions") or rows(lake, "SELECT count(*) n FROM predictions")[0]["n"] == 0
