"""Find similar: choose seeds (from a grid, by id, or an uploaded image), see the
nearest images with scores, refine with positives and negatives (or mark whole pages
in the review loop, saved as review decisions), then start narrowing. Calls the
same functions as `edgemine similar` and `narrow start`. Detection ids as seeds (the
By id tab) search the object index: hits show each box's crop, and 🔍 its frame with the
box highlighted."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import streamlit as st

from mining.core.errors import EdgemineError, ReviewError
from mining.review import decisions
from mining.search import sessions
from mining.search.similar import BROWSE_ORDERS, IMAGE_ID, browse
from ui import auth, data, nav, widgets

BROWSE_SHOWN = 24


def render() -> None:
    st.title("Find similar")
    st.session_state.setdefault("positives", [])
    st.session_state.setdefault("negatives", [])
    index = data.index(data.lake().uri)  # no embeddings yet, or several sets: app.py says so
    st.caption(f"Searching the embeddings of {index.backbone} ({index.weights}): {len(index):,} images, "
               f"{index.dim} floats each.")
    _seed_pickers(index)
    _current_seeds()
    if st.session_state["positives"]:
        _results()


def _seed_pickers(index) -> None:
    grid, by_id, upload = st.tabs(["Browse", "By id", "Upload an image"])
    with grid:
        order_col, where_col = st.columns([1, 2])
        order = order_col.selectbox("Order", list(BROWSE_ORDERS), key="browse_order")
        where = where_col.text_input("Filter (SQL over images i LEFT JOIN predictions p)", key="browse_where",
                                     placeholder="p.camera = 'cam-07' AND p.confidence < 0.6")
        try:
            ids = browse(data.db(), index, where=where or None, order=order, limit=BROWSE_SHOWN)
        except EdgemineError as e:  # a bad filter: said here, the other tabs stay usable
            st.error(f"{e}")
            ids = []
        chosen = widgets.image_grid(ids, key="browse")
        add_pos, add_neg = st.columns(2)
        add_pos.button("Use selected as seeds", key="browse_add", disabled=not chosen, type="primary",
                       on_click=_add, args=("positives", chosen, "browse"))
        add_neg.button("Use selected as negatives", key="browse_add_neg", disabled=not chosen,
                       on_click=_add, args=("negatives", chosen, "browse"))
    with by_id:
        typed = st.text_input("Image id(s), or detection id(s) to search boxes, separated by spaces", key="seed_ids")
        if st.button("Add as seeds", key="seed_ids_add") and typed.split():
            try:
                objects = data.names_detections(data.lake().uri, tuple(typed.split()))
                searched = data.object_index(data.lake().uri) if objects else index
                searched.positions(typed.split())  # the error names the ids the index lacks
                if objects != _objects(st.session_state["positives"]):
                    st.session_state["positives"], st.session_state["negatives"] = [], []  # boxes or images
                _add("positives", typed.split())
                st.rerun()
            except EdgemineError as e:
                st.error(str(e))
    with upload:
        file = st.file_uploader("An image from outside the lake (embedded with the lake's model)",
                                type=["jpg", "jpeg", "png", "webp", "bmp"], key="upload")
        if file is not None and st.button("Use as seed", key="upload_add"):
            _add("positives", [_keep_upload(file)])
            st.rerun()


def _current_seeds() -> None:
    positives, negatives = st.session_state["positives"], st.session_state["negatives"]
    if not positives:
        st.info("Choose one or more seeds: an edge case you found, in the grid above, by id, or as a file.")
        return
    st.markdown(
        f"**Seeds** ({len(positives)}): "
        + ", ".join(f"`{_label(s)}`" for s in positives)
        + (
            f"  \n**Negatives** ({len(negatives)}): " + ", ".join(f"`{_label(s)}`" for s in negatives)
            if negatives
            else ""
        )
    )
    if st.button("Clear seeds", key="clear_seeds"):
        st.session_state["positives"], st.session_state["negatives"] = [], []
        st.rerun()


def _objects(seeds: list[str]) -> bool:
    """Whether the seeds are detection boxes (the search then runs over the object index)."""
    return bool(seeds) and data.names_detections(data.lake().uri, tuple(seeds))


def _results() -> None:
    k_col, where_col = st.columns([1, 3])
    k = k_col.number_input("Results", 1, 500, 40, step=10, key="k")
    if _objects(st.session_state["positives"]):
        _object_results(int(k), where_col)
        return
    where = (
        where_col.text_input("Within the slice (SQL)", key="where", placeholder="p.model_version = 'v2'").strip()
        or None
    )
    try:
        hits = data.similar(data.lake().uri, tuple(st.session_state["positives"]), tuple(st.session_state["negatives"]),
                            int(k), where)
    except (EdgemineError, OSError) as e:  # a bad slice, or a seed file gone: the seeds stay, to be changed
        st.error(str(e))
        return
    st.subheader(f"Nearest {len(hits)}")
    chosen = widgets.image_grid([h[0] for h in hits], key="results", scores=dict(hits))
    plus, minus, _ = st.columns([1, 1, 2])
    plus.button("Add selected to seeds", icon=":material/add:", key="more_like", disabled=not chosen,
                on_click=_add, args=("positives", chosen, "results"))
    minus.button("Add selected as negatives", icon=":material/remove:", key="less_like", disabled=not chosen,
                 on_click=_add, args=("negatives", chosen, "results"))
    _review_loop([h[0] for h in hits], chosen)

    st.subheader("Narrow down")
    pool_col, k_col, name_col = st.columns(3)
    config = data.config().mining
    pool = pool_col.number_input("Pool (images nearest the seeds)", 2, 100_000, config.pool, key="pool")
    clusters = k_col.number_input("Clusters", 1, 64, config.clusters, key="clusters")
    name = name_col.text_input("Session name (optional)", key="session_name").strip() or None
    if st.button("Start narrowing", type="primary", key="start_narrowing"):
        try:
            auth.require("narrow")
            with st.spinner("Clustering the pool…"):
                report = sessions.start_query(
                    data.db(),
                    data.index(data.lake().uri),
                    data.backend(data.config().index.device),
                    data.config_for(widgets.current_reviewer()),
                    list(st.session_state["positives"]),
                    negatives=list(st.session_state["negatives"]),
                    where=where,
                    pool=int(pool),
                    clusters=int(clusters),
                    session=name,
                    embed_files=data.file_embedder(),
                )
        except EdgemineError as e:
            st.error(str(e))
            return
        data.lake_changed()
        st.session_state["session"] = report.session
        nav.go("narrow")


def _object_results(k: int, where_col) -> None:
    """Hits of the object index: each box's crop, 🔍 its frame with the box highlighted."""
    where = where_col.text_input("Within the slice (SQL over detections d JOIN images i)", key="where_objects",
                                 placeholder="d.score < 0.5").strip() or None
    try:
        hits = data.similar_objects(data.lake().uri, tuple(st.session_state["positives"]),
                                    tuple(st.session_state["negatives"]), k, where)
    except EdgemineError as e:  # a bad slice: the seeds stay, to be changed
        st.error(str(e))
        return
    st.subheader(f"Nearest {len(hits)} boxes")
    chosen = widgets.object_grid(hits, key="results")
    plus, minus, _ = st.columns([1, 1, 2])
    plus.button("Add selected to seeds", icon=":material/add:", key="more_like", disabled=not chosen,
                on_click=_add, args=("positives", chosen, "results"))
    minus.button("Add selected as negatives", icon=":material/remove:", key="less_like", disabled=not chosen,
                 on_click=_add, args=("negatives", chosen, "results"))
    st.info("Narrow these boxes or export their frames with the boxes as pre-annotations from the command line: "
            "`edgemine narrow start " + " ".join(st.session_state["positives"][:3]) + "`, `edgemine export "
            "--detections DETECTION_ID...` (docs/EXPORT.md).")


