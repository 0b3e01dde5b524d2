"""`edgemine demo`: build the demo lake end to end from synthetic data.

1. Draw the images and the production model's predictions (jobs.demo_data)
   into ``<lake>/sources/demo``: JPEGs, JSONL prediction files with a few bad
   rows and one corrupt image among them, as real inputs have.
2. Register the images and ingest the predictions with the ordinary jobs.
3. Write the hidden ground truth to ``demo_truth``.
4. Embed the images (jobs.embed_images) with ``[embed] backbone`` and ``demo.weights``:
   seeded random ResNet18 by default (fast: the tests); configs/demo.toml (`make demo`)
   chooses EfficientNet-Lite0 with its ImageNet weights, real similarity offline.
5. Build the vector index (mining.search.index_sync), so `similar` and `narrow` answer at once.
6. Unless ``demo.round`` is off (`--no-round`), bring back one simulated labelling round
   (``run_round``): labels from the hidden truth for a seeded quarter of the images and
   half of the edge cases, written as a Label Studio export and imported as any export
   is; then two review queues, metrics per slice (and regression alarms) and drift,
   all through the library, so every page of the UI shows what it is for.

Every step is idempotent, so running the demo again is quick and changes nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import posixpath
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import mining
from jobs import demo_data
from jobs.embed_images import EmbedSummary, embed_lake
from jobs.ingest_files import IngestSummary
from jobs.ingest_images import ImagesSummary, ingest_images
from jobs.ingest_predictions import JOB as INGEST_PREDICTIONS
from jobs.ingest_predictions import ingest_predictions
from jobs.progress import Progress
from mining.core import tables
from mining.core.config import Config, DemoConfig, S3Config
from mining.core.errors import ConfigError
from mining.core.lake import SOURCES_DIR, Lake, as_uri, open_url
from mining.core.schema import DEMO_TRUTH, image_id_from_bytes
from mining.core.sql import LakeDB
from mining.core.summary import Summary
from mining.evaluation import drift, metrics
from mining.search.index import VectorIndex
from mining.search.index_sync import IndexSummary, index_lake

log = logging.getLogger(__name__)

JOB = "demo"
ROWS_PER_FILE = 10_000
RENDER_CHUNK = 250
BAD_ROW_EVERY = 500  # one malformed prediction line per this many images
CORRUPT_IMAGE = "images/corrupt-0000.jpg"

# The simulated labelling round (run_round).
ROUND_BATCH = "demo-round-1"
ROUND_ANNOTATOR = "demo-truth"
ROUND_SHARE = 0.25  # of the ordinary images, labelled
ROUND_EDGE_SHARE = 0.5  # of the edge cases, labelled (a round holds some: reviewers noticed them)
ROUND_MIN_IMAGES = 20  # below this a round's queues, metrics and drift mean nothing (and may find nothing)
ROUND_STREAM = 2**40  # the round's random stream, beside the scenes' (seed, index) streams
# The round's review queues: name -> sampler (least confident; farthest from what was labelled).
ROUND_QUEUES = {"demo-least-confidence": "least-confidence", "demo-novelty": "novelty"}


@dataclass
class RoundSummary(Summary):
    """What the labelling round added to the lake this run (a rerun adds nothing):
    ``labels`` rows (``labels_already``: there before), ``queues`` made (name -> images),
    ``metrics`` and ``alarms`` rows, ``drift`` rows (``drift_flagged`` of them flagged);
    ``skipped``: why the round did not run, if it did not."""

    job: str = "demo-round"
    batch: str = ROUND_BATCH
    labels: int = 0
    labels_already: int = 0
    queues: dict[str, int] = field(default_factory=dict)
    metrics: int = 0
    alarms: int = 0
    drift: int = 0
    drift_flagged: int = 0
    skipped: str | None = None


@dataclass
class DemoSummary(Summary):
    """The demo's steps, each with its own job's summary; ``errors`` counts every
    refused input of all of them (the demo's bad rows and corrupt image included)."""

    job: str = JOB
    lake: str = ""
    source: str = ""
    generated: bool = False
    images: ImagesSummary = field(default_factory=ImagesSummary)
    predictions: IngestSummary = field(default_factory=lambda: IngestSummary(job=INGEST_PREDICTIONS))
    demo_truth: int = 0
    embeddings: EmbedSummary = field(default_factory=EmbedSummary)
    index: IndexSummary = field(default_factory=IndexSummary)
    round: RoundSummary = field(default_factory=RoundSummary)


def run_demo(config: Config, *, show_progress: bool = True) -> DemoSummary:
    lake = Lake.from_config(config)
    started = time.monotonic()
    source = generate_source(lake, config.demo, show_progress=show_progress)
    summary = DemoSummary(lake=lake.uri, source=source["uri"], generated=source["generated"])
    summary.images = ingest_images(lake, source["uri"], config.ingest, show_progress=show_progress)
    summary.predictions = ingest_predictions(
        lake, [posixpath.join(source["uri"], "predictions-*.jsonl")], config.ingest, show_progress=show_progress
    )
    truth = write_truth(lake, source)
    summary.demo_truth = truth.num_rows
    embed_config = replace(config.embed, weights=config.demo.weights)
    summary.embeddings = embed_lake(lake, embed_config, show_progress=show_progress)
    with LakeDB(lake) as db:
        index, summary.index = index_lake(db, config.index, backbone=embed_config.backbone,
                                          weights=summary.embeddings.weights)
    summary.round = run_round(lake, config, source, truth, index)
    summary.errors = (summary.images.errors + summary.predictions.errors + summary.embeddings.errors
                      + summary.round.errors)
    summary.seconds = time.monotonic() - started
    return summary


def generate_source(lake: Lake, demo: DemoConfig, *, show_progress: bool = True) -> dict[str, Any]:
    """Write the demo inputs under <lake>/sources/demo, unless already there for the same settings."""
    if demo.kind not in demo_data.EDGE_KINDS:
        raise ConfigError(f"unknown demo kind {demo.kind!r}; choose one of: {', '.join(demo_data.EDGE_KINDS)}")
    root = lake.path(SOURCES_DIR, "demo")
    uri = lake.url(root)
    success = posixpath.join(root, "_SUCCESS.json")
    params = asdict(demo) | {"workers": None}
    del params["round"]  # what is done after the lake is built: the same inputs either way
    if demo.kind == "glare":  # the kind the demo always had: a source written before kinds existed is the same
        del params["kind"]
    if lake.fs.exists(success):
        with lake.fs.open(success, "r") as f:
            if json.load(f).get("params") == params:
                return {"uri": uri, "root": root, "generated": False}
        lake.fs.rm(root, recursive=True)  # other settings: start over rather than mix two data sets
    if lake.protocol == "file":
        lake.fs.makedirs(posixpath.join(root, "images"), exist_ok=True)

    progress = Progress("demo images", total=demo.images, unit="images", enabled=show_progress)
    records: list[dict] = []
    lines: list[str] = []
    for chunk in _render_all(lake, root, demo):
        for record in chunk:
            records.append(record["truth"])
            lines.append(json.dumps(record["prediction"]))
            if record["truth"]["index"] % BAD_ROW_EVERY == BAD_ROW_EVERY // 2:
                lines.append(_bad_line(record["truth"]["index"], record["prediction"]))
        progress.update(len(chunk))
    progress.close()

    with lake.fs.open(posixpath.join(root, CORRUPT_IMAGE), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00 this JPEG was cut off in transfer")
    for k, start in enumerate(range(0, len(lines), ROWS_PER_FILE)):
        with lake.fs.open(posixpath.join(root, f"predictions-{k:03d}.jsonl"), "w") as f:
            f.write("\n".join(lines[start : start + ROWS_PER_FILE]) + "\n")
    truth = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "index"} for r in records])
    with lake.fs.open(posixpath.join(root, "truth.parquet"), "wb") as f:
        pq.write_table(truth, f)
    lake.write_atomic(
        success, json.dumps({"params": params, "images": demo.images, "at": datetime.now(UTC).isoformat()}).encode()
    )
    return {"uri": uri, "root": root, "generated": True}


