"""Widgets the pages share: the thumbnail grid, the full-size image, the reviewer's name.

Each draws and returns what the user chose; none writes to the lake except
through the library (jobs.review) when the user clicks a decision.
"""

from __future__ import annotations

import streamlit as st

from ui import data

DECISION_MARK = {"accept": ":green[**accepted**]", "reject": ":red[**rejected**]"}


def reviewer() -> str:
    """The reviewer's name, asked once in the sidebar (default: the configured user)."""
    st.session_state.setdefault("reviewer", data.config().mining.user)
    return st.sidebar.text_input("Reviewer", key="reviewer", help="recorded with every decision and narrowing step").strip()


def current_reviewer() -> str:
    return (st.session_state.get("reviewer") or data.config().mining.user).strip()


def image_grid(image_ids: list[str], *, key: str, scores: dict[str, float] | None = None,
               decisions: dict[str, str] | None = None, columns: int = 8) -> list[str]:
    """Thumbnails in rows of ``columns``, each captioned with its latest prediction (and
    score, and decision, when given), a checkbox to select it and a button that opens
    it full size. Returns the selected image ids, in grid order."""
    if not image_ids:
        return []
    uri = data.lake().uri
    thumbs = data.thumbnails(uri, tuple(image_ids))
    facts = data.facts(uri, tuple(image_ids))
    selected = []
    for start in range(0, len(image_ids), columns):
        for col, image_id in zip(st.columns(columns), image_ids[start:start + columns]):
            with col:
                if image_id in thumbs:
                    st.image(thumbs[image_id], width="stretch")
                else:
                    st.caption("(no thumbnail)")
                # Controls straight under the picture, the caption last: a caption that wraps
                # then cannot push one cell's checkbox out of line with its neighbours'.
                pick, zoom = st.columns([3, 1], gap="small")
                if pick.checkbox(image_id[:6], key=f"{key}:sel:{image_id}"):
                    selected.append(image_id)
                if zoom.button("", icon=":material/open_in_full:", key=f"{key}:open:{image_id}", help="full size, with its boxes"):
                    show_image(image_id)
                st.caption(_caption(facts.get(image_id, {}), (scores or {}).get(image_id), (decisions or {}).get(image_id)))
    return selected


def clear_selection(key: str) -> None:
    """Untick every checkbox of the grid ``key`` once its selection was acted on. Call
    it from a widget's callback: only there may a widget's value be set, and setting
    (not deleting) it is what the browser's checkbox follows."""
    for name in [k for k in st.session_state if isinstance(k, str) and k.startswith(f"{key}:sel:")]:
        st.session_state[name] = False


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _caption(facts: dict, score: float | None, decision: str | None) -> str:
    parts = []
    if score is not None:
        parts.append(f"**{score:.3f}**")
    if facts.get("label") is not None:
        parts.append(f"{facts['label']} {facts['confidence']:.2f}")
    if facts.get("customer_flag"):
        parts.append(":orange[flagged]")
    if decision:
        parts.append(DECISION_MARK[decision])
    return " · ".join(parts) or "no prediction"


@st.dialog("Image", width="large")
def show_image(image_id: str) -> None:
    """The original with its newest prediction's boxes, and every prediction on it."""
    from mining.media import draw_boxes, image_details, read_image

    details = image_details(data.db(), image_id)
    try:
        picture = draw_boxes(read_image(details.uri, data.config().s3), details.boxes)
        st.image(picture, caption=f"{image_id} · {details.width}×{details.height} · {details.uri}")
    except (OSError, ValueError) as e:
        st.error(f"cannot read the original at {details.uri}: {e}. Showing the thumbnail; "
                 "check that the file is still there and the lake's S3 credentials can read it.")
        thumb = data.thumbnails(data.lake().uri, (image_id,)).get(image_id)
        if thumb:
            st.image(thumb)
    if details.boxes:
        st.caption("Boxes: " + ", ".join(f"{b['label']} {b['score']:.2f}" for b in details.boxes))
    st.dataframe(details.predictions, hide_index=True, width="stretch")
