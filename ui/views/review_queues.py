"""Queues: make a review queue with any sampler and its options, list the queues with
how much of each is reviewed, see a queue's confidence cut, and open it in Review
(mining.make_queue and the samplers' registry, as `edgemine queue`)."""

from __future__ import annotations

import altair as alt
import streamlit as st

import mining
from mining.review import queues
from mining.review.samplers import SAMPLERS
from mining.search import duplicates
from ui import data, nav, widgets


def render() -> None:
    st.title("Queues")
    st.caption("A queue is a ranked list of images to review, made by a sampler; images already reviewed are left out. "
               "Making a queue under a name that exists adds a new version (the old one is kept).")
    with st.expander("Make a queue", expanded=True):
        _form()
    with st.expander("Near-duplicate groups"):
        _duplicates()
    listed = queues.list_queues(data.db())
    if not listed.num_rows:
        st.info("No queue yet: make one above, or `edgemine queue least-confidence --name low`.")
        return
    st.subheader("Queues")
    table = listed.to_pandas()
    table["reviewed_share"] = table["reviewed"] / table["images"]
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "reviewed_share": st.column_config.ProgressColumn("reviewed", min_value=0, max_value=1, format="percent"),
        "reviewed": st.column_config.NumberColumn("reviewed images"),
    })
    names = listed.column("queue").to_pylist()
    name = st.selectbox("Queue", names, key="queue_pick")
    rows = queues.queue_rows(data.db(), name)
    first = rows.slice(0, 1).to_pylist()[0]
    open_col, about = st.columns([1, 3], vertical_alignment="bottom")
    if open_col.button("Open in Review", key="open_queue", icon=":material/task_alt:"):
        st.session_state["review_source"] = {"kind": "queue", "queue": name}
        nav.go("review")
    about.caption(f"version {first['version']} · {rows.num_rows} images by **{first['sampler']}** · "
                  f"made by {first['created_by'] or '?'}")
    _histogram(name)
    shown = rows.select(["rank", "image_id", "score", "reason", "decision"]).to_pandas()
    shown["decision"] = shown["decision"].fillna("")  # not reviewed yet: blank, not "None"
    st.dataframe(shown, hide_index=True, width="stretch")


def _form() -> None:
    sampler = st.selectbox("Sampler", list(SAMPLERS), key="q_sampler", format_func=lambda s: f"{s}: {SAMPLERS[s].help}")
    spec = SAMPLERS[sampler]
    left, right = st.columns(2)
    left.text_input("Queue name", key="q_name", placeholder="e.g. night-low-confidence")
    right.text_input("Model version (empty: all)", key="q_model_version")
    st.text_input("Slice: SQL over images i JOIN predictions p (empty: the whole lake)", key="q_where",
                  placeholder="p.camera = 'cam-07' AND p.ts > now() - INTERVAL 7 DAY")
    a, b, c, d = st.columns(4)
    a.number_input("Size (0: the sampler's default)", min_value=0, value=0, step=10, key="q_limit")
    b.checkbox("Diverse (k-center greedy)", key="q_diverse")
    c.checkbox("Include reviewed", key="q_include_reviewed")
    d.checkbox("Drop near-duplicates", key="q_drop_duplicates")
    if spec.options:
        columns = st.columns(len(spec.options))
        for col, option in zip(columns, spec.options):
            key = f"q_opt:{sampler}:{option.name}"
            label = option.flag.removeprefix("--")
            if option.type is bool:
                col.checkbox(label, key=key, help=option.help)
            elif option.choices:
                col.selectbox(label, option.choices, key=key, help=option.help)
            elif option.type is int:
                col.number_input(label, value=None, step=1, key=key, help=option.help + " (empty: default)")
            else:
                col.text_input(label, key=key, help=option.help + " (empty: default)")
    st.button("Make queue", key="make_queue", type="primary", icon=":material/playlist_add:", on_click=_make,
              args=(sampler,))


