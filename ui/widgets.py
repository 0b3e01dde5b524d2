"""Widgets the pages share: the thumbnail grid (and the object grid: a box's crop per hit), the
full-size image (an object's: its frame with the box highlighted), the reviewer's name, and how
errors the user can fix are shown.

Each draws and returns what the user chose; none writes to the lake except
through the library (mining.review.decisions) when the user clicks a decision.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import streamlit as st

from mining.core.accounts import Identity
from mining.core.errors import EdgemineError
from mining.core.media import draw_boxes, highlight_box, image_details, read_image
from ui import auth, data

DECISION_MARK = {"accept": ":green[**accepted**]", "reject": ":red[**rejected**]"}
PENDING_ERROR = "_pending_error"


def action(needs: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A button's callback doing ``needs`` (an action of mining.core.accounts.ACTIONS; the
    session's role is checked first, on the server) that may meet an error the user can fix:
    the message is kept and shown at the top of the page that is drawn next
    (``show_pending_error``, called by app.py), never a traceback; the page stays as it was."""

    def wrap(callback: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(callback)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                auth.require(needs)
                return callback(*args, **kwargs)
            except EdgemineError as e:
                st.session_state[PENDING_ERROR] = str(e)
                return None

        return run

    return wrap


def show_pending_error() -> None:
    """The error the last callback met, if any, in an error box."""
    message = st.session_state.pop(PENDING_ERROR, None)
    if message:
        st.error(message)


def reviewer(identity: Identity) -> str:
    """Who acts, in the sidebar: the signed-in identity with a Log out button; without a
    login (localhost), the reviewer's name, asked once (default: the configured user)."""
    if identity.via != "local":
        st.sidebar.markdown(f"Signed in as **{identity.name}** ({identity.role})")
        st.sidebar.button("Log out", key="logout", on_click=auth.sign_out)
        return identity.name
    st.session_state.setdefault("reviewer", data.config().mining.user)
    return st.sidebar.text_input(
        "Reviewer", key="reviewer", help="recorded with every decision and narrowing step"
    ).strip()


def current_reviewer() -> str:
    """Who is recorded as acting: the signed-in identity; without a login, the name in the
    sidebar's field (the configured user until changed; empty if cleared, and the library then
    refuses to record a decision without a reviewer)."""
    identity = auth.current()
    if identity.via != "local":
        return identity.name
    return st.session_state.get("reviewer", data.config().mining.user).strip()


def image_grid(
    image_ids: list[str],
    *,
    key: str,
    scores: dict[str, float] | None = None,
    decisions: dict[str, str] | None = None,
    columns: int = 8,
    notes: dict[str, str] | None = None,
) -> list[str]:
    """Thumbnails in rows of ``columns``, each captioned with its latest prediction (and
    score, and decision, when given, and a note: a queue's reason), a checkbox to select it
    and a button that opens it full size. Returns the selected image ids, in grid order."""
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
                if zoom.button(
                    "", icon=":material/open_in_full:", key=f"{key}:open:{image_id}", help="full size, with its boxes"
                ):
                    show_image(image_id)
                st.caption(
                    caption(
                        facts.get(image_id, {}),
                        data.config().ui.caption_columns,
                        (scores or {}).get(image_id),
                        (decisions or {}).get(image_id),
                    )
                )
                if notes and notes.get(image_id):
                    st.caption(plain(notes[image_id]))
    return selected


def object_grid(hits: list[dict], *, key: str, columns: int = 8) -> list[str]:
    """Object hits (dicts of detection_id, image_id, box, score) as the crops of their boxes,
    each with its score, a checkbox and a button that opens its whole frame with the box
    highlighted. Returns the selected detection ids, in grid order."""
    uri = data.lake().uri
    pictures = data.crops(uri, tuple((h["image_id"], tuple(h["box"])) for h in hits))
    selected = []
    for start in range(0, len(hits), columns):
        for col, hit, picture in zip(st.columns(columns), hits[start:start + columns],
                                     pictures[start:start + columns]):
            detection = hit["detection_id"]
            with col:
                if picture is not None:
                    st.image(picture, width="stretch", output_format="PNG")  # the box's pixels, as they are
                else:
                    st.caption("(original unreadable)")
                pick, zoom = st.columns([3, 1], gap="small")
                if pick.checkbox(detection[-6:], key=f"{key}:sel:{detection}"):
                    selected.append(detection)
                if zoom.button("", icon=":material/open_in_full:", key=f"{key}:open:{detection}",
                               help="the whole frame, this box highlighted"):
                    show_object(hit)
                st.caption(f"**{hit['score']:.3f}** · image {hit['image_id'][:6]}")
    return selected


@st.dialog("Object in its frame", width="large")
def show_object(hit: dict) -> None:
    """The whole frame of an object hit with its box highlighted, and the frame's predictions."""
    try:
        details = image_details(data.db(), hit["image_id"])
        picture = highlight_box(read_image(details.uri, data.config().s3), hit["box"], hit["detection_id"][-6:])
    except EdgemineError as e:
        st.error(str(e))
        return
    except (OSError, ValueError) as e:
        st.error(f"cannot read the original at {hit['image_id']}: {e}; check that the file is still there "
                 "and the lake's S3 credentials can read it.")
        return
    box = ", ".join(f"{v:.0f}" for v in hit["box"])
    st.image(picture, caption=f"box {hit['detection_id']} [{box}] · {details.width}×{details.height} · {details.uri}",
             output_format="PNG")
    st.dataframe(details.predictions, hide_index=True, width="stretch")


def clear_selection(key: str) -> None:
    """Untick every checkbox of the grid ``key`` once its selection was acted on. Call
    it from a widget's callback: only there may a widget's value be set, and setting
    (not deleting) it is what the browser's checkbox follows."""
    for name in [k for k in st.session_state if isinstance(k, str) and k.startswith(f"{key}:sel:")]:
        st.session_state[name] = False


def plain(text: str) -> str:
    """``text`` (a reporter's comment, a queue's reason) shown as written, not as Markdown."""
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~:$-])", r"\\\1", text)


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def caption(facts: dict, columns: tuple[str, ...], score: float | None, decision: str | None) -> str:
    """A thumbnail's caption: score, latest label and confidence, the annotators' labels
    (red where the prediction is not among them), the configured columns ([ui]
    caption_columns: a true boolean shows its name, other values name: value, NULL and
    false nothing), and the decision."""
    parts = []
    if score is not None:
        parts.append(f"**{score:.3f}**")
    if facts.get("label") is not None:
        parts.append(f"{facts['label']} {facts['confidence']:.2f}")
    if facts.get("labels"):
        labelled = "labelled " + plain(", ".join(facts["labels"]))
        parts.append(labelled if facts.get("label") in facts["labels"] else f":red[{labelled}]")
    for column in columns:
        value = facts.get(column)
        if value is True:
            parts.append(f":orange[{column}]")
        elif value is not None and value is not False:
            parts.append(f"{column}: {value}")
    if decision:
        parts.append(DECISION_MARK[decision])
    return " · ".join(parts) or "no prediction"


@st.dialog("Image", width="large")
def show_image(image_id: str) -> None:
    """The original with its newest prediction's boxes and masks, and every prediction on it."""
    try:
        details = image_details(data.db(), image_id)
    except EdgemineError as e:
        st.error(str(e))
        return
    try:
        picture = draw_boxes(read_image(details.uri, data.config().s3), details.boxes, details.masks)
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
