"""Metrics per model version and slice against the labels, and regression alarms
(docs/METRICS.md).

The counting is DuckDB's: one pass over the newest prediction per image and model
version groups the labelled rows by (version, true label, predicted label,
confidence bin, one boolean per slice), a few thousand rows whatever the lake's
size; the metrics are then arithmetic on those counts (numpy), the same as
scikit-learn's from the same rows (tests/test_metrics.py checks within 1e-6).

Undefined values (a slice without labelled images, a class never predicted) are
NULL with their ``n``, never NaN: ``n`` says how many rows a value stands on.

"Previous version": model versions are ordered by when their predictions first
appeared in the lake (``min(ingested_at)``, then ``min(ts)``), so version B is
compared with the version before it, from the predictions alone; ``baseline=``
names another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from mining.core import tables
from mining.core.config import Config, MetricsConfig
from mining.core.errors import SliceError
from mining.core.schema import ALARMS, METRICS
from mining.core.sql import LakeDB, quote_literal
from mining.evaluation.detection import detection_rows, has_boxes
from mining.evaluation.segmentation import regression_samples, segmentation_rows
from mining.evaluation.slices import FRAME_FROM, Slice, frame_ctes, require_labels

JOB = "metrics"
NO_LABEL = "<none>"  # a prediction without a label: counted, and always wrong


def model_versions(db: LakeDB) -> list[str]:
    """The model versions in the order their predictions first appeared (oldest first)."""
    return db.query("SELECT model_version FROM predictions GROUP BY ALL "
                    "ORDER BY min(ingested_at) NULLS LAST, min(ts), model_version").column("model_version").to_pylist()


def previous_version(db: LakeDB, version: str) -> str | None:
    """The version whose predictions appeared just before ``version``'s, or None for the first."""
    order = check_versions(db, [version])
    at = order.index(version)
    return order[at - 1] if at else None


def check_versions(db: LakeDB, versions: Sequence[str] | None) -> list[str]:
    """Every version (ordered) after checking that those named have predictions."""
    known = model_versions(db)
    missing = [v for v in versions or () if v not in known]
    if missing:
        raise SliceError(f"model version(s) {', '.join(missing)} have no predictions in the lake; versions: "
                         f"{', '.join(known) or 'none (ingest predictions first)'}")
    return known


def slice_counts(db: LakeDB, versions: Sequence[str], slices: Sequence[Slice], bins: int) -> pa.Table:
    """The labelled rows counted by (model_version ``v``, true label ``y``, predicted label ``yhat``,
    confidence bin ``bin``, ``s0``..``sK`` one boolean per slice): columns ``n`` int64 and
    ``conf`` (sum of confidence) float64."""
    flags = ", ".join(f"coalesce(({s.sql}), FALSE) AS s{k}" for k, s in enumerate(slices))
    wanted = ", ".join(quote_literal(v) for v in versions)
    return db.query(
        f"WITH {frame_ctes()}, f AS (SELECT p.model_version AS v, t.true_label AS y, "
        f"coalesce(p.label, '{NO_LABEL}') AS yhat, "
        f"p.confidence::DOUBLE AS c, {flags} FROM {FRAME_FROM} "
        f"WHERE t.true_label IS NOT NULL AND p.model_version IN ({wanted})) "
        f"SELECT v, y, yhat, least(floor(c * {bins}), {bins - 1})::INTEGER AS bin, "
        f"{', '.join(f's{k}' for k in range(len(slices)))}, count(*) AS n, sum(c) AS conf FROM f GROUP BY ALL"
    )


