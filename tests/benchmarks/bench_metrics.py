"""Benchmark: metrics per slice and model version, and drift over time windows, at scale.

(a) metrics: ``--rows`` predictions (half the images, each predicted by v1 and v2, 30 days,
    8 cameras, 6 classes), every image labelled once; 20 slices (all, 8 cameras, 1 label
    batch, 10 configured: hours, confidence, classes). edgemine's ``compute_metrics``
    (one DuckDB pass, then arithmetic) and ``check_regressions`` against the plain loop a
    user would write: pandas reads the tables, keeps the newest prediction per image and
    version, joins the truth, and per version and slice calls scikit-learn's
    precision_recall_fscore_support, accuracy_score and confusion_matrix. Both give the
    same accuracy (checked).
(b) drift: 30 daily windows over the same predictions (the first 7 the reference), with
    embeddings for ``--embedded-per-day`` images a day (the test samples 1,000 a window).
    edgemine's ``detect_drift`` against a pandas + scipy + scikit-learn loop doing the same
    tests per window.

    python tests/benchmarks/bench_metrics.py [--rows 10000000] [--embedded-per-day 2000] [--no-baseline] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from mining.core import tables  # noqa: E402
from mining.core.config import DriftConfig, MetricsConfig  # noqa: E402
from mining.core.lake import Lake  # noqa: E402
from mining.core.schema import EMBEDDINGS, LABELS, PREDICTIONS, embedding_rows, make_rows  # noqa: E402
from mining.core.sql import LakeDB  # noqa: E402
from mining.evaluation.drift import detect_drift  # noqa: E402
from mining.evaluation.metrics import check_regressions, compute_metrics  # noqa: E402
from mining.evaluation.slices import all_slices, find_slices  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

CLASSES = np.array(["car", "truck", "person", "bicycle", "dog", "plane"])
START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 30
EMBEDDING_WIDTH = 512  # a ResNet's, as the drift check reads them
# The 10 configured slices, and the same condition for pandas (a DataFrame with ts, confidence, label).
CONFIG_SLICES = {
    "night": ("hour(p.ts) >= 20 OR hour(p.ts) < 6", lambda d: (d.ts.dt.hour >= 20) | (d.ts.dt.hour < 6)),
    "morning": ("hour(p.ts) BETWEEN 6 AND 11", lambda d: d.ts.dt.hour.between(6, 11)),
    "afternoon": ("hour(p.ts) BETWEEN 12 AND 19", lambda d: d.ts.dt.hour.between(12, 19)),
    "low-confidence": ("p.confidence < 0.5", lambda d: d.confidence < 0.5),
    "high-confidence": ("p.confidence >= 0.9", lambda d: d.confidence >= 0.9),
    "true-car": ("t.true_label = 'car'", lambda d: d.true_label == "car"),
    "true-person": ("t.true_label = 'person'", lambda d: d.true_label == "person"),
    "said-dog": ("p.label = 'dog'", lambda d: d.label == "dog"),
    "first-week": ("p.ts < TIMESTAMPTZ '2026-10-08'", lambda d: d.ts < pd_utc("2026-10-08")),
    "last-week": ("p.ts >= TIMESTAMPTZ '2026-10-24'", lambda d: d.ts >= pd_utc("2026-10-24")),
}


def pd_utc(day: str):
    import pandas as pd

    return pd.Timestamp(day, tz="UTC")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_lake(lake: Lake, rows: int, embedded_per_day: int, chunk: int = 1_000_000, seed: int = 0) -> float:
    """``rows`` predictions (rows/2 images x 2 versions), a label per image, some embeddings."""
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    images = rows // 2
    truth = CLASSES[rng.integers(0, len(CLASSES), images)]
    seconds = rng.integers(0, DAYS * 86400, images)
    base = np.datetime64(START.replace(tzinfo=None), "us")
    for first in range(0, images, chunk // 2):
        n = min(chunk // 2, images - first)
        number = np.arange(first, first + n)
        ids = np.array([f"{i:020x}" for i in number])
        ts = pa.array((base + seconds[first:first + n].astype("timedelta64[s]")).astype("datetime64[us]")).cast(
            pa.timestamp("us", tz="UTC"))
        for version, right in (("v1", 0.8), ("v2", 0.78)):
            correct = rng.random(n) < right
            said = np.where(correct, truth[first:first + n], CLASSES[rng.integers(0, len(CLASSES), n)])
            batch = make_rows(
                PREDICTIONS,
                n,
                prediction_id=pa.array(np.char.add(f"{version}-", ids)),
                image_id=pa.array(ids),
                model_version=version,
                ts=ts,
                label=pa.array(said),
                confidence=pa.array(rng.uniform(0.2, 1, n).astype(np.float32)),
                ingested_at=START,
                date=ts.cast(pa.date32()),
            )
            batch = batch.append_column("camera", pa.array(np.array([f"cam-{i}" for i in range(8)])[number % 8]))
            tables.append(lake, PREDICTIONS, batch.sort_by("date"), tables.commit_info("bench"))
        labels = make_rows(LABELS, n, label_id=pa.array(np.char.add("l", ids)), image_id=pa.array(ids),
                           label=pa.array(truth[first:first + n]), annotator="bench", batch="b1", format="coco",
                           labelled_at=START)
        tables.append(lake, LABELS, labels, tables.commit_info("bench"))
        print(f"  wrote {2 * (first + n):,} predictions", file=sys.stderr)
    # Embeddings for the first ``embedded_per_day`` images of each day (what drift samples from).
    day = seconds // 86400
    chosen = np.concatenate([np.flatnonzero(day == d)[:embedded_per_day] for d in range(DAYS)])
    vectors = rng.standard_normal((chosen.size, EMBEDDING_WIDTH)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = embedding_rows([f"{i:020x}" for i in chosen], "resnet18", "bench", vectors, None, width=EMBEDDING_WIDTH)
    tables.append(lake, EMBEDDINGS, rows, tables.commit_info("bench"))
    return time.monotonic() - started


def pandas_frame(lake: Lake):
    """What a user loads: the newest prediction per image and version, joined with the labels."""
    from deltalake import DeltaTable

    p = DeltaTable(lake.table_dir("predictions")).to_pandas(
        columns=["image_id", "model_version", "ts", "label", "confidence", "camera"])
    p = p.sort_values("ts").drop_duplicates(["image_id", "model_version"], keep="last")
    labels = DeltaTable(lake.table_dir("labels")).to_pandas(columns=["image_id", "label", "labelled_at", "batch"])
    newest = labels[labels.labelled_at == labels.groupby("image_id").labelled_at.transform("max")]
    votes = newest.groupby(["image_id", "label"]).size().reset_index(name="votes")
    votes = votes.sort_values(["image_id", "votes", "label"], ascending=[True, False, True]).drop_duplicates("image_id")
    truth = votes.set_index("image_id").label.rename("true_label")
    batches = labels.groupby("image_id").batch.first()
    return p.join(truth, on="image_id", how="inner").join(batches, on="image_id")


def pandas_metrics(frame) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    masks = {"all": lambda d: np.ones(len(d), bool)}
    masks |= {f"camera=cam-{i}": (lambda d, i=i: d.camera == f"cam-{i}") for i in range(8)}
    masks |= {"batch=b1": lambda d: d.batch == "b1"} | {name: f for name, (_, f) in CONFIG_SLICES.items()}
    accuracy = {}
    for version, rows in frame.groupby("model_version"):
        for name, mask in masks.items():
            part = rows[mask(rows)]
            y, yhat = part.true_label.to_numpy(), part.label.to_numpy()
            precision_recall_fscore_support(y, yhat, zero_division=np.nan)
            precision_recall_fscore_support(y, yhat, average="macro", zero_division=np.nan)
            confusion_matrix(y, yhat)
            accuracy[(version, name)] = accuracy_score(y, yhat)
    return accuracy


def metrics_part(lake: Lake, baseline: bool = True) -> dict:
    db = LakeDB(lake)
    slices = find_slices(all_slices(db, {k: v for k, (v, _) in CONFIG_SLICES.items()}), None)
    assert len(slices) == 20, [s.name for s in slices]
    started = time.monotonic()
    rows = compute_metrics(db, slices, config=MetricsConfig())
    ours = time.monotonic() - started
    started = time.monotonic()
    report = check_regressions(db, slices, config=MetricsConfig(), record=False)
    regressions = time.monotonic() - started
    ours_only = {"slices": len(slices), "edgemine_s": round(ours, 2), "regressions_s": round(regressions, 2),
                 "comparisons": report.checked, "alarms": len(report.alarms), "peak_rss_gib": round(peak_rss_gib(), 2)}
    if not baseline:
        return ours_only
    started = time.monotonic()
    frame = pandas_frame(lake)
    loaded = time.monotonic() - started
    reference = pandas_metrics(frame)
    theirs = time.monotonic() - started
    got = {(r["model_version"], r["slice"]): r["value"] for r in rows.to_pylist()
           if r["metric"] == "accuracy"}
    worst = max(abs(got[k] - v) for k, v in reference.items())
    return {"slices": len(slices), "edgemine_s": round(ours, 2), "regressions_s": round(regressions, 2),
            "comparisons": report.checked, "alarms": len(report.alarms), "pandas_sklearn_s": round(theirs, 2),
            "pandas_load_s": round(loaded, 2), "speedup": round(theirs / ours, 1), "max_accuracy_difference": worst,
            "peak_rss_gib": round(peak_rss_gib(), 2)}


def pandas_drift(lake: Lake, frame, config: DriftConfig) -> int:
    """The same tests per daily window, written with pandas, scipy and scikit-learn."""
    import pandas as pd
    from deltalake import DeltaTable
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency, ks_2samp

    from mining.evaluation.drift import classifier_two_sample

    cut = pd.Timestamp("2026-10-08", tz="UTC")
    frame = frame.assign(day=frame.ts.dt.floor("D"))
    reference = frame[frame.day < cut]
    windows = sorted(d for d in frame.day.unique() if d >= cut)
    vectors = DeltaTable(lake.table_dir("embeddings")).to_pandas(columns=["image_id", "embedding"])
    first_seen = frame.groupby("image_id").ts.min().dt.floor("D")
    vectors = vectors.join(first_seen.rename("day"), on="image_id")
    ref_vectors = np.stack(vectors[vectors.day < cut].embedding.head(config.sample).to_numpy())
    flagged = 0
    for day in windows:
        window = frame[frame.day == day]
        for column in ("label", "camera"):
            counts = (pd_counts(reference[column]), pd_counts(window[column]))
            keys = sorted(set(counts[0].index) | set(counts[1].index))
            table = np.stack([c.reindex(keys, fill_value=0).to_numpy() for c in counts])
            flagged += jensenshannon(table[0], table[1], base=2) > 0.1 and chi2_contingency(table)[1] < 0.05 / len(
                windows
            )
        flagged += ks_2samp(reference.confidence, window.confidence).pvalue < 0.05 / len(windows)
        sample = np.stack(vectors[vectors.day == day].embedding.head(config.sample).to_numpy())
        flagged += classifier_two_sample(ref_vectors, sample)[0] > config.auc_threshold
    return int(flagged)


def pd_counts(series):
    return series.value_counts()


def drift_part(lake: Lake, baseline: bool = True) -> dict:
    db = LakeDB(lake)
    started = time.monotonic()
    rows = detect_drift(db, DriftConfig())
    ours = time.monotonic() - started
    if not baseline:
        return {"windows": len(set(rows.column("window_start").to_pylist())), "edgemine_s": round(ours, 2),
                "flagged": sum(rows.column("flagged").to_pylist()), "peak_rss_gib": round(peak_rss_gib(), 2)}
    started = time.monotonic()
    frame = pandas_frame(lake)
    pandas_drift(lake, frame, DriftConfig())
    theirs = time.monotonic() - started
    return {
        "windows": len(set(rows.column("window_start").to_pylist())),
        "flagged": sum(rows.column("flagged").to_pylist()),
        "edgemine_s": round(ours, 2),
        "pandas_scipy_sklearn_s": round(theirs, 2),
        "speedup": round(theirs / ours, 1),
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="predictions (two versions of rows/2 images)")
    parser.add_argument("--embedded-per-day", type=int, default=2000)
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="edgemine only (the pandas loop takes about 6 minutes per million predictions here)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import duckdb
    import scipy
    import sklearn

    folder = tempfile.mkdtemp(prefix="bench-metrics-")
    try:
        lake = Lake(folder + "/lake")
        write_s = write_lake(lake, args.rows, args.embedded_per_day)
        result = {
            "machine": describe(
                {"duckdb": duckdb.__version__, "scikit-learn": sklearn.__version__, "scipy": scipy.__version__}
            ),
            "rows": args.rows,
            "write_s": round(write_s, 1),
            "metrics": metrics_part(lake, args.baseline),
            "drift": drift_part(lake, args.baseline),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=2) if args.json else result)


if __name__ == "__main__":
    main()