def write_truth(lake: Lake, source: dict[str, Any]) -> pa.Table:
    with lake.fs.open(posixpath.join(source["root"], "truth.parquet"), "rb") as f:
        truth = pq.read_table(f)
    if "edge_kind" not in truth.column_names:  # written before kinds existed: every edge case is glare
        kind = pc.if_else(truth.column("is_edge_case"), pa.scalar("glare"), pa.scalar(None, pa.string()))
        truth = truth.append_column("edge_kind", kind)
    at = pa.array([datetime.now(UTC)] * truth.num_rows, DEMO_TRUTH.schema.field("ingested_at").type)
    truth = truth.append_column("ingested_at", at).select(DEMO_TRUTH.schema.names).cast(DEMO_TRUTH.schema)
    tables.overwrite(lake, DEMO_TRUTH, truth, tables.commit_info(JOB, source=source["uri"]))
    return truth


def run_round(lake: Lake, config: Config, source: dict[str, Any], truth: pa.Table, index: VectorIndex) -> RoundSummary:
    """One simulated labelling round, then what a team does with it: labels from the truth
    (imported from a Label Studio export, as a real round's are), the review queues of
    ROUND_QUEUES, metrics per slice with regression alarms, and drift over time.

    Exactly once: the import adds only labels the lake lacks; a queue is made only under
    a name the lake lacks; metrics are computed when labels came in now or none are stored;
    drift when none is stored. So a rerun adds nothing."""
    started = time.monotonic()
    summary = RoundSummary()
    if not config.demo.round:
        summary.skipped = "off (demo.round = false, or --no-round)"
        return summary
    if truth.num_rows < ROUND_MIN_IMAGES:
        summary.skipped = f"{truth.num_rows} images: a labelling round needs at least {ROUND_MIN_IMAGES}"
        log.info("demo: no labelling round: %s", summary.skipped)
        return summary
    tasks = round_tasks(truth, config.demo.seed)
    path = posixpath.join(source["root"], "labels", f"{ROUND_BATCH}.json")
    lake.write_atomic(path, json.dumps(tasks, indent=1).encode())
    with LakeDB(lake, config=config) as db:
        # The truth holds classes the production model lacks (the unseen_class kind's horse).
        imported = mining.import_labels(db, lake.url(path), fmt="label-studio", allow_new_classes=True, config=config)
        summary.labels, summary.labels_already = imported.imported, imported.already
        summary.errors, summary.error_samples = imported.errors, imported.error_samples
        made = set(mining.list_queues(db).column("queue").to_pylist())
        for name, sampler in ROUND_QUEUES.items():
            if name not in made:
                summary.queues[name] = mining.make_queue(db, sampler, name, index=index, config=config).images
        if summary.labels or not metrics.stored_metrics(db).num_rows:
            summary.metrics = mining.compute_metrics(db, config=config).num_rows
            summary.alarms = len(mining.check_regressions(db, config=config).alarms)
        if not drift.stored_drift(db).num_rows:
            rows = mining.detect_drift(db, config=config)
            summary.drift, summary.drift_flagged = rows.num_rows, sum(rows.column("flagged").to_pylist())
    summary.seconds = time.monotonic() - started
    return summary