def classification_metrics(y: np.ndarray, yhat: np.ndarray, n: np.ndarray, conf: np.ndarray, bins: np.ndarray,
                           nbins: int) -> list[tuple[str, str | None, float | None, int]]:
    """(metric, label, value, n) rows from counted rows: ``y``, ``yhat`` str (m,), ``n`` int64 (m,)
    rows each stands for, ``conf`` float64 (m,) their summed confidence, ``bins`` int (m,).

    Per class (the labels of y and yhat, as scikit-learn takes them): precision, recall, f1
    (2tp / (2tp + fp + fn)); their unweighted mean over the classes where defined ("macro");
    accuracy; the confusion counts (label ``true->predicted``); ECE over ``nbins`` equal-width
    confidence bins (Guo et al. 2017): sum over bins of |accuracy - mean confidence| x share."""
    total = int(n.sum())
    if total == 0:
        return [("accuracy", None, None, 0), ("ece", None, None, 0)]
    classes = sorted(set(y) | set(yhat))
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(matrix, ([index[v] for v in y], [index[v] for v in yhat]), n)
    tp = np.diag(matrix)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, predicted + support)
    out: list[tuple[str, str | None, float | None, int]] = [("accuracy", None, float(tp.sum()) / total, total)]
    for name, values, counts in (("precision", precision, predicted), ("recall", recall, support), ("f1", f1, support)):
        out += [(name, c, _value(values[i]), int(counts[i])) for i, c in enumerate(classes)]
        defined = values[~np.isnan(values)]
        out.append((name, "macro", float(defined.mean()) if defined.size else None, total))
    out += [("confusion", f"{a}->{b}", float(matrix[i, j]), int(matrix[i, j]))
            for i, a in enumerate(classes) for j, b in enumerate(classes) if matrix[i, j]]
    out.append(("ece", None, expected_calibration_error(y == yhat, n, conf, bins, nbins), total))
    return out


def expected_calibration_error(correct: np.ndarray, n: np.ndarray, conf: np.ndarray, bins: np.ndarray,
                               nbins: int) -> float:
    """ECE from counted rows: bool ``correct`` (m,), ``n`` (m,), summed confidence ``conf`` (m,), ``bins`` (m,)."""
    count = np.bincount(bins, weights=n, minlength=nbins)
    hits = np.bincount(bins, weights=n * correct, minlength=nbins)
    confidence = np.bincount(bins, weights=conf, minlength=nbins)
    used = count > 0
    return float(np.abs(hits[used] - confidence[used]).sum() / count.sum())


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.maximum(b, 1), np.nan)


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def compute_metrics(db: LakeDB, slices: Sequence[Slice], versions: Sequence[str] | None = None, *,
                    config: MetricsConfig = MetricsConfig()) -> pa.Table:
    """Rows of the ``metrics`` table for every version (default: all) and slice; not written."""
    require_labels(db)
    known = check_versions(db, versions)
    versions = list(versions or known)
    counts = slice_counts(db, versions, slices, config.ece_bins)
    columns = {name: counts.column(name).to_numpy(zero_copy_only=False) for name in counts.column_names}
    rows: list[tuple] = []
    for v in versions:
        of_version = columns["v"] == v
        for k, one in enumerate(slices):
            m = of_version & columns[f"s{k}"].astype(bool)
            for metric, label, value, n in classification_metrics(
                    columns["y"][m], columns["yhat"][m], columns["n"][m].astype(np.int64), columns["conf"][m],
                    columns["bin"][m].astype(np.int64), config.ece_bins):
                rows.append((v, one.name, metric, label, value, n))
    if has_boxes(db):  # detection models: COCO mAP through pycocotools
        rows += detection_rows(db, versions, slices)
    rows += segmentation_rows(db, versions, slices)  # masks: mask mAP, IoU per class
    names = ("model_version", "slice", "metric", "label", "value", "n")
    data = {name: [r[i] for r in rows] for i, name in enumerate(names)}
    return pa.Table.from_pydict(data | {"computed_at": [datetime.now(UTC)] * len(rows)}, schema=METRICS.schema)


def record_metrics(db: LakeDB, rows: pa.Table, *, user: str) -> None:
    """Append a run's metrics (the view keeps each key's latest, ``raw.metrics`` every run)."""
    if rows.num_rows:
        tables.append(db.lake, METRICS, rows, tables.commit_info(JOB, user, rows=rows.num_rows))


