"""Lake: what is in it, as charts: rows, embeddings, errors, predictions over time,
confidence, and a breakdown per label and per metadata column."""

from __future__ import annotations

import streamlit as st

from ui import data


def render() -> None:
    st.title("Lake")
    st.caption(f"`{data.lake().uri}`")
    if st.button("Refresh", icon=":material/refresh:", help="statistics are kept for a minute; read them again now"):
        data.overview.clear()
    o = data.overview(data.lake().uri)
    h = o["headline"]
    cols = st.columns(6)
    cols[0].metric("Images", f"{h['images']:,}")
    cols[1].metric("Embedded", f"{h['embedded']:,}", f"{h['embedded'] / h['images']:.0%}" if h["images"] else None,
                   delta_color="off")
    cols[2].metric("Predictions", f"{h['predictions']:,}")
    cols[3].metric("Model versions", h["models"])
    cols[4].metric("Errors", f"{h['errors']:,}", help="inputs the jobs refused; see below")
    cols[5].metric("Review decisions", f"{h['decisions']:,}")
    if not h["images"]:
        st.info("The lake is empty: run `edgemine demo`, or `edgemine ingest images ...` and `edgemine embed`.")
        return

    left, right = st.columns(2)
    with left:
        st.subheader("Predictions per day")
        st.bar_chart(o["per_day"].to_pandas(), x="day", y="predictions", color="model_version", height=280)
    with right:
        st.subheader("Confidence")
        st.bar_chart(o["histogram"].to_pandas(), x="low", y="predictions", height=280,
                     x_label="confidence (bin's lower edge)")

    st.subheader("Per label and metadata column")
    names = list(o["breakdowns"])
    for tab, name in zip(st.tabs(names), names):
        with tab:
            table = o["breakdowns"][name].to_pandas()
            chart, grid = st.columns([1, 1])
            chart.bar_chart(table.head(20), x="value", y="predictions", horizontal=True, height=300, x_label=name)
            grid.dataframe(table, hide_index=True, width="stretch", column_config={
                "value": name,
                "mean_confidence": st.column_config.NumberColumn("mean confidence", format="%.3f"),
                "low_confidence_share": st.column_config.ProgressColumn("confidence < 0.5", min_value=0, max_value=1,
                                                                        format="percent"),
            })

    st.subheader("Errors")
    if o["errors"].num_rows:
        st.dataframe(o["errors"].to_pandas(), hide_index=True, width="stretch")
        st.caption("Every refused input, with its row and raw text: `SELECT * FROM errors` on the SQL page.")
    else:
        st.success("No input was refused.")
    with st.expander("Rows per table"):
        st.dataframe(o["tables"].to_pandas(), hide_index=True, width="stretch")


if __name__ == "__main__":  # run by Streamlit as a page of ui/app.py
    render()
