"""`edgemine embed`: embeddings and thumbnails for the lake's images.

1. Plan: the images of this shard (``--shard I/N``, by image_id) that have no
   embedding for this backbone and weights yet, and did not fail before, in
   image_id order (one DuckDB query, streamed).
2. Read and decode in DataLoader workers (embed.reader), embed on the device
   (embed.model).
3. Publish per part of ``part_size`` images, while the next part is computed:
   its errors, then its thumbnails (for images that have none yet), then its
   embeddings, each one Delta transaction (mining.core.tables).

What is already embedded is what the lake says, so the same plan serves an
hourly run on a growing lake, a rerun after a kill, and N machines splitting
the work: shards are disjoint. The embeddings commit comes last and is what
makes an image done: a kill before it leaves the image to be embedded again,
and its thumbnail or error, already written, is not written twice (the plan
skips images that have one). With ``--overwrite`` the rows are merged on their
key instead of appended, replacing the old vectors.

Steps 2 and 3 run where the ``Runner`` says: ``local`` (this process, its DataLoader
workers) or ``ray`` (jobs.ray_runner: the same reader and model code as Ray Data stages
on a cluster; this process still plans and commits every part, so both write the same rows).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from embed.model import Backbone, load_backbone
from embed.preprocess import ImageError, ImageOptions, Thumbnail, decode_jpegs_on, make_thumbnails
from embed.reader import Item, LoadedBatch, ReaderSettings, Request, make_loader
from jobs.progress import Progress
from jobs.runners import Runner
from mining.core import tables
from mining.core.config import EmbedConfig
from mining.core.errors import ConfigError
from mining.core.lake import Lake
from mining.core.schema import EMBEDDINGS, ERRORS, THUMBNAILS, embedding_rows, error_rows
from mining.core.sql import LakeDB
from mining.core.summary import Summary

log = logging.getLogger(__name__)

JOB = "embed"
DECODE_MODES = ("auto", "workers", "device")
# Measured: on CPU, batches past 32 run slower per image (activations leave the cache);
# a GPU needs large batches to be kept busy.
DEFAULT_BATCH = {"cpu": 32, "cuda": 256}


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the images whose id, read as a number, is
    ``index`` modulo ``count``. Deterministic, so N processes need no coordination."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if not match or not 0 <= int(match[1]) < int(match[2]):
            raise ConfigError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def sql(self) -> str:
        return f"('0x' || substr(image_id, 1, 8))::UBIGINT % {self.count} = {self.index}"


@dataclass
class EmbedSummary(Summary):
    job: str = JOB
    backbone: str = ""
    weights: str = ""
    device: str = ""
    decode: str = ""
    shard: str = "0/1"
    runner: str = "local"
    images_in_shard: int = 0
    already_embedded: int = 0
    failed_before: int = 0
    to_embed: int = 0
    embedded: int = 0
    thumbnails: int = 0
    parts: int = 0
    images_per_second: float = 0.0


def embed_lake(
    lake: Lake,
    config: EmbedConfig = EmbedConfig(),
    *,
    shard: Shard = Shard(),
    overwrite: bool = False,
    retry_errors: bool = False,
    backbone: Backbone | None = None,
    show_progress: bool = True,
    runner: Runner = Runner(),
) -> EmbedSummary:
    """Embed the lake's images that still need it (all of the shard's with
    ``overwrite``); ``retry_errors`` tries again those that failed before.
    ``backbone`` reuses an already loaded model (it must match ``config``);
    ``runner``: where the pipeline runs (local, or a Ray cluster)."""
    started = time.monotonic()
    if config.decode not in DECODE_MODES:
        raise ConfigError(f"unknown decode mode {config.decode!r}; allowed: {', '.join(DECODE_MODES)}")
    runner.connect()
    load_model = functools.partial(load_backbone, config.backbone, config.weights, seed=config.seed)
    backbone = backbone or load_model(device=runner.model_device or config.device)
    log.info("embedding with %s, weights %s: %d-d vectors, %dx%d input, on %s", backbone.name, backbone.weights,
             backbone.width, backbone.preprocessing.crop, backbone.preprocessing.crop, backbone.device)
    on_device = config.decode == "device" or (config.decode == "auto" and backbone.uses_cuda)
    summary = EmbedSummary(
        backbone=backbone.name,
        weights=backbone.weights,
        device=str(backbone.device),
        decode="device" if on_device else "workers",
        shard=str(shard),
        runner=runner.kind,
    )
    prefix = f"{_slug(backbone.name + '-' + backbone.weights)}-s{shard.index}of{shard.count}-"

    with Plan(lake, backbone, shard, overwrite=overwrite, retry_errors=retry_errors) as plan:
        marker = {"backbone": backbone.name, "weights": backbone.weights, "shard": str(shard)}
        run_plan(lake, plan, backbone, config, summary, prefix, lambda part: part.publish(lake, marker, overwrite),
                 on_device=on_device, show_progress=show_progress, runner=runner, load_model=load_model)
    summary.seconds = time.monotonic() - started
    summary.images_per_second = (summary.embedded + summary.errors) / summary.seconds if summary.seconds else 0.0
    return summary


def run_plan(lake: Lake, plan: Plan, backbone: Backbone, config: EmbedConfig, summary: EmbedSummary, prefix: str,
             publish: Callable[[Part], None], *, on_device: bool, show_progress: bool, label: str = "embed",
             runner: Runner = Runner(), load_model: Callable[..., Backbone] | None = None) -> None:
    """The pipeline both `edgemine embed` and `edgemine score` run: the plan's images read in
    workers, through the model, published part by part with ``publish``. Fills the summary's counts.
    On Ray, ``load_model(device=...)`` builds each actor's copy of ``backbone`` (it must pickle)."""
    summary.images_in_shard, summary.already_embedded, summary.failed_before, summary.to_embed = plan.counts()
    if not summary.to_embed:
        return
    progress = Progress(label, total=summary.to_embed, unit="images", enabled=show_progress)
    try:
        if runner.kind == "ray":
            from jobs import ray_runner

            ray_runner.run_plan_on_ray(lake, functools.partial(plan.requests, prefix, config.part_size), backbone,
                                       load_model, config, summary, progress, publish)
        else:
            batch_size = config.batch_size or DEFAULT_BATCH[backbone.device.type]
            _run_locally(lake, plan.requests(prefix, config.part_size, batch_size), backbone, config, summary, progress,
                         publish, on_device=on_device)
    finally:
        progress.close()


