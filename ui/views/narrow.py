"""Narrow: the clusters of a session's current step as cards, a map of the pool,
drill into clusters, go back along the breadcrumb. Every action is the same
library call as `edgemine narrow ...`, so a session moves freely between the
CLI and the UI."""

from __future__ import annotations

import streamlit as st

from mining.search import sessions
from ui import data, nav, widgets

CARDS_PER_ROW = 4


def render() -> None:
    st.title("Narrow")
    names = sessions.list_sessions(data.db()).column("session").to_pylist()
    if not names:
        st.info("No narrowing session yet: start one from **Find similar**, or `edgemine narrow start SEED`.")
        return
    current = st.session_state.get("session")
    session = st.selectbox(
        "Session",
        names,
        index=names.index(current) if current in names else 0,
        key="session_pick",
        on_change=lambda: st.session_state.update(session=st.session_state["session_pick"]),
    )
    st.session_state["session"] = session
    report = sessions.show(data.db(), session)
    _breadcrumb(report)
    st.caption(f"{report.pool_size:,} images in this step · seeds: " + ", ".join(f"`{s[:12]}`" for s in report.seeds))
    map_col, cards_col = st.columns([1, 2])
    with map_col:
        _pool_map(report)
    with cards_col:
        picked = _cards(report)
    _actions(report, picked)


def _breadcrumb(report: sessions.StepReport) -> None:
    crumbs = st.container(horizontal=True, vertical_alignment="center")
    crumbs.markdown("**Steps:**")
    for n, step in enumerate(report.path):
        is_current = step == report.step
        crumbs.button(f"step {step}{' (here)' if is_current else ''}", key=f"crumb:{step}", disabled=is_current,
                   help=None if is_current else "go back to this step (recorded, like every action)",
                   on_click=_back, args=(report.session, len(report.path) - 1 - n))


@widgets.action("narrow")
def _back(session: str, steps: int) -> None:
    for _ in range(steps):
        sessions.back(data.db(), session, widgets.current_reviewer())
    data.lake_changed()


def _pool_map(report: sessions.StepReport) -> None:
    st.subheader("Map of the pool")
    points = data.pool_map(data.lake().uri, report.session, report.step)
    st.scatter_chart(points, x="x", y="y", color="cluster", size=12, height=420, x_label="PC 1", y_label="PC 2")
    st.caption("PCA of the pool's embeddings, coloured by cluster.")


def _cards(report: sessions.StepReport) -> list[int]:
    st.subheader(f"{len(report.clusters)} clusters, nearest the seeds first")
    picked = []
    pictures = data.mosaics(data.lake().uri, tuple(tuple(c.nearest) for c in report.clusters))
    for start in range(0, len(report.clusters), CARDS_PER_ROW):
        cards = zip(report.clusters[start:start + CARDS_PER_ROW], pictures[start:start + CARDS_PER_ROW])
        for col, (c, picture) in zip(st.columns(CARDS_PER_ROW), cards):
            with col.container(border=True):
                st.image(picture, width="stretch")
                conf = f"{c.mean_confidence:.2f}" if c.mean_confidence is not None else "–"
                st.markdown(f"**Cluster {c.cluster}** · {widgets.plural(c.size, 'image')}  \n"
                            f"to seeds {c.seed_distance:.4f} · mean conf {conf}")
                st.caption(
                    ", ".join(f"{k} {v}" for k, v in sorted(c.labels.items(), key=lambda kv: -kv[1])[:4])
                    or "no predictions"
                )
                if st.checkbox("pick", key=f"pick:{report.session}:{report.step}:{c.cluster}"):
                    picked.append(c.cluster)
                st.button("Drill", key=f"drill:{c.cluster}", help="re-cluster inside this cluster", width="stretch",
                          on_click=_pick, args=(report.session, [c.cluster]))
                if st.button("Review", key=f"review:{c.cluster}", help="accept or reject its images", width="stretch"):
                    st.session_state["review_source"] = {
                        "kind": "narrow",
                        "session": report.session,
                        "clusters": [c.cluster],
                    }
                    nav.go("review")
    return picked


def _actions(report: sessions.StepReport, picked: list[int]) -> None:
    drill_col, k_col, name_col, save_col = st.columns([2, 1, 2, 2], vertical_alignment="bottom")
    k = k_col.number_input(
        "Clusters",
        0,
        64,
        0,
        key="drill_k",
        help="for the picked clusters' images; 0: as many as this step has, at most one per 10 images",
    )
    drill_col.button(f"Drill into picked ({len(picked)})", type="primary", disabled=not picked, key="drill_picked",
                     on_click=_pick, args=(report.session, picked), kwargs={"k": int(k) or None})
    name = name_col.text_input("Set name", key="set_name", placeholder=report.session)
    what = f"picked clusters ({len(picked)})" if picked else "this step"
    save_col.button(f"Save {what} as a set", key="save_set", on_click=_save,
                    args=(report.session, name.strip() or report.session, picked or None))


@widgets.action("save_set")
def _save(session: str, name: str, clusters: list[int] | None) -> None:
    n = sessions.save_session(data.db(), session, name, widgets.current_reviewer(), clusters)
    data.lake_changed()
    st.toast(f"Saved {widgets.plural(n, 'image')} as set '{name}'.")


@widgets.action("narrow")
def _pick(session: str, clusters: list[int], k: int | None = None) -> None:
    """A button's callback: runs before the page is drawn, so a drill draws the page once."""
    db = data.db()
    backbone, weights = sessions.session_embedding_set(db, session)
    config = data.config_for(widgets.current_reviewer())
    try:
        sessions.pick(db, data.index(db.lake.uri, backbone, weights), data.backend(config.index.device), config.mining,
                      session, clusters, clusters=k)
    finally:
        data.lake_changed()


if __name__ == "__main__":  # run by Streamlit as a page of ui/app.py
    render()
