"""Model cards: one per model version, in the sections of Mitchell et al., "Model Cards for
Model Reporting" (FAT* 2019), filled from the lake (docs/METRICS.md).

A card is a list of sections, each of paragraphs and tables, written as Markdown or
HTML, and stored in the lake at ``_cards/<version>.md`` beside the version's metrics.
What the lake cannot know (intended use, ethical considerations) is left as a
prompt for the owner to fill in.
"""

from __future__ import annotations

import html
import json
import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from mining.core.config import Config
from mining.core.errors import SliceError
from mining.core.sql import LakeDB
from mining.evaluation.metrics import check_versions, compute_metrics, previous_version
from mining.evaluation.models import model_row

CARDS_DIR = "_cards"
HEADLINE = "metric IN ('accuracy', 'ece') OR (metric = 'f1' AND label = 'macro')"


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[pa.Table] = field(default_factory=list)


def card_path(db: LakeDB, version: str) -> str:
    """Where a version's card is stored in the lake."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in version)
    return db.lake.path(CARDS_DIR, f"{safe}.md")


def build_card(db: LakeDB, version: str, config: Config) -> list[Section]:
    """The card's sections for ``version`` (SliceError if it has no predictions)."""
    check_versions(db, [version])
    baseline = previous_version(db, version)
    trained = model_row(db, version)  # None unless `edgemine train` made the version
    facts = db.query(
        "SELECT min(ts) AS first, max(ts) AS last, count(*) AS predictions, count(DISTINCT image_id) AS images, "
        "min(ingested_at) AS ingested FROM predictions WHERE model_version = $v",
        {"v": version},
    ).to_pylist()[0]
    return [
        model_details(version, baseline, facts, trained, config),
        Section(
            "Intended use",
            [
                "_To be filled in by the owner: the task, the cameras and conditions it is meant for, "
                "and uses it is not meant for._"
            ],
        ),
        Section(
            "Factors",
            [
                "Slices evaluated (docs/METRICS.md): the whole lake (`all`), each value of each metadata "
                "column, COCO object-size ranges, each label batch, configured and saved slices, sets and queues."
            ],
        ),
        Section(
            "Metrics",
            [
                "Accuracy, per-class and macro precision/recall/F1, confusion counts and expected calibration "
                "error (15 equal-width bins), against each image's newest labels (their most frequent class). "
                "Regressions: a drop beyond the margin whose paired bootstrap interval lies below 0."
            ],
        ),
        training_data(db, trained, facts["ingested"] or facts["first"]),
        evaluation(db, version, baseline, config),
        known_regressions(db, version),
        drift_at_release(db, facts["first"]),
        Section("Ethical considerations", ["_To be filled in by the owner._"]),
        Section(
            "Caveats and recommendations",
            [
                "Metrics stand on the labelled images only; `n` says how many. Slices with few labelled images are "
                "not checked for regressions (`[metrics] min_n`)."
            ],
        ),
    ]


# `edgemine train --finetune`: what each choice trained, in the card's words.
FINETUNED = {"head": "the classifier head only", "last": "the last blocks and the head", "all": "all layers"}


def model_details(version: str, baseline: str | None, facts: dict, row: dict | None, config: Config) -> Section:
    lines = [
        f"Model version **{version}**; previous version: {baseline or 'none (the first in the lake)'}.",
        f"Predictions from {facts['first']} to {facts['last']}: "
        f"{facts['predictions']:,} on {facts['images']:,} images; "
        f"first ingested {facts['ingested']}.",
        f"Card written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by {config.mining.user or 'unknown'}.",
    ]
    if row is None:
        lines.append(
            "Backbone and training run: not recorded in this lake (the version was not trained with `edgemine train`)."
        )
    else:
        record = json.loads(row["record"])
        finetune = record.get("finetune", "all")  # versions trained before the choice existed trained all
        finetuned = FINETUNED.get(finetune, finetune)
        lines += [
            f"Trained by `edgemine train`: {row['backbone']} from {row['base']}, fine-tuning {finetuned}, "
            f"classes {', '.join(row['classes'])}; "
            f"{row['epochs']} epochs, best epoch {row['best_epoch']} (validation accuracy {row['val_accuracy']:.3f}), "
            f"image size {record.get('image_size')}; by {row['created_by'] or 'unknown'} "
            f"at {row['created_at']:%Y-%m-%d %H:%M} UTC.",
            f"Stored at {row['path']} (checkpoint sha256 {row['checkpoint_sha256'][:12]}...); "
            f"hardware: {record.get('hardware')}.",
        ]
    return Section("Model details", lines)