# -- what is stored: the Metrics page's reads ---------------------------------------------------
def stored_metrics(db: LakeDB, metric: str | None = None, label: str | None = None) -> pa.Table:
    """The ``metrics`` table's rows (each key's latest run), by slice and model version; only
    ``metric``'s when given, with ``label`` then matched exactly (None: an image-level metric such
    as accuracy; a class, or ``macro``)."""
    if metric is None:
        return db.query("SELECT * FROM metrics ORDER BY slice, model_version, metric, label")
    return db.query("SELECT * FROM metrics WHERE metric = $m AND label IS NOT DISTINCT FROM $l "
                    "ORDER BY slice, model_version", {"m": metric, "l": label})


def stored_alarms(db: LakeDB, metric: str | None = None, label: str | None = None) -> pa.Table:
    """The regression alarms stored (every column but the margin), the largest drop first; only
    ``metric``'s when given, with ``label`` matched exactly as in ``stored_metrics``."""
    if metric is None:
        return db.query("SELECT * EXCLUDE (margin) FROM alarms ORDER BY drop DESC, model_version, slice")
    return db.query("SELECT * EXCLUDE (margin) FROM alarms WHERE metric = $m AND label IS NOT DISTINCT FROM $l "
                    "ORDER BY drop DESC, model_version, slice", {"m": metric, "l": label})


def by_version(rows: pa.Table, versions: Sequence[str]) -> pa.Table:
    """One metric's rows (``stored_metrics``) as a table: a row per slice with a value (by name),
    a column per version of ``versions`` with a value (in that order; None where the slice has
    none), and ``n``, the most images a value of the slice stands on."""
    listed = rows.to_pylist()
    cells = {(r["slice"], r["model_version"]): r["value"] for r in listed if r["value"] is not None}
    slices = sorted({s for s, _ in cells})
    shown = [v for v in versions if any(version == v for _, version in cells)]
    n: dict[str, int] = {}
    for r in listed:
        n[r["slice"]] = max(n.get(r["slice"], 0), r["n"])
    columns = {"slice": pa.array(slices, pa.string())}
    columns |= {v: pa.array([cells.get((s, v)) for s in slices], pa.float64()) for v in shown}
    return pa.table(columns | {"n": pa.array([n[s] for s in slices], pa.int64())})


def disagreements(db: LakeDB, limit: int = 200) -> pa.Table:
    """Labelled images whose newest labels disagree with the model's prediction, the most
    confident first: image_id, model_version, predicted_label, confidence, labels, annotator, batch."""
    return db.query("SELECT image_id, model_version, predicted_label, confidence, labels, annotator, batch "
                    "FROM labelled WHERE NOT agrees ORDER BY confidence DESC LIMIT $limit", {"limit": limit})


# -- regressions ------------------------------------------------------------------------------
BOOTSTRAP_MAX = 5_000  # images a side resampled at most; above, the normal interval (see compare)


@dataclass
class RegressionReport:
    model_version: str
    baseline: str | None
    checked: int = 0  # (slice, metric, class) comparisons made
    alarms: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model_version": self.model_version, "baseline": self.baseline, "checked": self.checked,
                "alarms": self.alarms}


