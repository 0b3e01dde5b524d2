"""Metrics: per-slice metrics per model version (regressions in red), what a retrain forgot
(opens as a review queue), the trained models and their curves, drift over time with its
flagged windows (each opens as a review queue), and model cards (mining.evaluation.metrics,
mining.evaluation.models, mining.evaluation.drift, mining.evaluation.cards; as `edgemine metrics|models|drift|card`)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

import mining
from mining.core.errors import EdgemineError
from mining.evaluation import cards, drift, metrics, models
from ui import auth, data, nav, widgets

HEADLINES = {"accuracy": ("accuracy", None), "F1 (macro)": ("f1", "macro"), "precision (macro)": ("precision", "macro"),
             "recall (macro)": ("recall", "macro"), "ECE (calibration error)": ("ece", None)}


def render() -> None:
    st.title("Metrics")
    st.caption(
        "Each model version on each slice against the labels (the newest labels of an image, their most "
        "frequent class); a regression is a drop beyond the margin below the previous version's. docs/METRICS.md"
    )
    st.button("Compute metrics and drift now", key="metrics_run", icon=":material/calculate:", on_click=_compute)
    _metrics()
    _forgotten()
    _models()
    _drift()
    _cards()


@widgets.action("write_metrics")
def _compute() -> None:
    config = data.config_for(widgets.current_reviewer())
    _, report = metrics.run_metrics(data.db(), config)
    rows = mining.detect_drift(data.db(), config=config)
    data.lake_changed()
    st.toast(f"Metrics computed; {len(report.alarms)} regression alarm(s); "
             f"{sum(rows.column('flagged').to_pylist())} drift flag(s)")


def _metrics() -> None:
    st.subheader("Per slice and model version")
    db = data.db()
    if not metrics.stored_metrics(db).num_rows:
        st.info(
            "No metrics yet: press the button above, or run `edgemine metrics` "
            "(labels first: `edgemine labels import`)."
        )
        return
    chosen = st.selectbox("Metric", list(HEADLINES), key="metrics_metric")
    name, label = HEADLINES[chosen]
    rows = metrics.stored_metrics(db, name, label)
    table = metrics.by_version(rows, metrics.model_versions(db)).to_pandas().set_index("slice")
    versions = list(table.columns.drop("n"))
    flagged = {(a["slice"], a["model_version"]) for a in metrics.stored_alarms(db, name, label).to_pylist()}

    def colour(column: pd.Series) -> list[str]:
        return [
            "background-color: #f8d0d0; color: #a00000" if (s, column.name) in flagged else "" for s in column.index
        ]

    st.dataframe(table.style.apply(colour, axis=0).format("{:.4f}", subset=versions, na_rep="n=0"), width="stretch")
    if flagged:
        st.error(f"Regressions (in red): {', '.join(f'{v} on {s}' for s, v in sorted(flagged))}")
    long = rows.select(["slice", "model_version", "value"]).filter(rows.column("value").is_valid()).to_pandas()
    st.bar_chart(long, x="slice", y="value", color="model_version", stack=False, height=300, y_label=chosen)
    all_alarms = metrics.stored_alarms(db)
    if all_alarms.num_rows:
        with st.expander(f"Every regression alarm ({all_alarms.num_rows})"):
            st.dataframe(all_alarms.to_pandas(), hide_index=True, width="stretch")


def _forgotten() -> None:
    versions = metrics.model_versions(data.db())
    if len(versions) < 2:
        return
    st.subheader("What a retrain forgot")
    left, right = st.columns(2)
    new = left.selectbox("Model version", versions, index=len(versions) - 1, key="forgotten_new")
    others = [v for v in versions if v != new]
    default = metrics.previous_version(data.db(), new)  # as `edgemine metrics` compares
    old = right.selectbox("Compared with", others, index=others.index(default) if default in others else 0,
                          key="forgotten_old")
    if st.button(f"Open in Review: labelled images {new} gets wrong that {old} got right", key="forgotten_open",
                 icon=":material/history:"):
        try:
            _open_queue("forgotten", f"forgotten-{new}-vs-{old}", model_version=new, options={"baseline": old})
        except EdgemineError as e:
            st.error(str(e))


def _models() -> None:
    st.subheader("Trained models")
    trained = models.list_models(data.db())
    if not trained.num_rows:
        st.caption(
            "No model trained in the lake yet (`edgemine train`, or `edgemine loop` for the whole retrain loop)."
        )
        return
    st.dataframe(trained.to_pandas(), hide_index=True, width="stretch")
    version = st.selectbox("Curves of", trained.column("model_version").to_pylist(), key="model_curves")
    curves = pd.DataFrame(models.read_model(data.db(), version)["curves"]).set_index("epoch")
    left, right = st.columns(2)
    left.line_chart(curves[["train_loss", "val_loss"]], height=240, x_label="epoch", y_label="loss")
    right.line_chart(curves[["val_accuracy"]], height=240, x_label="epoch", y_label="validation accuracy")


def _drift() -> None:
    st.subheader("Drift over time")
    rows = drift.stored_drift(data.db())
    if not rows.num_rows:
        st.info("No drift computed yet: press the button above, or run `edgemine drift`.")
        return
    st.caption(f"Each window against the reference {rows.column('reference')[-1].as_py()}; a flag needs the score "
               "above its threshold and a p-value below alpha / windows.")
    frame = rows.to_pandas()
    chart = frame.pivot_table(index="window_start", columns="feature", values="score", aggfunc="first")
    st.line_chart(chart, height=300, y_label="score (AUC, JS distance, KS)")
    windows = drift.flagged_windows(rows)
    if not windows:
        st.success("No window flagged.")
        return
    st.dataframe(frame[frame["flagged"]][["window_start", "window_end", "feature", "statistic", "score", "p_value",
                                          "detail"]], hide_index=True, width="stretch")
    pick = st.selectbox("Flagged window", range(len(windows)), key="drift_window",
                        format_func=lambda k: f"{windows[k][0]:%Y-%m-%d %H:%M} ({', '.join(windows[k][2])})")
    if st.button("Open its images in Review", key="drift_open", icon=":material/task_alt:"):
        try:
            _open_window(*windows[pick][:2])
        except EdgemineError as e:
            st.error(str(e))


def _open_window(start: datetime, end: datetime) -> None:
    """The window's least confident predictions as a review queue, opened on the Review page."""
    _open_queue("least-confidence", f"drift-{start:%Y%m%d-%H%M}", where=drift.window_slice(start, end))


