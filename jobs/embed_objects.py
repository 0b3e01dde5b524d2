"""`edgemine embed --objects`: an embedding per detection box, beside the image embeddings.

1. Plan: the detections of the newest prediction of each image of this shard
   (``--shard I/N``, by image_id, as `edgemine embed`), at most ``[objects] max_per_image``
   per image, the highest scores first, that have no object embedding for this backbone and
   weights yet and did not fail before (one DuckDB query).
2. Read each image once in DataLoader workers, cut its boxes (embed.crops: clipped, padded,
   squared, the backbone's preprocessing upsampling small ones), embed the crops.
3. Publish per part of about ``[embed] part_size`` boxes: its errors (a box that is no box,
   an image that cannot be read: one row per detection), then its ``object_embeddings``,
   each one Delta transaction. The embeddings commit is what makes a box done, so a kill
   and a rerun embed the rest and write nothing twice; part names come from their
   contents, so a rerun of the same plan makes the same parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from embed.crops import CropBatch, CropBatches, CropOptions, ImageBoxes
from embed.model import Backbone, load_backbone
from embed.reader import ReaderSettings, Request, make_loader
from jobs.embed_images import DEFAULT_BATCH, Publisher, Shard, _slug
from jobs.progress import Progress
from mining.core import tables
from mining.core.config import EmbedConfig, ObjectsConfig
from mining.core.errors import ConfigError
from mining.core.lake import Lake
from mining.core.schema import ERRORS, OBJECT_EMBEDDINGS, embedding_rows, error_rows, make_rows
from mining.core.sql import LakeDB
from mining.core.summary import Summary

log = logging.getLogger(__name__)

JOB = "embed-objects"


@dataclass
class ObjectEmbedSummary(Summary):
    job: str = JOB
    backbone: str = ""
    weights: str = ""
    device: str = ""
    shard: str = "0/1"
    detections: int = 0  # of the newest prediction per image of the shard
    over_bound: int = 0  # past [objects] max_per_image: not embedded
    already_embedded: int = 0
    failed_before: int = 0
    to_embed: int = 0
    embedded: int = 0
    parts: int = 0
    thumbnails: int = 0  # always 0: Publisher's count; object crops have no thumbnails
    objects_per_second: float = 0.0


def embed_objects(lake: Lake, config: EmbedConfig = EmbedConfig(), objects: ObjectsConfig = ObjectsConfig(), *,
                  shard: Shard = Shard(), overwrite: bool = False, retry_errors: bool = False,
                  backbone: Backbone | None = None, show_progress: bool = True) -> ObjectEmbedSummary:
    """Embed the detection boxes that still need it (see the module docstring); ``backbone``
    reuses a loaded model (it must match ``config``). Returns what was done.

    Raises:
        ConfigError: bad [objects] settings (padding, max_per_image, min_side)."""
    started = time.monotonic()
    if objects.max_per_image < 1:
        raise ConfigError(f"[objects] max_per_image must be at least 1, got {objects.max_per_image}")
    backbone = backbone or load_backbone(config.backbone, config.weights, seed=config.seed, device=config.device)
    options = CropOptions(backbone.preprocessing, objects.padding, objects.min_side, config.max_pixels)
    summary = ObjectEmbedSummary(backbone=backbone.name, weights=backbone.weights, device=str(backbone.device),
                                 shard=str(shard))
    prefix = f"objects-{_slug(backbone.name + '-' + backbone.weights)}-s{shard.index}of{shard.count}-"
    with ObjectPlan(lake, backbone, shard, objects.max_per_image, overwrite=overwrite,
                    retry_errors=retry_errors) as plan:
        (summary.detections, summary.over_bound, summary.already_embedded, summary.failed_before,
         summary.to_embed) = plan.counts()
        if summary.to_embed:
            batch_size = config.batch_size or DEFAULT_BATCH[backbone.device.type]
            marker = {"backbone": backbone.name, "weights": backbone.weights, "shard": str(shard)}
            _run(lake, plan.requests(prefix, config.part_size, batch_size), backbone, options, config, summary,
                 lambda part: part.publish(lake, marker, overwrite), show_progress)
    summary.seconds = time.monotonic() - started
    done = summary.embedded + summary.errors
    summary.objects_per_second = done / summary.seconds if summary.seconds else 0.0
    return summary


def _run(lake: Lake, requests: Iterator[Request], backbone: Backbone, options: CropOptions, config: EmbedConfig,
         summary: ObjectEmbedSummary, publish, show_progress: bool) -> None:
    settings = ReaderSettings(s3=lake.s3, options=options, decode_on_device=False)  # type: ignore[arg-type]
    workers = config.workers or os.cpu_count() or 1
    loader = make_loader(requests, settings, workers=workers, pin_memory=backbone.uses_cuda,
                         not_forked=lake.protocol == "s3", dataset=CropBatches(settings))
    progress = Progress("embed objects", total=summary.to_embed, unit="boxes", enabled=show_progress)
    part: ObjectPart | None = None
    try:
        with Publisher(publish, summary) as publisher:  # type: ignore[arg-type]
            for batch in loader:
                part = part or ObjectPart(batch.request.part, backbone.width)
                part.add(batch, backbone.embed(batch.pixels) if batch.pixels is not None else None)
                progress.update(sum(len(item.detection_ids) for item in batch.request.items))
                if batch.request.last_in_part:
                    publisher.submit(part)  # type: ignore[arg-type]
                    part = None
    finally:
        progress.close()


class ObjectPart:
    """The rows of one part, gathered until its last batch, then published whole. ``ids`` and
    ``thumbnails`` are what Publisher counts."""

    def __init__(self, name: str, width: int):
        self.name, self.width = name, width
        self.ids: list[str] = []
        self.image_ids: list[str] = []
        self.boxes: list[tuple[float, ...]] = []
        self.vectors: list[np.ndarray] = []
        self.errors: list[dict[str, Any]] = []
        self.thumbnails: list = []

    def add(self, batch: CropBatch, vectors: np.ndarray | None) -> None:
        self.ids += batch.detection_ids
        self.image_ids += batch.image_ids
        self.boxes += batch.boxes
        if vectors is not None:
            self.vectors.append(vectors)
        for item, detection_id, reason in batch.errors:
            box = item.boxes[item.detection_ids.index(detection_id)]
            # As valid JSON: a NaN or infinite coordinate as its text.
            box = None if box is None else [v if v is None or math.isfinite(v) else str(v) for v in box]
            raw = {"detection_id": detection_id, "image_id": item.image_id, "box": box}
            self.errors.append({"uri": item.uri, "reason": reason, "raw": json.dumps(raw, allow_nan=False)})

    def publish(self, lake: Lake, marker: dict[str, Any], overwrite: bool) -> None:
        """Errors, then the object embeddings: the last commit is what marks these boxes done."""
        now = datetime.now(UTC)
        info = tables.commit_info(JOB, part=self.name, **marker)
        source = f"{marker['backbone']}/{marker['weights']}"
        tables.append(lake, ERRORS, error_rows(JOB, [{"source": source, **e} for e in self.errors], now), info)
        write = tables.upsert if overwrite else tables.append
        write(lake, OBJECT_EMBEDDINGS, self.rows(marker["backbone"], marker["weights"], now), info)

    def rows(self, backbone: str, weights: str, now: datetime) -> pa.Table:
        vectors = np.concatenate(self.vectors) if self.vectors else np.zeros((0, self.width), np.float32)
        # The same checks and vector column as the image embeddings (one width per set).
        checked = embedding_rows(self.ids, backbone, weights, vectors, now, width=self.width)
        return make_rows(OBJECT_EMBEDDINGS, len(self.ids), detection_id=self.ids, image_id=self.image_ids,
                         backbone=backbone, weights=weights, box=[list(b) for b in self.boxes] or None,
                         embedding=checked.column("embedding"), computed_at=now)


PLAN_SQL = """
CREATE TEMP TABLE object_plan AS
WITH newest AS (
    SELECT prediction_id FROM predictions
    QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY ts DESC, prediction_id DESC) = 1
), ranked AS (
    SELECT d.detection_id, d.image_id, d.box,
           row_number() OVER (PARTITION BY d.image_id ORDER BY d.score DESC NULLS LAST, d.detection_id) AS n
    FROM detections d JOIN newest USING (prediction_id)
)
SELECT r.detection_id, r.image_id, r.box, r.n, i.uri, i.sha256,
       r.n > $bound AS over_bound,
       r.detection_id IN (SELECT detection_id FROM object_embeddings
                          WHERE backbone = $backbone AND weights = $weights) AS embedded,
       r.detection_id IN (SELECT json_extract_string(raw, '$.detection_id') FROM errors
                          WHERE job = $job AND source = $model) AS failed