def check_regressions(db: LakeDB, slices: Sequence[Slice], version: str | None = None, baseline: str | None = None, *,
                      config: MetricsConfig = MetricsConfig(), user: str = "", record: bool = True) -> RegressionReport:
    """Compare ``version`` (default: the newest) with ``baseline`` (default: the one before it) on
    every slice: accuracy, recall per class, and where the lake has masks, the share of truth
    instances found at mask IoU >= 0.5 (``mask_recall50``) and the mean IoU per image (``miou``,
    label maps; mining.evaluation.segmentation). Where both versions predicted at least
    ``min_n`` of the slice's labelled images, on those images (paired); else on each version's
    own labelled images of the slice (unpaired, as when a new version serves new traffic).
    An alarm is a drop of more than ``config.margin`` whose bootstrap interval of the change
    (at ``config.confidence``) lies below 0; slices and classes under ``min_n`` images are not
    checked. Alarms are written to ``alarms`` (``record``) and returned."""
    require_labels(db)
    order = check_versions(db, [v for v in (version, baseline) if v])
    version = version or order[-1]
    baseline = baseline or previous_version(db, version)
    report = RegressionReport(version, baseline)
    if baseline is None or baseline == version:
        return report
    got = correctness(db, version, baseline, slices)
    cols = {name: got.column(name).to_numpy(zero_copy_only=False) for name in got.column_names}
    # The true labels as numbers (Arrow's dictionary encoding), once: a set of Python strings and
    # string comparisons per slice and class were a fifth of the check (2 s of 11 at 1M predictions).
    encoded = got.column("y").combine_chunks().dictionary_encode()
    labels, y = encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)
    for k, one in enumerate(slices):
        inside = cols[f"s{k}"].astype(bool)
        tests = [("accuracy", None, inside)]
        present = sorted((labels[c], c) for c in np.unique(y[inside]))
        tests += [("recall", label, inside & (y == c)) for label, c in present]
        samples = [(metric, label, cols["image_id"][m], cols["is_b"][m], cols["correct"][m])
                   for metric, label, m in tests]
        samples += [(metric, None, ids, is_b, values)
                    for metric, ids, is_b, values in regression_samples(db, version, baseline, one)]
        for metric, label, ids, is_b, values in samples:
            a, b, paired = split_versions(ids, is_b, values.astype(np.float64), config.min_n)
            if a is None:
                continue
            report.checked += 1
            alarm = compare(a, b, config, paired=paired)
            if alarm:
                report.alarms.append({"model_version": version, "baseline": baseline, "slice": one.name,
                                      "metric": metric, "label": label, **alarm, "margin": config.margin})
    if record and report.alarms:
        now = datetime.now(UTC)
        rows = pa.Table.from_pylist([a | {"raised_at": now} for a in report.alarms], schema=ALARMS.schema)
        tables.append(db.lake, ALARMS, rows, tables.commit_info(JOB, user, version=version, baseline=baseline))
    return report


def correctness(db: LakeDB, version: str, baseline: str, slices: Sequence[Slice]) -> pa.Table:
    """One row per labelled image and version (of the two): ``image_id`` a number per image, ``y`` its true label,
    ``is_b`` (the version, not the baseline), ``correct`` 0/1, ``s0``..``sK`` its slices."""
    flags = ", ".join(f"coalesce(({s.sql}), FALSE) AS s{k}" for k, s in enumerate(slices))
    a, b = quote_literal(baseline), quote_literal(version)
    return db.query(
        f"WITH {frame_ctes()} SELECT dense_rank() OVER (ORDER BY p.image_id) AS image_id, t.true_label AS y, "
        f"p.model_version = {b} AS is_b, "
        f"(p.label IS NOT DISTINCT FROM t.true_label)::INTEGER AS correct, {flags} "
        f"FROM {FRAME_FROM} WHERE t.true_label IS NOT NULL AND p.model_version IN ({a}, {b}) ORDER BY p.image_id"
    )


def split_versions(image_id: np.ndarray, is_b: np.ndarray, correct: np.ndarray,
                   min_n: int) -> tuple[np.ndarray | None, np.ndarray | None, bool]:
    """The baseline's and the version's 0/1 correctness to compare: paired (aligned by image: rows
    come sorted by ``image_id``, a number per image) where at least ``min_n`` images have both,
    else each version's own; and whether they are paired. (None, None, False) when either side
    has fewer than ``min_n``."""
    both = np.bincount(image_id)[image_id] == 2 if image_id.size else np.zeros(0, bool)
    if both.sum() // 2 >= min_n:
        return correct[both & ~is_b], correct[both & is_b], True
    a, b = correct[~is_b], correct[is_b]
    if a.size < min_n or b.size < min_n:
        return None, None, False
    return a, b, False


