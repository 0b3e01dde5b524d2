"""Export: send a set, a review's accepted images, a session's step or a SQL query for
labelling (mining.labelling.export, as `edgemine export`), see the batches sent, and import
the labels back (mining.labelling.labels, as `edgemine labels import`); where the newest
labels disagree with the model is one table below."""

from __future__ import annotations

import posixpath
import tempfile

import streamlit as st

from mining.core import media
from mining.core.errors import AccessError, EdgemineError
from mining.evaluation import metrics
from mining.labelling import export, labels
from mining.review import sources
from ui import data, widgets

SOURCES = ("Named set", "Review (accepted images)", "Narrowing session", "SQL query")
PREVIEWED = 4


def render() -> None:
    st.title("Export for labelling")
    source = _choose_source()
    ids = _resolve(source)
    left, middle, right = st.columns([1, 2, 1])
    fmt = left.selectbox("Format", export.FORMATS, key="export_format")
    target = middle.selectbox("To (the config's [ui] export_targets and label_studio_hosts)", _targets(),
                              key="export_target")
    if target is None:
        st.info("No export target is allowed: an admin lists folders or s3:// prefixes in the config's "
                "[ui] export_targets (and Label Studio servers in label_studio_hosts).")
    project = right.text_input("Label Studio project", key="export_project",
                               disabled=not (target or "").startswith("http"))
    a, b, c, d, e = st.columns(5)
    task_size = a.number_input("Images per task (0: one task)", 0, 1_000_000, data.config().export.task_size,
                               key="export_task_size")
    predictions = b.checkbox("Predictions as pre-annotations", True, key="export_predictions")
    copy_images = c.checkbox(
        "Copy the images", False, key="export_copy", help="default: by reference (presigned URLs on S3)"
    )
    resend = d.checkbox("Send again images sent before", False, key="export_resend")
    drop = e.checkbox("Drop near-duplicates", False, key="export_drop_duplicates",
                      help="one image per near-duplicate group (Queues page, or edgemine duplicates, finds them)")
    if ids and target:
        st.caption(f"{widgets.plural(len(ids), 'image')} from `{source}`; the first {min(PREVIEWED, len(ids))} "
                   "with the pre-annotations they will carry:")
        _preview(ids[:PREVIEWED], predictions)
        st.button(
            f"Export {widgets.plural(len(ids), 'image')}",
            type="primary",
            key="export_run",
            on_click=_export,
            args=(source, ids, fmt, target, project or None, int(task_size), predictions, copy_images, resend, drop),
        )
    result = st.session_state.pop("export_result", None)
    if result:
        st.success(result)
    _batches()
    _import()
    _disagreements()


def _targets() -> list[str]:
    """Where the UI may send images: an allow-list, never free text (a visitor could otherwise
    write anywhere the server can, or send the Label Studio token to any host)."""
    config = data.config().ui
    return [*config.export_targets, *config.label_studio_hosts]


def _allowed(target: str, allowed: list[str]) -> None:
    if target not in allowed:
        raise AccessError(f"{target!r} is not in the config's [ui] allow-lists (export_targets, label_studio_hosts)")


def _choose_source() -> str:
    kind = st.radio("Images from", SOURCES, horizontal=True, key="export_kind")
    db = data.db()
    try:
        if kind == SOURCES[0]:
            names = sources.names(db, "set")
            return f"set:{st.selectbox('Set', names, key='export_set')}" if names else ""
        if kind == SOURCES[1]:
            names = sources.names(db, "review")
            return f"review:{st.selectbox('Review', names, key='export_review')}" if names else ""
        if kind == SOURCES[2]:
            names = sources.names(db, "session")
            return f"session:{st.selectbox('Session (its current step)', names, key='export_session')}" if names else ""
    except EdgemineError as e:
        st.error(str(e))
        return ""
    query = st.text_area("A query returning image_id", key="export_sql",
                         placeholder="SELECT image_id FROM predictions WHERE confidence < 0.3 LIMIT 500")
    return f"sql:{query}" if query.strip() else ""


def _resolve(source: str) -> list[str]:
    if not source:
        st.info("Choose images to export: a named set, a review with accepted images, a session, or a query.")
        return []
    try:
        return export.resolve_source(data.db(), source)
    except EdgemineError as e:
        st.error(str(e))
        return []


def _preview(ids: list[str], predictions: bool) -> None:
    items, refused = export.load_items(data.db(), ids, predictions=predictions)
    for col, item in zip(st.columns(PREVIEWED), items):
        try:
            picture = media.draw_boxes(media.read_image(item.uri, data.config().s3),
                                       item.boxes if predictions else [], item.masks if predictions else [])
        except (OSError, ValueError) as e:
            col.caption(f"{item.image_id[:8]}: cannot be read ({e})")
            continue
        col.image(media.to_jpeg(picture), width="stretch")
        caption = (
            f"{item.label} {item.confidence:.2f}" if predictions and item.label is not None else "no pre-annotation"
        )
        col.caption(f"`{item.image_id[:8]}` {caption}")
    for r in refused:
        st.warning(f"{r['uri']}: {r['reason']}")