def round_tasks(truth: pa.Table, seed: int) -> list[dict[str, Any]]:
    """The round's labels as Label Studio's JSON export gives them back: one task per image
    (a seeded ROUND_SHARE of the ordinary images, ROUND_EDGE_SHARE of the edge cases, at
    least one of each there is), its true label as the ``class`` choice of ROUND_ANNOTATOR."""
    rows = sorted(truth.select(["image_id", "uri", "true_label", "is_edge_case"]).to_pylist(),
                  key=lambda r: r["image_id"])
    rng = np.random.default_rng((seed, ROUND_STREAM))
    chosen = []
    for edge, share in ((False, ROUND_SHARE), (True, ROUND_EDGE_SHARE)):
        group = [r for r in rows if bool(r["is_edge_case"]) == edge]
        if group:
            take = max(1, round(share * len(group)))
            chosen += [group[k] for k in sorted(rng.choice(len(group), take, replace=False))]
    done = (demo_data.START + timedelta(days=demo_data.DAYS)).isoformat().replace("+00:00", "Z")
    return [{
        "id": k,
        "data": {"image": r["uri"], "edgemine_image_id": r["image_id"], "edgemine_batch": ROUND_BATCH},
        "annotations": [{"completed_by": {"email": ROUND_ANNOTATOR}, "updated_at": done, "result": [
            {"from_name": "class", "to_name": "image", "type": "choices", "value": {"choices": [r["true_label"]]}},
        ]}],
    } for k, r in enumerate(sorted(chosen, key=lambda r: r["image_id"]), start=1)]


def _render_all(lake: Lake, root: str, demo: DemoConfig) -> Iterator[list[dict]]:
    ranges = [(s, min(s + RENDER_CHUNK, demo.images)) for s in range(0, demo.images, RENDER_CHUNK)]
    work = functools.partial(_render_range, lake.uri, lake.s3, root, demo)
    workers = demo.workers or os.cpu_count() or 1
    if workers == 1 or len(ranges) == 1:
        yield from map(work, ranges)
        return
    # spawn, not fork: s3fs keeps an event loop thread that a fork would copy half-alive.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(work, ranges)


def _render_range(lake_uri: str, s3: S3Config, root: str, demo: DemoConfig, bounds: tuple[int, int]) -> list[dict]:
    fs, _ = open_url(lake_uri, s3)
    out = []
    for index in range(*bounds):
        rng = demo_data.scene_rng(demo.seed, index)
        scene = demo_data.sample_scene(rng, index, demo.width, demo.height, demo.edge_case_rate, demo.kind)
        data = demo_data.encode_jpeg(demo_data.draw_scene(scene, rng, demo.width, demo.height))
        name = f"images/{index:06d}.jpg"
        with fs.open(posixpath.join(root, name), "wb") as f:
            f.write(data)
        uri = as_uri(posixpath.join(root, name), like=lake_uri)
        prediction = {"image_uri": name, **demo_data.simulate_prediction(scene, rng)}
        truth = {
            "index": index,
            "image_id": image_id_from_bytes(data),
            "uri": uri,
            "true_label": scene.true_label,
            "object_size": scene.size,
            "time_of_day": scene.time_of_day,
            "weather": scene.weather,
            "glare": scene.glare,
            "camera": scene.camera,
            "is_edge_case": scene.is_edge_case,
            "edge_kind": scene.edge_kind,
        }
        out.append({"truth": truth, "prediction": prediction})
    return out


def _bad_line(index: int, prediction: dict) -> str:
    """One of the ways real prediction files go wrong, in turn."""
    kind = (index // BAD_ROW_EVERY) % 4
    if kind == 0:
        return json.dumps(prediction | {"confidence": 1.7, "ts": "2026-10-02T10:00:00Z"})
    if kind == 1:
        return json.dumps(prediction | {"ts": "yesterday"})
    if kind == 2:
        return json.dumps(prediction | {"image_uri": f"images/missing-{index:06d}.jpg"})
    return json.dumps(prediction)[: -len("}") - 12]  # cut off mid-object