def _review_loop(shown: list[str], chosen: list[str]) -> None:
    """The reviewer loop: mark the page shown (selected: the edge case; the rest: not),
    and the next page is ranked by every mark so far (the doubt of the production model
    joins once there is a negative: docs/MINING.md). Marks are the decisions of a named
    review, so the loop resumes from them, here or in `edgemine review`."""
    st.subheader("Review loop")
    st.session_state.setdefault("loop_review", "find-similar")
    name_col, count_col = st.columns([2, 2])
    review = name_col.text_input("Review (the marks are its decisions)", key="loop_review").strip()
    positives, negatives = st.session_state["positives"], st.session_state["negatives"]
    count_col.metric("Marked / found", f"{len(positives) + len(negatives)} / {len(positives)}")
    ids = [i for i in shown if IMAGE_ID.match(i)]
    mark, resume, _ = st.columns([2, 1, 1])
    mark.button(f"Mark page: {len(chosen)} selected are the edge case, {len(ids) - len(chosen)} not",
                key="mark_page", type="primary", disabled=not ids, icon=":material/done_all:",
                on_click=_mark_page, args=(review, ids, chosen, widgets.current_reviewer()))
    resume.button("Resume from the review", key="resume_loop", disabled=not review, on_click=_resume, args=(review,))


@widgets.action("decide")
def _mark_page(review: str, shown: list[str], chosen: list[str], reviewer: str) -> None:
    """A button's callback: the page's marks saved as decisions (one commit), then used as seeds and negatives."""
    decisions.mark_page(data.db(), review, shown, chosen, reviewer=reviewer, source="find-similar")
    rest = [i for i in shown if i not in chosen]
    _add("positives", chosen)
    _add("negatives", rest, "results")
    data.lake_changed()


@widgets.action("view")
def _resume(review: str) -> None:
    """A button's callback: the review's decisions so far become the seeds and negatives."""
    marks = decisions.decisions(data.db(), review)
    if not marks:
        raise ReviewError(f"review {review!r} has no decisions yet: mark a page first")
    _add("positives", [i for i, d in marks.items() if d == "accept"])
    _add("negatives", [i for i, d in marks.items() if d == "reject"])


def _add(which: str, ids: list[str], clear: str | None = None) -> None:
    other = "negatives" if which == "positives" else "positives"
    st.session_state[which] = list(dict.fromkeys(st.session_state[which] + ids))
    st.session_state[other] = [i for i in st.session_state[other] if i not in ids]
    if clear:
        widgets.clear_selection(clear)


def _keep_upload(file) -> str:
    """Write the upload to this session's folder: the library embeds files by path."""
    folder = st.session_state.setdefault("_uploads", tempfile.mkdtemp(prefix="edgemine-upload-"))
    content = file.getvalue()
    # A folder per content: searches are cached by seed path, so a second file with
    # the same name must not find the first one's results.
    path = Path(folder) / hashlib.sha256(content).hexdigest()[:16] / Path(file.name).name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return str(path)


def _label(seed: str) -> str:
    return Path(seed).name if "/" in seed else seed[:12]


if __name__ == "__main__":  # run by Streamlit as a page of ui/app.py
    render()
