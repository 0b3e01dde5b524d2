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

Every step is idempotent, so running the demo again is quick and changes nothing.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import posixpath
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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
from mining.search.index_sync import IndexSummary, index_lake

JOB = "demo"
ROWS_PER_FILE = 10_000
RENDER_CHUNK = 250
BAD_ROW_EVERY = 500  # one malformed prediction line per this many images
CORRUPT_IMAGE = "images/corrupt-0000.jpg"


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


def run_demo(config: Config, *, show_progress: bool = True) -> DemoSummary:
    lake = Lake.from_config(config)
    started = time.monotonic()
    source = generate_source(lake, config.demo, show_progress=show_progress)
    summary = DemoSummary(lake=lake.uri, source=source["uri"], generated=source["generated"])
    summary.images = ingest_images(lake, source["uri"], config.ingest, show_progress=show_progress)
    summary.predictions = ingest_predictions(
        lake, [posixpath.join(source["uri"], "predictions-*.jsonl")], config.ingest, show_progress=show_progress
    )
    summary.demo_truth = write_truth(lake, source)
    embed_config = replace(config.embed, weights=config.demo.weights)
    summary.embeddings = embed_lake(lake, embed_config, show_progress=show_progress)
    with LakeDB(lake) as db:
        _, summary.index = index_lake(db, config.index, backbone=embed_config.backbone,
                                      weights=summary.embeddings.weights)
    summary.errors = summary.images.errors + summary.predictions.errors + summary.embeddings.errors
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
    lake.write_atomic(success, json.dumps({"params": params, "images": demo.images, "at": datetime.now(UTC).isoformat()}).encode())
    return {"uri": uri, "root": root, "generated": True}


def write_truth(lake: Lake, source: dict[str, Any]) -> int:
    with lake.fs.open(posixpath.join(source["root"], "truth.parquet"), "rb") as f:
        truth = pq.read_table(f)
    if "edge_kind" not in truth.column_names:  # written before kinds existed: every edge case is glare
        kind = pc.if_else(truth.column("is_edge_case"), pa.scalar("glare"), pa.scalar(None, pa.string()))
        truth = truth.append_column("edge_kind", kind)
    at = pa.array([datetime.now(UTC)] * truth.num_rows, DEMO_TRUTH.schema.field("ingested_at").type)
    truth = truth.append_column("ingested_at", at).select(DEMO_TRUTH.schema.names).cast(DEMO_TRUTH.schema)
    tables.overwrite(lake, DEMO_TRUTH, truth, tables.commit_info(JOB, source=source["uri"]))
    return truth.num_rows


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