def _run_locally(lake: Lake, requests: Iterator[Request], backbone: Backbone, config: EmbedConfig,
                 summary: EmbedSummary, progress: Progress, publish: Callable[[Part], None], *,
                 on_device: bool) -> None:
    settings = reader_settings(lake, backbone, config, on_device=on_device)
    workers = config.workers or os.cpu_count() or 1
    loader = make_loader(requests, settings, workers=workers, pin_memory=backbone.uses_cuda,
                         not_forked=lake.protocol == "s3")
    _run(backbone, loader, settings.options, summary, progress, publish)


def reader_settings(lake: Lake, backbone: Backbone, config: EmbedConfig, *, on_device: bool) -> ReaderSettings:
    """What the reading workers need: storage credentials, the backbone's input, the thumbnail size."""
    options = ImageOptions(backbone.preprocessing, config.max_pixels, config.thumbnail_size, config.thumbnail_quality)
    return ReaderSettings(s3=lake.s3, options=options, decode_on_device=on_device)


def _run(backbone: Backbone, loader, options: ImageOptions, summary: EmbedSummary, progress: Progress,
         publish: Callable[[Part], None]) -> None:
    """The loop: batches in, parts out."""
    part: Part | None = None
    with Publisher(publish, summary) as publisher:
        for batch in loader:
            if part is None:
                part = Part(batch.request.part, backbone.width)
            part.add(embed_batch(backbone, batch, options))
            progress.update(len(batch.request.items))
            if batch.request.last_in_part:
                publisher.submit(part)
                part = None


