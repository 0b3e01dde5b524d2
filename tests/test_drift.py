"""Drift over time (mining/evaluation/drift.py, `edgemine drift`): injected drift flags those windows and
no others; a seeded lake without drift flags none."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from jobs.cli import main
from mining.core import tables
from mining.core.config import Config, DriftConfig, MiningConfig
from mining.core.errors import SliceError
from mining.core.lake import Lake
from mining.core.schema import DRIFT, PREDICTIONS, make_rows
from mining.core.sql import LakeDB
from mining.evaluation.drift import (
    classifier_two_sample,
    detect_drift,
    flagged_windows,
    run_drift,
    stored_drift,
    window_length,
    window_slice,
)
from tests.helpers import image_ids, write_embeddings

DAYS, PER_DAY = 30, 150
START = datetime(2026, 10, 1, tzinfo=UTC)
CLASSES = ["car", "person", "truck"]


def drift_lake(path, *, drift: bool, seed: int = 11) -> Lake:
    """30 days of 150 predictions. With ``drift``: from day 10 a new camera (cam-9) takes 30%
    of the images; from day 20 the share of trucks goes from 1/3 to 2/3; from day 25 the
    embeddings move. Confidence never changes."""
    rng = np.random.default_rng(seed)
    lake = Lake(str(path))
    n = DAYS * PER_DAY
    day = np.repeat(np.arange(DAYS), PER_DAY)
    ts = [START + timedelta(days=int(d), seconds=int(s)) for d, s in zip(day, rng.integers(0, 86400, n))]
    p_truck = np.where(drift & (day >= 20), 2 / 3, 1 / 3)
    labels = [("truck" if rng.random() < pt else CLASSES[rng.integers(0, 2)]) for pt in p_truck]
    cameras = [("cam-9" if drift and d >= 10 and rng.random() < 0.3 else f"cam-{rng.integers(0, 3)}") for d in day]
    ids = image_ids(n)
    rows = make_rows(PREDICTIONS, n, prediction_id=ids, image_id=ids, model_version="v1", ts=ts, label=labels,
                     confidence=rng.uniform(0.2, 1.0, n).astype(np.float32), ingested_at=START,
                     date=[t.date() for t in ts])
    tables.append(lake, PREDICTIONS, rows.append_column("camera", pa.array(cameras)), tables.commit_info("test"))
    vectors = rng.standard_normal((n, 512)).astype(np.float32)
    if drift:
        vectors[day >= 25, :8] += 1.5  # a shift a linear classifier sees
    write_embeddings(lake, ids, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), "0")
    return lake


def flagged_days(rows: pa.Table, check: str) -> list[int]:
    return sorted((r["window_start"] - START).days for r in rows.to_pylist() if r["feature"] == check and r["flagged"])


def test_injected_drift_flags_those_windows_and_not_the_others(tmp_path):
    lake = drift_lake(tmp_path / "lake", drift=True)
    with LakeDB(lake) as db:
        rows = detect_drift(db, DriftConfig(sample=150), reference="2026-10-01..2026-10-07")
    assert {r["window_start"] for r in rows.to_pylist()} == {START + timedelta(days=d) for d in range(7, DAYS)}
    assert flagged_days(rows, "column:camera") == list(range(10, DAYS))  # the new camera, every day it is there
    assert "new: cam-9" in [r for r in rows.to_pylist() if r["feature"] == "column:camera"][5]["detail"]
    assert flagged_days(rows, "label") == list(range(20, DAYS))
    assert flagged_days(rows, "embedding") == list(range(25, DAYS))
    assert flagged_days(rows, "confidence") == []


def test_no_drift_control_flags_nothing(tmp_path):
    lake = drift_lake(tmp_path / "lake", drift=False, seed=12)
    with LakeDB(lake) as db:
        rows = detect_drift(db, DriftConfig(sample=150))  # the reference: the first 7 days
    assert rows.num_rows == 4 * (DAYS - 7)
    assert [r for r in rows.to_pylist() if r["flagged"]] == []
    # At 150 a day, noise alone takes the label distance past 0.1 on some day: the p-value gate
    # (alpha / windows) is what keeps it from flagging.
    noisy = [r for r in rows.to_pylist() if r["feature"] == "label" and r["score"] > 0.1]
    assert all(r["p_value"] >= 0.05 / (DAYS - 7) for r in noisy)


def test_classifier_two_sample_test_tells_apart_only_what_differs():
    rng = np.random.default_rng(0)
    same = classifier_two_sample(rng.standard_normal((300, 32)), rng.standard_normal((300, 32)))
    moved = classifier_two_sample(rng.standard_normal((300, 32)), rng.standard_normal((300, 32)) + 0.5)
    assert same[0] < 0.6 and same[1] > 0.01
    assert moved[0] > 0.9 and moved[1] < 1e-6


def test_bad_windows_and_references_say_what_to_give(tmp_path):
    with pytest.raises(SliceError, match="1h, 6h, 1d, 1w"):
        window_length("daily")
    lake = drift_lake(tmp_path / "lake", drift=False)
    with LakeDB(lake) as db:
        with pytest.raises(SliceError, match="give two days"):
            detect_drift(db, reference="last week")
        with pytest.raises(SliceError, match="no window outside the reference"):
            detect_drift(db, reference="2026-09-01..2026-12-01", embeddings=False)


def test_cli_drift_writes_the_drift_table(tmp_path, capsys):
    lake = drift_lake(tmp_path / "lake", drift=True)
    args = ["drift", "--lake", lake.uri, "--window", "1w", "--reference", "2026-10-01..2026-10-07", "--quiet"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["windows"] == 4 and out["flagged"] >= 1
    with LakeDB(lake) as db:
        flagged = db.query("SELECT DISTINCT window_start FROM drift WHERE flagged AND feature = 'column:camera'")
    assert flagged.num_rows == 4  # every week after the first has the new camera
    assert main(args) == 0
    text = capsys.readouterr().out
    assert text.startswith("4 windows against the reference ") and "column:camera" in text  # a table of the flags


def test_run_drift_records_what_it_detects_and_the_stored_rows_read_back(tmp_path):
    """What `edgemine drift`, the facade and the Metrics page run: detect, then record (or not)."""
    lake = drift_lake(tmp_path / "lake", drift=True)
    config = Config(lake=lake.uri, drift=DriftConfig(sample=150), mining=MiningConfig(user="ana"))
    week = {"window": "1w", "reference": "2026-10-01..2026-10-07", "embeddings": False}
    with LakeDB(lake) as db:
        unrecorded = run_drift(db, config, **week, record=False)
        assert tables.version(lake, DRIFT) is None and stored_drift(db).num_rows == 0
        rows = run_drift(db, config, **week)
        assert [(c["job"], c["user"]) for c in tables.history(lake, DRIFT)] == [("drift", "ana")]  # one commit
        stored = stored_drift(db)
    keys = ["window_start", "feature", "score", "flagged"]
    assert stored.select(keys).to_pylist() == rows.sort_by([("window_start", "ascending"), ("feature", "ascending")]
                                                           ).select(keys).to_pylist()
    assert unrecorded.select(keys).to_pylist() == rows.select(keys).to_pylist()  # seeded: the same answer
    windows = flagged_windows(stored)
    assert [start for start, _, _ in windows] == [START + timedelta(weeks=w) for w in (1, 2, 3, 4)]
    assert all("column:camera" in features for _, _, features in windows)  # the new camera, every week
    assert windows[-1][2] == sorted(set(windows[-1][2]))


def test_a_windows_slice_holds_its_predictions_only(tmp_path):
    lake = drift_lake(tmp_path / "lake", drift=False)
    start = START + timedelta(days=3)
    with LakeDB(lake) as db:
        within = db.query(f"SELECT min(ts) AS a, max(ts) AS b, count(*) AS n FROM predictions p "
                          f"WHERE {window_slice(start, start + timedelta(days=1))}").to_pylist()[0]
    assert within["n"] == PER_DAY and start <= within["a"] and within["b"] < start + timedelta(days=1)
