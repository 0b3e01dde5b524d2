"""Drift over time: each window of predictions against a reference period (docs/METRICS.md).

Checks, per window, each with a score, a p-value and a flag:

- ``embedding``: a classifier two-sample test, Evidently's default for embedding drift
  (``EmbeddingsDriftMetric``, method ``model``): a logistic regression learns to tell
  the window's embeddings from the reference's on half of a seeded sample of each; its
  ROC AUC on the other half is the score (0.5: indistinguishable), flagged above
  ``auc_threshold`` (0.55, Evidently's default). The p-value is the Mann-Whitney U
  test of the held-out scores (the AUC's own test).
- ``label``: the predicted labels' distribution: Jensen-Shannon distance (Evidently's
  default for categorical columns on large data, threshold 0.1), chi-square p-value,
  the PSI in ``detail``.
- ``confidence``: the two-sample Kolmogorov-Smirnov statistic and p-value.
- ``column:NAME`` for each metadata column (camera, region, ...): as ``label``, and a
  value the reference never had holding ``new_value_share`` of the window is flagged
  by itself ("a new camera shows up").

A window is flagged on a check when its score passes the threshold (the size of the
change) *and* its p-value is below ``alpha / windows`` (Bonferroni over the windows),
so on data without drift a check flags a window at most ``alpha`` of the runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa

from mining.core import tables
from mining.core.config import Config, DriftConfig
from mining.core.errors import SliceError
from mining.core.schema import DRIFT, embedding_matrix
from mining.core.sql import LakeDB, quote_ident, quote_literal
from mining.core.statistics import metadata_columns

JOB = "drift"
WINDOWS = {"h": "hour", "d": "day", "w": "week"}
_WINDOW = re.compile(r"^(\d+)([hdw])$")


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime  # exclusive

    def sql(self, column: str = "ts") -> str:
        return (
            f"{column} >= {quote_literal(self.start.isoformat())}::TIMESTAMPTZ "
            f"AND {column} < {quote_literal(self.end.isoformat())}::TIMESTAMPTZ"
        )

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def window_length(window: str) -> timedelta:
    """``1h``, ``6h``, ``1d``, ``1w`` as a timedelta; SliceError otherwise."""
    match = _WINDOW.match(window.strip())
    if not match or int(match.group(1)) < 1:
        raise SliceError(f"window {window!r}: give a number and h, d or w, e.g. 1h, 6h, 1d, 1w")
    count, unit = int(match.group(1)), match.group(2)
    return {"h": timedelta(hours=count), "d": timedelta(days=count), "w": timedelta(weeks=count)}[unit]


def parse_reference(text: str) -> Period:
    """``DATE..DATE`` (both days included) as a Period."""
    try:
        first, last = (date.fromisoformat(part.strip()) for part in text.split(".."))
    except ValueError:
        raise SliceError(f"reference {text!r}: give two days, e.g. 2026-10-01..2026-10-07 (both included)") from None
    if last < first:
        raise SliceError(f"reference {text!r}: the first day is after the last")
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    return Period(start, datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1))


def windows(db: LakeDB, length: timedelta) -> list[Period]:
    """The windows of ``length`` from the first prediction's (UTC midnight-aligned) to the last's."""
    first, last = db.query("SELECT min(ts) AS a, max(ts) AS b FROM predictions").to_pylist()[0].values()
    if first is None:
        raise SliceError("the lake has no predictions: ingest them first (`edgemine ingest predictions FILE`)")
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    out = []
    while start <= last:
        out.append(Period(start, start + length))
        start += length
    return out


def detect_drift(db: LakeDB, config: DriftConfig = DriftConfig(), *, window: str | None = None,
                 reference: str | None = None, embeddings: bool = True) -> pa.Table:
    """Rows of the ``drift`` table: every window after the reference, every check (not written).

    ``reference``: ``DATE..DATE``; default: the first ``config.reference_windows`` windows."""
    every = windows(db, window_length(window or config.window))
    ref = parse_reference(reference) if reference else Period(every[0].start, every[min(config.reference_windows,
                                                                                           len(every)) - 1].end)
    current = [w for w in every if w.start >= ref.end or w.end <= ref.start]
    if not current:
        raise SliceError(f"no window outside the reference {ref}: give a shorter --reference or --window")
    alpha = config.alpha / len(current)
    rows = [*categorical_checks(db, "label", "label", ref, current, config, alpha)]
    rows += confidence_checks(db, ref, current, config, alpha)
    for column in metadata_columns(db):
        rows += categorical_checks(db, f"column:{column}", quote_ident(column), ref, current, config, alpha)
    if embeddings:
        rows += embedding_checks(db, ref, current, config, alpha)
    now = datetime.now(UTC)
    return pa.Table.from_pylist([r | {"reference": str(ref), "computed_at": now} for r in rows], schema=DRIFT.schema)


def record_drift(db: LakeDB, rows: pa.Table, *, user: str) -> None:
    if rows.num_rows:
        tables.append(db.lake, DRIFT, rows, tables.commit_info(JOB, user, rows=rows.num_rows))


def run_drift(db: LakeDB, config: Config, *, window: str | None = None, reference: str | None = None,
              embeddings: bool = True, record: bool = True) -> pa.Table:
    """Detect drift with ``config.drift`` (``detect_drift``) and, unless ``record=False``,
    append the rows to ``drift`` as ``config.mining.user``; returns the rows."""
    rows = detect_drift(db, config.drift, window=window, reference=reference, embeddings=embeddings)
    if record:
        record_drift(db, rows, user=config.mining.user)
    return rows


def stored_drift(db: LakeDB) -> pa.Table:
    """The ``drift`` table's rows (each window and feature's latest run), by window then feature."""
    return db.query("SELECT * FROM drift ORDER BY window_start, feature")


def window_slice(start: datetime, end: datetime) -> str:
    """The ``where`` slice (over images i JOIN predictions p) of a window's predictions."""
    return Period(start, end).sql("p.ts")