FROM ranked r JOIN images i USING (image_id)
WHERE {shard}
"""


class ObjectPlan:
    """Which boxes this run embeds, from one query over the lake (see the module docstring)."""

    def __init__(self, lake: Lake, backbone: Backbone, shard: Shard, bound: int, *, overwrite: bool,
                 retry_errors: bool):
        self.db = LakeDB(lake, read_only=False)
        self.overwrite, self.retry_errors = overwrite, retry_errors
        self.db.con.execute(PLAN_SQL.format(shard=shard.sql().replace("image_id", "r.image_id")), {
            "bound": bound, "backbone": backbone.name, "weights": backbone.weights, "job": JOB,
            "model": f"{backbone.name}/{backbone.weights}"})

    def _todo_filter(self) -> str:
        conditions = ["NOT over_bound"]
        if not self.overwrite:
            conditions.append("NOT embedded")
        if not self.retry_errors:
            conditions.append("NOT failed")
        return " AND ".join(conditions)

    def counts(self) -> tuple[int, int, int, int, int]:
        """(detections, over the bound, already embedded, failed before, to embed now)."""
        row = self.db.con.execute(
            "SELECT count(*), count(*) FILTER (over_bound), count(*) FILTER (embedded AND NOT over_bound), "
            "count(*) FILTER (failed AND NOT embedded AND NOT over_bound), "
            f"count(*) FILTER ({self._todo_filter()}) FROM object_plan"
        ).fetchone()
        return tuple(int(v) for v in row)

    def requests(self, prefix: str, part_size: int, batch_size: int) -> Iterator[Request]:
        """Batches of about ``batch_size`` boxes (an image's boxes stay together, so it is read
        once) in parts of about ``part_size`` boxes, named after their detections."""
        rows = self.db.con.execute(
            f"SELECT image_id, uri, sha256, list(detection_id ORDER BY n) AS ids, list(box ORDER BY n) AS boxes "
            f"FROM object_plan WHERE {self._todo_filter()} GROUP BY ALL ORDER BY image_id"
        ).to_arrow_reader(1024)
        for images in _parts(rows, part_size):
            ids = "\n".join(d for image in images for d in image.detection_ids)
            name = prefix + hashlib.sha1(ids.encode()).hexdigest()[:16]
            batches = list(_batches(images, batch_size))
            for index, chunk in enumerate(batches):
                yield Request(part=name, last_in_part=index == len(batches) - 1, items=tuple(chunk))

    def __enter__(self) -> ObjectPlan:
        return self

    def __exit__(self, *exc) -> None:
        self.db.con.close()


def _parts(reader: pa.RecordBatchReader, size: int) -> Iterator[list[ImageBoxes]]:
    """Whole images, grouped until a group holds ``size`` boxes or more."""
    images: list[ImageBoxes] = []
    boxes = 0
    for batch in reader:
        for row in batch.to_pylist():
            images.append(ImageBoxes(row["image_id"], row["uri"], row["sha256"], tuple(row["ids"]),
                                     tuple(None if b is None else tuple(b) for b in row["boxes"])))
            boxes += len(row["ids"])
            if boxes >= size:
                yield images
                images, boxes = [], 0
    if images:
        yield images


def _batches(images: list[ImageBoxes], size: int) -> Iterator[list[ImageBoxes]]:
    chunk: list[ImageBoxes] = []
    boxes = 0
    for image in images:
        chunk.append(image)
        boxes += len(image.detection_ids)
        if boxes >= size:
            yield chunk
            chunk, boxes = [], 0
    if chunk:
        yield chunk