def compare(a: np.ndarray, b: np.ndarray, config: MetricsConfig, *, paired: bool) -> dict | None:
    """An alarm (values, drop, interval) if ``b`` (0/1 per image) is worse than ``a`` by more than
    the margin and significantly: the interval of mean(b) - mean(a) at ``config.confidence`` lies
    below 0, else None. The interval: scipy.stats.bootstrap (percentile; paired when ``a`` and
    ``b`` are the same images) up to BOOTSTRAP_MAX images a side; above, where the bootstrap
    distribution is the normal one anyway (CLT) and resampling costs O(n x resamples), the
    normal interval from the standard error."""
    from scipy.stats import bootstrap, norm

    value, base = float(b.mean()), float(a.mean())
    if base - value <= config.margin:
        return None
    n = int(b.size)
    if max(a.size, b.size) > BOOTSTRAP_MAX:
        variance = np.var(b - a, ddof=1) / n if paired else np.var(a, ddof=1) / a.size + np.var(b, ddof=1) / b.size
        half = float(norm.ppf(0.5 + config.confidence / 2) * np.sqrt(variance))
        low, high = value - base - half, value - base + half
    else:
        change = lambda x, y, axis=-1: y.mean(axis=axis) - x.mean(axis=axis)  # noqa: E731
        result = bootstrap((a, b), change, paired=paired, n_resamples=config.bootstrap,
                           confidence_level=config.confidence, method="percentile",
                           rng=np.random.default_rng(config.seed), vectorized=True)
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if high >= 0:
        return None
    return {"value": value, "baseline_value": base, "drop": base - value, "ci_low": low, "ci_high": high, "n": n,
            "paired": paired}


# -- what `edgemine metrics` and the library run --------------------------------------------
def run_metrics(db: LakeDB, config: Config, *, versions: Sequence[str] | None = None,
                slices: Sequence[str] | None = None, baseline: str | None = None,
                record: bool = True, regressions: bool = True) -> tuple[pa.Table, RegressionReport | None]:
    """Metrics of ``versions`` (default: all) on ``slices`` (names; default: all), appended to
    ``metrics``, then the regressions of the newest of them against ``baseline`` (default: the
    version before it), appended to ``alarms``."""
    from mining.evaluation.slices import all_slices, find_slices

    chosen = find_slices(all_slices(db, config.slices, max_values=config.metrics.auto_max_values), list(slices or []))
    rows = compute_metrics(db, chosen, versions, config=config.metrics)
    if record:
        record_metrics(db, rows, user=config.mining.user)
    if not regressions:
        return rows, None
    order = model_versions(db)
    newest = max(versions, key=order.index) if versions else order[-1]
    report = check_regressions(db, chosen, newest, baseline, config=config.metrics, user=config.mining.user,
                               record=record)
    return rows, report


def summary_table(rows: pa.Table) -> pa.Table:
    """The headline metrics (accuracy, macro F1, ECE) per slice, one column per version, and n."""
    keep = [r for r in rows.to_pylist()
            if r["metric"] in ("accuracy", "ece") or (r["metric"] == "f1" and r["label"] == "macro")]
    versions = list(dict.fromkeys(r["model_version"] for r in keep))
    table: dict[tuple, dict] = {}
    for r in keep:
        line = table.setdefault((r["slice"], r["metric"]), {"slice": r["slice"], "metric": r["metric"] + (
            " (macro)" if r["label"] == "macro" else "")} | {v: None for v in versions} | {"n": 0})
        line[r["model_version"]] = None if r["value"] is None else round(r["value"], 4)
        line["n"] = max(line["n"], r["n"])
    return pa.Table.from_pylist(list(table.values()))
