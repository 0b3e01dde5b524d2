"""`edgemine ingest feedback`: reports into the feedback table with the predictions' bad-row
rules (unknown images to errors), exactly once on reruns; and the feedback queue's order."""

from __future__ import annotations

import json

import pytest

from jobs.ingest_feedback import ingest_feedback
from mining.core.errors import ReadOnlyError
from tests.helpers import local_only, put, rows, source_uri
from tests.test_queues import queue, write_lake


@local_only
def test_feedback_lands_once_bad_rows_go_to_errors_and_the_queue_orders_by_severity(lake):
    truth = write_lake(lake, 8)
    ids = truth["ids"]
    folder = source_uri(lake, "feedback")
    reports = [
        {
            "image_id": ids[0],
            "reporter": "ana",
            "comment": "dog labelled car",
            "severity": "high",
            "at": "2026-10-03T10:00:00Z",
        },
        {
            "prediction_id": "p00001",
            "reporter": "bo",
            "comment": "missed a bike",
            "severity": 3,
            "at": "2026-10-04T10:00:00Z",
        },
        {"image_uri": f"/nowhere/{ids[2]}.jpg", "reporter": "cy", "severity": "critical", "at": 1790000000},
        {"image_id": ids[0], "reporter": "dee", "comment": "again", "severity": "low"},
        {"image_id": "ffffffffffffffffffff", "severity": 1},
        {"prediction_id": "nope", "severity": 1},
        {"image_id": ids[3], "severity": "urgent"},
        {"image_id": ids[3], "severity": 2, "at": "yesterday"},
        {"image_id": ids[3], "prediction_id": "p00004", "severity": 2},
        {"reporter": "eve", "severity": 2, "comment": "which image?", "image_id": None},
    ]
    uri = put(lake, f"{folder}/reports.jsonl", "".join(json.dumps(r) + "\n" for r in reports) + "{broken\n")
    summary = ingest_feedback(lake, [uri], show_progress=False)
    assert summary.to_dict()["rows"] == {"feedback": 4, "errors": 7}
    stored = rows(
        lake, "SELECT image_id, prediction_id, reporter, severity, source_row FROM feedback ORDER BY source_row"
    )
    assert [(r["image_id"], r["severity"], r["source_row"]) for r in stored] == [
        (ids[0], 3, 1), (ids[1], 3, 2), (ids[2], 4, 3), (ids[0], 1, 4)]
    assert stored[1]["prediction_id"] == "p00001"
    reasons = [r["reason"] for r in rows(lake, "SELECT reason FROM errors WHERE job = 'ingest-feedback' ORDER BY row")]
    assert reasons[0].startswith("unknown image_id ffffffffffffffffffff")
    assert reasons[1].startswith("unknown prediction_id nope")
    assert reasons[2].startswith("severity 'urgent' is not a number")
    assert reasons[3].startswith("bad at 'yesterday'")
    assert reasons[4] == f"prediction p00004 is of image {ids[4]}, not {ids[3]}"
    assert reasons[5].startswith("missing image_id, prediction_id or image_uri")
    assert reasons[6].startswith("invalid JSON")

    # Unchanged: skipped. Rerun after a kill (the marker left as started): each report once.
    assert ingest_feedback(lake, [uri], show_progress=False).to_dict()["skipped"] == 1
    lake.write_marker("ingest-feedback", "feedback-" + __import__("jobs.ingest_predictions", fromlist=["shard_id"])
                      .shard_id(uri).removeprefix("pred-"), {"status": "started", "source": uri})
    assert ingest_feedback(lake, [uri], show_progress=False).to_dict()["ingested"] == 1
    assert rows(lake, "SELECT count(*) n FROM feedback") == [{"n": 4}]
    assert rows(lake, "SELECT count(*) n FROM errors WHERE job = 'ingest-feedback'") == [{"n": 7}]

    # A CSV of the same reports (keys derived the same way) adds nothing new but its own new row.
    csv = put(lake, f"{folder}/more.csv", "image_id,reporter,comment,severity,at\n"
              f"{ids[0]},ana,dog labelled car,high,2026-10-03T10:00:00Z\n{ids[5]},fay,\"blurry, dark\",2,\n")
    assert ingest_feedback(lake, [csv], show_progress=False).to_dict()["rows"] == {"feedback": 2}
    assert rows(lake, "SELECT count(*) n FROM feedback") == [{"n": 5}]

    made, picked = queue(lake, "feedback")
    assert [r["image_id"] for r in picked] == [ids[2], ids[1], ids[0], ids[5]]  # severity, then the newest report
    assert picked[2]["reason"].startswith("severity 3 · ana, 2026-10-03 10:00: dog labelled car (+1 more report)")
    assert made.candidates == 5
    _, severe = queue(lake, "feedback", "severe", min_severity=4)
    assert [r["image_id"] for r in severe] == [ids[2]]


def test_a_file_without_the_required_columns_is_refused_whole(tmp_path):
    from jobs.ingest_predictions import IngestFileError  # noqa: F401 (the failure is reported, not raised)
    from mining.core.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    write_lake(lake, 2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"comment": "no image, no severity"}) + "\n")
    summary = ingest_feedback(lake, [str(bad)], show_progress=False)
    assert summary.to_dict()["failed"] == 1
    assert "missing required column(s): image_id, prediction_id or image_uri; severity" in summary.files[0].reason
    parquet = tmp_path / "x.parquet"
    parquet.write_bytes(b"PAR1")
    assert (
        "feedback is read from jsonl or csv files"
        in ingest_feedback(lake, [str(parquet)], show_progress=False).files[0].reason
    )
    with pytest.raises(ReadOnlyError, match="feedback_missing is not a view of this lake"):
        rows(lake, "SELECT * FROM feedback_missing")