class Publisher:
    """Publishes whole parts in a background thread, one at a time, so the model keeps going
    while a part is committed; counts each part into the summary. A failed commit is raised
    at the next ``submit`` or on leaving the ``with``."""

    def __init__(self, publish: Callable[[Part], None], summary: EmbedSummary):
        self.publish, self.summary = publish, summary
        self.pending: Future | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")

    def submit(self, part: Part) -> None:
        self.wait()  # at most one part in memory waiting to be written
        self.pending = self.executor.submit(self.publish, part)
        self.summary.embedded += len(part.ids)
        self.summary.thumbnails += len(part.thumbnails)
        self.summary.add_errors(part.errors)
        self.summary.parts += 1

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self.wait()
        finally:
            self.executor.shutdown(wait=True)


@dataclass
class Embedded:
    """One batch's results, in the order the Part gathers them."""

    items: list[Item]
    vectors: np.ndarray  # float32 (len(items), the backbone's width), unit rows
    thumbnails: list[Thumbnail]
    errors: list[tuple[Item, str]]
    scores: list[np.ndarray] = field(default_factory=list)  # a classifier's: float32 (len(items), classes)


def embed_batch(backbone: Backbone, batch: LoadedBatch, options: ImageOptions) -> Embedded:
    """Embed the images the workers decoded, and those they left for the device to decode."""
    out = Embedded(list(batch.decoded), np.zeros((0, backbone.width), np.float32), list(batch.thumbnails),
                   list(batch.errors))
    vectors = []
    if batch.pixels is not None:
        _add(out, vectors, backbone.embed_and_classify(batch.pixels))
    decoded, prepared = [], []
    for item, result in zip(batch.jpeg_items, decode_jpegs_on(backbone.device, batch.jpegs, options)):
        if isinstance(result, ImageError):
            out.errors.append((item, result.reason))
        else:
            decoded.append(item)
            prepared.append(result)
    if prepared:
        _add(out, vectors, backbone.embed_and_classify(torch.stack([p.pixels for p in prepared])))
        out.thumbnails += make_thumbnails(decoded, prepared, options.thumbnail_quality)
        out.items += decoded
    if vectors:
        out.vectors = np.concatenate(vectors)
    return out


def _add(out: Embedded, vectors: list[np.ndarray], result: tuple[np.ndarray, np.ndarray | None]) -> None:
    vectors.append(result[0])
    if result[1] is not None:
        out.scores.append(result[1])


class Part:
    """The rows of one part, gathered until its last batch, then published whole; ``width``:
    the backbone's, the width every vector of the part must have."""

    def __init__(self, name: str, width: int):
        self.name = name
        self.width = width
        self.ids: list[str] = []
        self.uris: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.thumbnails: list[Thumbnail] = []
        self.errors: list[dict[str, Any]] = []

    def add(self, embedded: Embedded) -> None:
        self.ids += [item.image_id for item in embedded.items]
        self.uris += [item.uri for item in embedded.items]
        self.vectors.append(embedded.vectors)
        self.scores += embedded.scores
        self.thumbnails += embedded.thumbnails
        for item, reason in embedded.errors:
            self.errors.append({"uri": item.uri, "reason": reason, "raw": json.dumps({"image_id": item.image_id})})

    def publish(self, lake: Lake, marker: dict[str, Any], overwrite: bool) -> None:
        """Errors, thumbnails, then embeddings: the last commit is what marks these images done."""
        now = datetime.now(UTC)
        info = tables.commit_info(JOB, part=self.name, **marker)
        self.publish_errors_and_thumbnails(lake, JOB, f"{marker['backbone']}/{marker['weights']}", info, overwrite, now)
        write = tables.upsert if overwrite else tables.append
        write(lake, EMBEDDINGS, self.embedding_rows(marker["backbone"], marker["weights"], now), info)

    def publish_errors_and_thumbnails(self, lake: Lake, job: str, source: str, info: dict[str, str], overwrite: bool,
                                      now: datetime) -> None:
        tables.append(lake, ERRORS, error_rows(job, [{"source": source, **e} for e in self.errors], now), info)
        write = tables.upsert if overwrite else tables.append
        rows = [{**t.__dict__, "computed_at": now} for t in self.thumbnails]
        write(lake, THUMBNAILS, pa.Table.from_pylist(rows, schema=THUMBNAILS.schema), info)

    def embedding_rows(self, backbone: str, weights: str, now: datetime) -> pa.Table:
        vectors = np.concatenate(self.vectors) if self.vectors else np.zeros((0, self.width), np.float32)
        return embedding_rows(self.ids, backbone, weights, vectors, now, width=self.width)