@widgets.action("export")
def _export(source: str, ids: list[str], fmt: str, target: str, project: str | None, task_size: int, predictions: bool,
            copy_images: bool, resend: bool, drop_duplicates: bool) -> None:
    _allowed(target, _targets())
    config = data.config_for(widgets.current_reviewer())
    bar = st.progress(0.0, text="exporting")
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        bar.progress(min(1.0, done[0] / len(ids)), text=f"exporting: {done[0]} of {len(ids)} images")

    summary = export.export_images(data.db(), ids, fmt=fmt, target=target, config=config, source=source,
                                   task_size=task_size, predictions=predictions, copy_images=copy_images, resend=resend,
                                   drop_duplicates=drop_duplicates, project=project, progress=progress)
    bar.empty()  # done: the message below says what happened
    data.lake_changed()
    if summary.status == "unchanged":
        text = f"Batch {summary.batch} was exported before ({summary.exported} images): nothing changed."
    elif summary.status == "nothing-new":
        text = f"All {summary.skipped} images were sent to {summary.target} before: nothing exported."
    else:
        text = (
            f"Batch {summary.batch}: {summary.exported} images as {fmt} to {summary.folder}, {summary.skipped} skipped "
            f"(sent before), {summary.errors} refused"
            + (f", {summary.duplicates_dropped} near-duplicates left out." if summary.duplicates_dropped else ".")
        )
    st.session_state["export_result"] = text


def _batches() -> None:
    st.subheader("Batches sent")
    batches = export.list_batches(data.db())
    if batches.num_rows:
        st.dataframe(batches.to_pandas(), hide_index=True)
    else:
        st.caption("None yet.")


def _import() -> None:
    st.subheader("Import labels")
    a, b, c = st.columns([2, 1, 1])
    upload = a.file_uploader("A label file (Label Studio JSON export, COCO JSON, CVAT XML)", type=["json", "xml"],
                             key="labels_file")
    fmt = b.selectbox("Format", ("label-studio", "coco", "cvat"), key="labels_format")
    annotator = c.text_input("Annotator (default: the file's)", key="labels_annotator")
    a, b, _ = st.columns([2, 1, 1])
    url = a.selectbox("or a Label Studio server (the config's [ui] label_studio_hosts)",
                      data.config().ui.label_studio_hosts, index=None, key="labels_url") or ""
    project = b.text_input("its project", key="labels_project")
    st.button(
        "Import",
        key="labels_import",
        disabled=not (upload or (url and project)),
        on_click=_import_labels,
        args=(
            upload.getvalue() if upload else None,
            upload.name if upload else "",
            fmt,
            annotator.strip() or None,
            url.strip(),
            project.strip(),
        ),
    )
    result = st.session_state.pop("labels_result", None)
    if result:
        st.success(result)


@widgets.action("import_labels")
def _import_labels(content: bytes | None, name: str, fmt: str, annotator: str | None, url: str, project: str) -> None:
    config = data.config_for(widgets.current_reviewer())
    if content is None:
        _allowed(url, list(config.ui.label_studio_hosts))
        summary = labels.import_labels(data.db(), url, fmt="label-studio", config=config, project=project,
                                       annotator=annotator)
    else:
        with tempfile.TemporaryDirectory() as folder:
            path = posixpath.join(folder, posixpath.basename(name) or "labels")
            with open(path, "wb") as f:
                f.write(content)
            summary = labels.import_labels(data.db(), path, fmt=fmt, config=config, annotator=annotator,
                                           batch=None)
    data.lake_changed()
    st.session_state["labels_result"] = (
        f"{summary.annotations} annotations read: {summary.imported} labels imported, "
        f"{summary.already} already in the lake, {summary.errors} refused (see errors)."
    )


def _disagreements() -> None:
    st.subheader("Where the newest labels disagree with the model")
    rows = metrics.disagreements(data.db(), limit=200)
    if not rows.num_rows:
        st.caption("No disagreement (or no labels yet).")
        return
    ids = list(dict.fromkeys(rows.column("image_id").to_pylist()))[:16]
    thumbs = data.thumbnails(data.lake().uri, tuple(ids))
    by_id = {r["image_id"]: r for r in rows.to_pylist()}
    for start in range(0, len(ids), 8):
        for col, image_id in zip(st.columns(8), ids[start:start + 8]):
            if image_id in thumbs:
                col.image(thumbs[image_id], width="stretch")
            r = by_id[image_id]
            col.caption(f":red[**{r['predicted_label']}**] ({r['model_version']}) vs labels {', '.join(r['labels'])}")
    st.dataframe(rows.to_pandas(), hide_index=True)


if __name__ == "__main__":  # run by Streamlit as a page of ui/app.py
    render()