def training_data(db: LakeDB, row: dict | None, before: datetime) -> Section:
    """What the version was trained on: from its `edgemine train` record (``row``, the models row:
    label batches, images per class) where there is one; else the label batches made before its
    first prediction."""
    if row is not None:
        data = json.loads(row["record"])["data"]
        batches = pa.table({"batch": list(data["label_batches"]), "labels": list(data["label_batches"].values())})
        classes = sorted(set(data["train_per_class"]) | set(data["val_per_class"]))
        counts = pa.table({"label": classes, "train": [data["train_per_class"].get(c, 0) for c in classes],
                           "validation": [data["val_per_class"].get(c, 0) for c in classes]})
        text = (
            f"{data['train_images']:,} training and {data['val_images']:,} validation images (split by image id hash, "
            f"stable across versions); {data['unreadable']} labelled images unreadable. The label batches it used, "
            "and images per class:"
        )
        if data.get("pseudo_labels"):
            text += f" Also pseudo-labels: {data['pseudo_labels']}."
        return Section("Training data", [text], [batches, counts])
    batches = db.query(
        "SELECT batch, count(DISTINCT image_id) AS images, count(*) AS labels, min(labelled_at) AS first, "
        "max(labelled_at) AS last FROM labels WHERE labelled_at < $t GROUP BY batch ORDER BY first",
        {"t": before},
    )
    classes = db.query("SELECT label, count(DISTINCT image_id) AS images FROM labels WHERE labelled_at < $t "
                       "GROUP BY label ORDER BY images DESC, label", {"t": before})
    text = ("Not trained by `edgemine train` (no record of its data): the label batches labelled before this version's "
            "predictions first came into the lake (those a training run could have used), and their classes.")
    return Section(
        "Training data",
        [text] if batches.num_rows else ["No labels before this version's predictions came into the lake."],
        [t for t in (batches, classes) if t.num_rows],
    )


def evaluation(db: LakeDB, version: str, baseline: str | None, config: Config) -> Section:
    """Headline metrics per slice, the previous version beside: from the metrics table, or computed now."""
    versions = [v for v in (baseline, version) if v]
    stored = db.query(f"SELECT model_version, slice, metric, label, value, n FROM metrics WHERE ({HEADLINE}) "
                      f"AND model_version IN (SELECT unnest($v))", {"v": versions})
    note = "From the metrics table (`edgemine metrics`)."
    if not stored.filter(pc.equal(stored.column("model_version"), version)).num_rows:
        from mining.evaluation.slices import all_slices

        try:
            rows = compute_metrics(db, all_slices(db, config.slices, max_values=config.metrics.auto_max_values),
                                   versions, config=config.metrics)
        except SliceError as e:
            return Section("Evaluation data and quantitative analyses", [f"Not evaluated: {e}"])
        stored = rows.filter(pc.is_in(rows.column("metric"), pa.array(["accuracy", "ece", "f1"])))
        stored = stored.filter(pc.or_(pc.not_equal(stored.column("metric"), "f1"),
                                              pc.equal(stored.column("label"), "macro")))
        note = "Computed when the card was written (not yet in the metrics table)."
    side = {}
    for r in stored.to_pylist():
        line = side.setdefault((r["slice"], r["metric"]), {"slice": r["slice"], "metric": r["metric"], "n": 0,
                                                           "previous": None, "this": None})
        line["this" if r["model_version"] == version else "previous"] = r["value"]
        if r["model_version"] == version:
            line["n"] = r["n"]
    rows = [r | {"change": None if r["this"] is None or r["previous"] is None else r["this"] - r["previous"]}
            for _, r in sorted(side.items())]
    table = pa.Table.from_pylist(rows) if rows else pa.table({"slice": pa.array([], pa.string())})
    return Section(
        "Evaluation data and quantitative analyses",
        [f"{note} `previous` is {baseline or 'none'}; `n`: labelled images of this version in the slice."],
        [table],
    )