@widgets.action("make_queue")
def _make(sampler: str) -> None:
    state = st.session_state
    spec = SAMPLERS[sampler]
    options = {}
    for option in spec.options:
        value = state.get(f"q_opt:{sampler}:{option.name}")
        if option.type is bool:
            value = value or None
        elif isinstance(value, str):
            value = value.strip() or None
        options[option.name] = value
    uri = data.lake().uri
    made = mining.make_queue(
        data.db(), sampler, state.get("q_name", "").strip(), where=state.get("q_where", "").strip() or None,
        model_version=state.get("q_model_version", "").strip() or None, limit=state.get("q_limit") or None,
        diverse=bool(state.get("q_diverse")), include_reviewed=bool(state.get("q_include_reviewed")),
        drop_duplicates=bool(state.get("q_drop_duplicates")), index=lambda: data.index(uri),
        config=data.config_for(widgets.current_reviewer()), **options)
    data.lake_changed()
    state["queue_pick"] = made.queue
    notes = "; ".join(made.notes)
    st.toast(f"Queue '{made.queue}' version {made.version}: {widgets.plural(made.images, 'image')}"
             + (f" ({notes})" if notes else ""))


def _duplicates() -> None:
    """Find near-duplicate groups (through the index) and look at the largest."""
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    threshold = left.slider("Least cosine similarity to a group's first image", 0.90, 1.0,
                            float(data.config().queues.duplicate_threshold), 0.001, format="%.3f", key="dup_threshold")
    right.button("Find near-duplicates", key="find_duplicates", on_click=_find_duplicates, args=(threshold,))
    result = st.session_state.pop("duplicates_result", None)
    if result:
        st.success(result)
    groups = duplicates.largest_groups(data.db(), limit=5)
    if not groups:
        st.caption("No groups found yet. Queues and exports can drop all but the first image of each group.")
        return
    for group in groups:
        shown = group["image_ids"][:8]
        st.caption(f"Group of {group['images']} (first `{group['group_id'][:8]}`, similarity at least "
                   f"{group['threshold']:.3f})" + (f": the first {len(shown)}" if group["images"] > len(shown) else ""))
        pictures = data.thumbnails(data.lake().uri, tuple(shown))
        for col, image_id in zip(st.columns(8), shown):
            if image_id in pictures:
                col.image(pictures[image_id], caption=image_id[:8], width="stretch")


@widgets.action("make_queue")
def _find_duplicates(threshold: float) -> None:
    config = data.config()
    found = duplicates.find_duplicates(data.db(), data.index(data.lake().uri), threshold=threshold,
                                       k=config.queues.duplicate_k, user=widgets.current_reviewer())
    data.lake_changed()
    st.session_state["duplicates_result"] = (
        f"{widgets.plural(found.groups, 'group')} of near-duplicates among {found.images:,} images: dropping "
        f"duplicates leaves out {widgets.plural(found.duplicates, 'image')}.")


def _histogram(name: str) -> None:
    """Every prediction's confidence, the queue's on top, and the queue's cut as a rule."""
    histogram, cut = queues.confidence_cut(data.db(), name)
    frame = histogram.to_pandas().melt("low", ["predictions", "in_queue"], var_name="which", value_name="count")
    bars = alt.Chart(frame).mark_bar(opacity=0.8).encode(
        x=alt.X("low:Q", bin=alt.Bin(step=0.05), title="confidence"), y=alt.Y("count:Q", stack=None),
        color=alt.Color("which:N", title=None))
    chart = bars
    if cut is not None:
        rule = alt.Chart({"values": [{"cut": cut}]}).mark_rule(color="red", strokeDash=[4, 3]).encode(x="cut:Q")
        chart = bars + rule
        st.caption(f"The queue's cut: its predictions' confidence is at most **{cut:.3f}**.")
    st.altair_chart(chart, width="stretch")


if __name__ == "__main__":  # run by Streamlit as a page of ui/app.py
    render()