def _open_queue(sampler: str, name: str, *, where: str | None = None, model_version: str | None = None,
                options: dict | None = None) -> None:
    """Make the queue (a new version of it when it exists, reviewed images kept) and open it on the Review page."""
    made = mining.make_queue(data.db(), sampler, name, where=where, model_version=model_version, include_reviewed=True,
                             index=lambda: data.index(data.lake().uri),
                             config=data.config_for(widgets.current_reviewer()), **(options or {}))
    data.lake_changed()
    st.session_state["review_source"] = {"kind": "queue", "queue": made.queue}
    nav.go("review")


def _cards() -> None:
    st.subheader("Model cards")
    versions = metrics.model_versions(data.db())
    if not versions:
        return
    version = st.selectbox("Model version", versions, index=len(versions) - 1, key="card_version")
    text = cards.read_card(data.db(), version)
    if st.button("Write the card" if text is None else "Write the card again", key="card_write",
                 icon=":material/description:"):
        try:
            auth.require("write_metrics")
            text = cards.write_card(data.db(), version, data.config_for(widgets.current_reviewer()))
        except EdgemineError as e:
            st.error(str(e))
    if text:
        with st.container(border=True):
            st.markdown(text)
    else:
        st.caption(f"No card for {version} yet (`edgemine card {version}`).")


if __name__ == "__main__":  # run by Streamlit as a page of ui/app.py
    render()