def flagged_windows(rows: pa.Table) -> list[tuple[datetime, datetime, list[str]]]:
    """(start, end, the features flagged) of each window of ``rows`` with a flag, oldest first."""
    found: dict[tuple[datetime, datetime], list[str]] = {}
    for r in rows.filter(rows.column("flagged")).select(["window_start", "window_end", "feature"]).to_pylist():
        found.setdefault((r["window_start"], r["window_end"]), []).append(r["feature"])
    return [(start, end, sorted(set(features))) for (start, end), features in sorted(found.items())]


def _bucket(ref: Period, current: list[Period]) -> str:
    """SQL: the window index of ``ts`` (-1 for the reference, NULL outside both)."""
    cases = " ".join(f"WHEN {w.sql()} THEN {k}" for k, w in enumerate(current))
    return f"CASE WHEN {ref.sql()} THEN -1 {cases} END"


def categorical_checks(db: LakeDB, check: str, column_sql: str, ref: Period, current: list[Period],
                       config: DriftConfig, alpha: float) -> list[dict]:
    """Jensen-Shannon distance and chi-square per window of a categorical column's counts."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    counts = db.query(f"SELECT w, v, count(*) AS n FROM (SELECT {_bucket(ref, current)} AS w, "
                      f"coalesce({column_sql}::VARCHAR, '<null>') AS v FROM predictions) WHERE w IS NOT NULL "
                      "GROUP BY w, v").to_pylist()
    values = sorted({r["v"] for r in counts})
    table = np.zeros((len(current) + 1, len(values)), np.int64)  # row 0: the reference
    for r in counts:
        table[r["w"] + 1, values.index(r["v"])] = r["n"]
    out = []
    reference = table[0]
    for k, w in enumerate(current):
        window = table[k + 1]
        n = int(window.sum())
        row = {"window_start": w.start, "window_end": w.end, "feature": check, "statistic": "jensen_shannon",
               "threshold": config.distance_threshold, "n": n, "n_reference": int(reference.sum())}
        if n == 0 or not reference.sum():
            out.append(row | {"score": None, "p_value": None, "flagged": False, "detail": "no rows"})
            continue
        score = float(jensenshannon(reference, window, base=2))
        used = (reference + window) > 0
        p = float(chi2_contingency(np.stack([reference[used], window[used]]))[1]) if used.sum() > 1 else 1.0
        new = [
            (values[i], window[i] / n)
            for i in range(len(values))
            if reference[i] == 0 and window[i] / n >= config.new_value_share
        ]
        detail = f"psi={psi(reference, window):.4f}" + (
            "; new: " + ", ".join(f"{v} ({share:.0%})" for v, share in new) if new else "")
        flagged = bool(new) or (score > config.distance_threshold and p < alpha)
        out.append(row | {"score": score, "p_value": p, "flagged": flagged, "detail": detail})
    return out


def psi(reference: np.ndarray, current: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index of two count vectors (shares floored at ``floor``)."""
    a = np.maximum(reference / reference.sum(), floor)
    b = np.maximum(current / current.sum(), floor)
    return float(((b - a) * np.log(b / a)).sum())