def known_regressions(db: LakeDB, version: str) -> Section:
    alarms = db.query("SELECT slice, metric, label, baseline, baseline_value, value, ci_low, ci_high, n FROM alarms "
                      "WHERE model_version = $v ORDER BY drop DESC", {"v": version})
    if not alarms.num_rows:
        return Section(
            "Known regressions", ["None raised (`edgemine metrics` checks each version against the previous)."]
        )
    return Section("Known regressions", [f"{alarms.num_rows} regression alarm(s):"], [alarms])


def drift_at_release(db: LakeDB, first: datetime) -> Section:
    flagged = db.query(
        "SELECT window_start, feature, statistic, score, p_value, detail FROM drift "
        "WHERE flagged AND window_start <= $t ORDER BY window_start DESC, feature LIMIT 20",
        {"t": first},
    )
    if not flagged.num_rows:
        return Section("Drift at release", ["No drift flagged up to the version's first prediction "
                                            "(or `edgemine drift` has not run)."])
    return Section(
        "Drift at release", ["Drift flagged in the windows up to the version's first prediction:"], [flagged]
    )


def to_markdown(version: str, sections: list[Section]) -> str:
    out = [f"# Model card: {version}", ""]
    for s in sections:
        out += [f"## {s.title}", "", *(p + "\n" for p in s.paragraphs)]
        for t in s.tables:
            out += [_markdown_table(t), ""]
    return "\n".join(out)


def to_html(version: str, sections: list[Section]) -> str:
    body = [f"<h1>Model card: {html.escape(version)}</h1>"]
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        body += [f"<p>{html.escape(p)}</p>" for p in s.paragraphs]
        for t in s.tables:
            head = "".join(f"<th>{html.escape(n)}</th>" for n in t.column_names)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r.values()) + "</tr>"
                           for r in t.to_pylist())
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Model card: " + html.escape(version) +
            "</title></head><body>" + "\n".join(body) + "</body></html>\n")


def _markdown_table(t: pa.Table) -> str:
    lines = ["| " + " | ".join(t.column_names) + " |", "|" + "---|" * len(t.column_names)]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in r.values()) + " |" for r in t.to_pylist()]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_card(db: LakeDB, version: str, config: Config, output: str | None = None) -> str:
    """Write ``version``'s card to the lake (``_cards/<version>.md``) and, if given, to ``output``
    (``.md`` or ``.html``, local or s3://); returns the Markdown."""
    from mining.core.lake import is_s3, open_url

    sections = build_card(db, version, config)
    text = to_markdown(version, sections)
    db.lake.write_atomic(card_path(db, version), text.encode())
    if output:
        if not output.endswith((".md", ".html")):
            raise SliceError(f"--output {output}: give a file ending in .md or .html")
        fs, path = open_url(output, config.s3)
        if not is_s3(output):
            fs.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write((to_html(version, sections) if output.endswith(".html") else text).encode())
    return text


def read_card(db: LakeDB, version: str) -> str | None:
    """A version's stored card, or None."""
    try:
        return db.lake.fs.cat_file(card_path(db, version)).decode()
    except FileNotFoundError:
        return None
