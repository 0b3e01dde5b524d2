"""Metrics: per-slice metrics per model version (regressions in red), what a retrain forgot
(opens as a review queue), the trained models and their curves, drift over time with its
flagged windows (each opens as a review queue), and model cards (mining.metrics,
mining.models, mining.drift, mining.cards; as `edgemine metrics|models|drift|card`)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from mining import cards, drift, metrics, models, queues
from mining.errors import EdgemineError
from ui import data, nav, widgets

HEADLINES = {"accuracy": ("accuracy", None), "F1 (macro)": ("f1", "macro"), "precision (macro)": ("precision", "macro"),
             "recall (macro)": ("recall", "macro"), "ECE (calibration error)": ("ece", None)}


def render() -> None:
    st.title("Metrics")
    st.caption("Each model version on each slice against the labels (the newest labels of an image, their most "
               "frequent class); a regression is a drop beyond the margin below the previous version's. docs/METRICS.md")
    st.button("Compute metrics and drift now", key="metrics_run", icon=":material/calculate:", on_click=_compute)
    _metrics()
    _forgotten()
    _models()
    _drift()
    _cards()


@widgets.action
def _compute() -> None:
    config = data.config_for(widgets.current_reviewer())
    _, report = metrics.run_metrics(data.db(), config)
    rows = drift.detect_drift(data.db(), config.drift)
    drift.record_drift(data.db(), rows, user=config.mining.user)
    data.lake_changed()
    st.toast(f"Metrics computed; {len(report.alarms)} regression alarm(s); "
             f"{sum(rows.column('flagged').to_pylist())} drift flag(s)")


def _metrics() -> None:
    st.subheader("Per slice and model version")
    stored = data.db().query("SELECT * FROM metrics").to_pandas()
    if stored.empty:
        st.info("No metrics yet: press the button above, or run `edgemine metrics` (labels first: `edgemine labels import`).")
        return
    chosen = st.selectbox("Metric", list(HEADLINES), key="metrics_metric")
    name, label = HEADLINES[chosen]
    rows = stored[(stored["metric"] == name) & ((stored["label"] == label) if label else stored["label"].isna())]
    table = rows.pivot_table(index="slice", columns="model_version", values="value", aggfunc="first")
    versions = [v for v in metrics.model_versions(data.db()) if v in table.columns]
    table = table[versions]
    table["n"] = rows.groupby("slice")["n"].max()
    alarms = data.db().query("SELECT model_version, slice, metric, label FROM alarms").to_pandas()
    red = alarms[(alarms["metric"] == name) & ((alarms["label"] == label) if label else alarms["label"].isna())]
    flagged = set(zip(red["slice"], red["model_version"]))

    def colour(column: pd.Series) -> list[str]:
        return ["background-color: #f8d0d0; color: #a00000" if (s, column.name) in flagged else "" for s in column.index]

    st.dataframe(table.style.apply(colour, axis=0).format("{:.4f}", subset=versions, na_rep="n=0"), width="stretch")
    if flagged:
        st.error(f"Regressions (in red): {', '.join(f'{v} on {s}' for s, v in sorted(flagged))}")
    long = rows[["slice", "model_version", "value"]].dropna()
    st.bar_chart(long, x="slice", y="value", color="model_version", stack=False, height=300, y_label=chosen)
    all_alarms = data.db().query("SELECT * EXCLUDE (margin) FROM alarms ORDER BY drop DESC").to_pandas()
    if not all_alarms.empty:
        with st.expander(f"Every regression alarm ({len(all_alarms)})"):
            st.dataframe(all_alarms, hide_index=True, width="stretch")


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
        st.caption("No model trained in the lake yet (`edgemine train`, or `edgemine loop` for the whole retrain loop).")
        return
    st.dataframe(trained.to_pandas(), hide_index=True, width="stretch")
    version = st.selectbox("Curves of", trained.column("model_version").to_pylist(), key="model_curves")
    curves = pd.DataFrame(models.read_model(data.db(), version)["curves"]).set_index("epoch")
    left, right = st.columns(2)
    left.line_chart(curves[["train_loss", "val_loss"]], height=240, x_label="epoch", y_label="loss")
    right.line_chart(curves[["val_accuracy"]], height=240, x_label="epoch", y_label="validation accuracy")


def _drift() -> None:
    st.subheader("Drift over time")
    rows = data.db().query("SELECT * FROM drift ORDER BY window_start").to_pandas()
    if rows.empty:
        st.info("No drift computed yet: press the button above, or run `edgemine drift`.")
        return
    st.caption(f"Each window against the reference {rows['reference'].iloc[-1]}; a flag needs the score above its "
               "threshold and a p-value below alpha / windows.")
    chart = rows.pivot_table(index="window_start", columns="feature", values="score", aggfunc="first")
    st.line_chart(chart, height=300, y_label="score (AUC, JS distance, KS)")
    flagged = rows[rows["flagged"]]
    if flagged.empty:
        st.success("No window flagged.")
        return
    st.dataframe(flagged[["window_start", "window_end", "feature", "statistic", "score", "p_value", "detail"]],
                 hide_index=True, width="stretch")
    windows = sorted(set(zip(flagged["window_start"], flagged["window_end"])))
    pick = st.selectbox("Flagged window", range(len(windows)), key="drift_window",
                        format_func=lambda k: f"{windows[k][0]:%Y-%m-%d %H:%M} ({', '.join(sorted(set(flagged[flagged['window_start'] == windows[k][0]]['feature'])))})")
    if st.button("Open its images in Review", key="drift_open", icon=":material/task_alt:"):
        try:
            _open_window(*windows[pick])
        except EdgemineError as e:
            st.error(str(e))


def _open_window(start, end) -> None:
    """The window's least confident predictions as a review queue, opened on the Review page."""
    where = drift.Period(start.to_pydatetime(), end.to_pydatetime()).sql("p.ts")
    _open_queue("least-confidence", f"drift-{start:%Y%m%d-%H%M}", where=where)


def _open_queue(sampler: str, name: str, *, where: str | None = None, model_version: str | None = None,
                options: dict | None = None) -> None:
    """Make the queue (a new version of it when it exists) and open it on the Review page."""
    made = queues.make_queue(data.db(), sampler, name, where=where, model_version=model_version, limit=None,
                             diverse=False, include_reviewed=True, drop_duplicates=False, options=options or {},
                             user=widgets.current_reviewer(), config=data.config(),
                             index=lambda: data.index(data.lake().uri))
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
