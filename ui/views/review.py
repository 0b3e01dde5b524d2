"""Review: accept or reject images (one, a selection, a page, a whole cluster) from
a narrowing session, a named set, a review queue (each image's reason and score under
it) or a SQL query (mining.review.sources, as `edgemine export` resolves them). Decisions go to the
lake with the reviewer's name and time (mining.review.decisions, as `edgemine review`); the accepted
images are published as the review's named set for export."""

from __future__ import annotations

import streamlit as st

from mining.core.errors import EdgemineError, SessionError
from mining.core.sql import LakeDB
from mining.review import decisions, sources
from mining.search import sessions
from ui import data, widgets

SOURCES = ("Narrowing session", "Named set", "SQL query", "Queue")


def render() -> None:
    st.title("Review")
    source = st.session_state.pop("review_source", None)
    if source and source.get("kind") == "queue":  # arriving from the Queues page: preselect the queue
        st.session_state.update(review_kind=SOURCES[3], review_queue=source["queue"], review_name=source["queue"])
    elif source:  # arriving from a cluster card: preselect it
        st.session_state.update(review_kind=SOURCES[0], review_session=source["session"],
                                review_clusters=source["clusters"], review_name=source["session"])
    images = _choose_images() or sources.Images([], "")
    ids, origin = images.ids, images.origin
    name = st.text_input("Review name (its accepted images become the set of this name)", key="review_name").strip()
    reviewer = widgets.current_reviewer()
    if not ids:
        return
    if not name or not reviewer:  # deciding is still offered: the library says what is missing
        st.warning("Give the review a name (and your name in the sidebar) to record decisions.")
    page_size = data.config().ui.page_size
    pages = -(-len(ids) // page_size)
    page = (
        st.number_input(f"Page (of {pages}, {page_size} images each)", 1, pages, 1, key="review_page")
        if pages > 1
        else 1
    )
    shown = ids[(page - 1) * page_size: page * page_size]
    decided = decisions.decisions(data.db(), name, shown)
    _summary(name)
    chosen = widgets.image_grid(shown, key="review", decisions=decided, columns=10, scores=images.scores or None,
                                notes=images.reasons or None)  # a queue's: each image's score and reason
    _decision_buttons(name, reviewer, origin, chosen, shown)


def _choose_images() -> sources.Images | None:
    """The images to review, in the order to show them, and where they came from."""
    kind = st.radio("Images from", SOURCES, horizontal=True, key="review_kind")
    db = data.db()
    try:
        if kind == SOURCES[0]:
            return _session_images(db)
        if kind == SOURCES[1]:
            names = sources.names(db, "set")
            if not names:
                st.info("No named set yet: save one from **Narrow**, or `edgemine similar ... --save NAME`.")
                return None
            return sources.resolve(db, f"set:{st.selectbox('Set', names, key='review_set')}")
        if kind == SOURCES[3]:
            names = sources.names(db, "queue")
            if not names:
                st.info("No queue yet: make one on **Queues**, or `edgemine queue least-confidence --name low`.")
                return None
            name = st.selectbox("Queue (its latest version)", names, key="review_queue")
            _name_after(name)
            return sources.resolve(db, f"queue:{name}")
        query = st.text_area("A query returning image_id", key="review_sql",
                             placeholder="SELECT image_id FROM predictions WHERE customer_flag ORDER BY confidence "
                                         "LIMIT 200")
        return sources.resolve(db, f"sql:{query}") if query.strip() else None
    except EdgemineError as e:  # a bad query or session: said here, the rest of the page stays usable
        st.error(str(e))
        return None


def _session_images(db: LakeDB) -> sources.Images | None:
    """A narrowing session's current step, or some of its clusters."""
    names = sources.names(db, "session")
    if not names:
        st.info("No narrowing session yet: start one on **Find similar**.")
        return None
    if st.session_state.get("review_session") not in (None, *names):
        raise SessionError(f"no session {st.session_state.pop('review_session')!r} in the lake; choose one of the list")
    session = st.selectbox("Session", names, key="review_session")
    report = sessions.show(db, session)
    _name_after(session)
    clusters = st.multiselect("Clusters (none: all of the current step)", [c.cluster for c in report.clusters],
                              key="review_clusters")
    return sources.resolve(db, f"session:{session}", clusters=clusters)


def _name_after(source: str) -> None:
    """Name the review after its source (session or queue) unless the reviewer typed a
    name of their own; runs before the name's text box is drawn, so it may set it."""
    current = st.session_state.get("review_name", "")
    if not current or current == st.session_state.get("_review_name_auto"):
        st.session_state["review_name"] = source
        st.session_state["_review_name_auto"] = source


def _summary(name: str) -> None:
    counts = {r["review"]: r for r in decisions.list_reviews(data.db()).to_pylist()}.get(name)
    accepted, rejected = (counts["accepted"], counts["rejected"]) if counts else (0, 0)
    a, r, save = st.columns([1, 1, 2], vertical_alignment="bottom")
    a.metric("Accepted", accepted)
    r.metric("Rejected", rejected)
    save.button(f"Save accepted as set '{name}'", key="publish", disabled=not accepted, on_click=_publish, args=(name,))


@widgets.action("save_set")
def _publish(name: str) -> None:
    n = decisions.save_review(data.db(), name, user=widgets.current_reviewer())
    data.lake_changed()
    st.toast(f"Set '{name}' saved with {widgets.plural(n, 'image')}: ready for export")


def _decision_buttons(name: str, reviewer: str, origin: str, chosen: list[str], shown: list[str]) -> None:
    cols = st.columns(4)
    actions = [
        (cols[0], f"Accept selected ({len(chosen)})", "accept", chosen, "accept_selected"),
        (cols[1], f"Reject selected ({len(chosen)})", "reject", chosen, "reject_selected"),
        (cols[2], f"Accept all {len(shown)} shown", "accept", shown, "accept_all"),
        (cols[3], f"Reject all {len(shown)} shown", "reject", shown, "reject_all"),
    ]
    icons = {"accept": ":material/check_circle:", "reject": ":material/cancel:"}
    for col, label, decision, ids, key in actions:
        col.button(label, key=key, disabled=not ids, icon=icons[decision], on_click=_decide,
                   args=(name, ids, decision, reviewer, origin))


@widgets.action("decide")
def _decide(name: str, ids: list[str], decision: str, reviewer: str, origin: str) -> None:
    """A button's callback: the decision is in the lake before the page is drawn again."""
    n = decisions.decide(data.db(), name, ids, decision, reviewer=reviewer, source=origin)
    widgets.clear_selection("review")
    data.lake_changed()
    st.toast(f"{decision}ed {widgets.plural(n, 'image')} as {reviewer}")


if __name__ == "__main__":  # run by Streamlit as a page of ui/app.py
    render()