class Plan:
    """Which images this run embeds, from one query over the lake."""

    def __init__(self, lake: Lake, backbone: Backbone, shard: Shard, *, overwrite: bool, retry_errors: bool,
                 done: str | None = None, job: str = JOB, source: str | None = None, selected: pa.Table | None = None):
        """``done``: SQL saying an image needs no work (default: it has an embedding of this
        backbone and weights); ``job``, ``source``: whose errors mean "failed before";
        ``selected``: an Arrow table of the only image_ids to consider (``--where``)."""
        self.db = LakeDB(lake, read_only=False)
        source = source or f"{backbone.name}/{backbone.weights}"
        self.params = {"model": source, "job": job}
        self.shard, self.overwrite, self.retry_errors = shard, overwrite, retry_errors
        if done is None:
            done = "image_id IN (SELECT image_id FROM embeddings WHERE backbone = $backbone AND weights = $weights)"
            self.params |= {"backbone": backbone.name, "weights": backbone.weights}
        only = ""
        if selected is not None:
            self.db.con.register("selected_ids", selected)
            only = "AND image_id IN (SELECT image_id FROM selected_ids)"
        self.db.con.execute(
            f"""
            CREATE TEMP TABLE shard_images AS
            SELECT image_id, uri, sha256,
                   {done} AS embedded,
                   uri IN (SELECT uri FROM errors WHERE job = $job AND source = $model) AS failed,
                   image_id IN (SELECT image_id FROM thumbnails) AS has_thumbnail
            FROM images WHERE {shard.sql()} {only}
            """,
            self.params,
        )

    def _todo_filter(self) -> str:
        conditions = ["TRUE"]
        if not self.overwrite:
            conditions.append("NOT embedded")
        if not self.retry_errors:
            conditions.append("NOT failed")
        return " AND ".join(conditions)

    def counts(self) -> tuple[int, int, int, int]:
        """(images in shard, already embedded, failed before, to embed now)."""
        row = self.db.con.execute(
            f"SELECT count(*), count(*) FILTER (embedded), count(*) FILTER (failed AND NOT embedded), "
            f"count(*) FILTER ({self._todo_filter()}) FROM shard_images"
        ).fetchone()
        return tuple(int(v) for v in row)

    def requests(self, prefix: str, part_size: int, batch_size: int) -> Iterator[Request]:
        """Batches of images to read, grouped in parts named after their contents,
        so a rerun of the same plan gets the same part names."""
        reader = self.db.con.execute(
            f"SELECT image_id, uri, sha256, {'TRUE' if self.overwrite else 'NOT has_thumbnail'} AS needs_thumbnail "
            f"FROM shard_images WHERE {self._todo_filter()} ORDER BY image_id"
        ).to_arrow_reader(part_size)
        for items in _rechunk(reader, part_size):
            name = prefix + hashlib.sha1("\n".join(item.image_id for item in items).encode()).hexdigest()[:16]
            for start in range(0, len(items), batch_size):
                chunk = tuple(items[start : start + batch_size])
                yield Request(part=name, last_in_part=start + batch_size >= len(items), items=chunk)

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc) -> None:
        self.db.con.close()


def _rechunk(reader: pa.RecordBatchReader, size: int) -> Iterator[list[Item]]:
    items: list[Item] = []
    for batch in reader:
        for row in batch.to_pylist():
            items.append(Item(row["image_id"], row["uri"], row["sha256"], bool(row["needs_thumbnail"])))
            if len(items) == size:
                yield items
                items = []
    if items:
        yield items


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