def confidence_checks(db: LakeDB, ref: Period, current: list[Period], config: DriftConfig, alpha: float) -> list[dict]:
    """The two-sample KS test of each window's confidences against the reference's."""
    from scipy.stats import ks_2samp

    got = db.query(
        f"SELECT * FROM (SELECT {_bucket(ref, current)} AS w, confidence FROM predictions) WHERE w IS NOT NULL"
    )
    w_index = got.column("w").to_numpy()
    confidence = got.column("confidence").to_numpy()
    reference = confidence[w_index == -1]
    out = []
    for k, w in enumerate(current):
        window = confidence[w_index == k]
        row = {"window_start": w.start, "window_end": w.end, "feature": "confidence", "statistic": "ks",
               "threshold": config.distance_threshold, "n": int(window.size), "n_reference": int(reference.size),
               "detail": None}
        if not window.size or not reference.size:
            out.append(row | {"score": None, "p_value": None, "flagged": False, "detail": "no rows"})
            continue
        result = ks_2samp(reference, window)
        out.append(row | {"score": float(result.statistic), "p_value": float(result.pvalue),
                          "flagged": bool(result.statistic > config.distance_threshold and result.pvalue < alpha)})
    return out


def embedding_checks(db: LakeDB, ref: Period, current: list[Period], config: DriftConfig, alpha: float) -> list[dict]:
    """The classifier two-sample test of each window's embeddings against the reference's
    (a seeded sample of ``config.sample`` images each); none without embeddings."""
    sets = db.query("SELECT backbone, weights FROM embeddings GROUP BY ALL ORDER BY count(*) DESC LIMIT 1").to_pylist()
    if not sets:
        return []
    picked = db.query(
        f"WITH seen AS (SELECT image_id, min(ts) AS ts FROM predictions GROUP BY image_id), "
        f"b AS (SELECT image_id, {_bucket(ref, current)} AS w FROM seen) "
        f"SELECT image_id, w FROM b WHERE w IS NOT NULL "
        f"QUALIFY row_number() OVER (PARTITION BY w ORDER BY hash(image_id, {int(config.seed)})) "
        f"<= {int(config.sample)}"
    )
    ids = picked.column("image_id").to_pylist()
    vectors = db.query(
        "SELECT image_id, embedding FROM embeddings WHERE backbone = $b AND weights = $w AND image_id IN "
        "(SELECT unnest($ids))", {"b": sets[0]["backbone"], "w": sets[0]["weights"], "ids": ids})
    position = {i: k for k, i in enumerate(vectors.column("image_id").to_pylist())}
    matrix = embedding_matrix(vectors.column("embedding"))
    w_of = dict(zip(ids, picked.column("w").to_pylist(), strict=True))
    rows_of = {}
    for image_id, k in position.items():
        rows_of.setdefault(w_of[image_id], []).append(k)
    reference = matrix[rows_of.get(-1, [])]
    out = []
    for k, w in enumerate(current):
        window = matrix[rows_of.get(k, [])]
        row = {"window_start": w.start, "window_end": w.end, "feature": "embedding", "statistic": "classifier_auc",
               "threshold": config.auc_threshold, "n": int(len(window)), "n_reference": int(len(reference)),
               "detail": f"{sets[0]['backbone']}/{sets[0]['weights']}"}
        if len(window) < 10 or len(reference) < 10:
            out.append(row | {"score": None, "p_value": None, "flagged": False, "detail": "fewer than 10 embeddings"})
            continue
        auc, p = classifier_two_sample(reference, window, config.seed)
        out.append(row | {"score": auc, "p_value": p, "flagged": bool(auc > config.auc_threshold and p < alpha)})
    return out


def classifier_two_sample(reference: np.ndarray, current: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """ROC AUC of a logistic regression telling ``current`` (n, d) from ``reference`` (m, d), fitted
    on a stratified half and scored on the other; and the one-sided Mann-Whitney p-value of that AUC."""
    from scipy.stats import mannwhitneyu
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    x = np.concatenate([reference, current])
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(current))])
    x_fit, x_test, y_fit, y_test = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    scores = LogisticRegression(max_iter=1000).fit(x_fit, y_fit).decision_function(x_test)
    auc = float(roc_auc_score(y_test, scores))
    p = float(mannwhitneyu(scores[y_test == 1], scores[y_test == 0], alternative="greater").pvalue)
    return auc, p
