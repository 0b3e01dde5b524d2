"""`edgemine score`: a lake model's predictions and embeddings for the lake's images.

The embed job's pipeline (jobs.embed_images.run_plan) with the trained classifier as
its model: one forward pass per batch gives the penultimate layer (the embedding,
backbone ``<resnet>``, weights ``model:<version>``) and the class probabilities.

- Plan: the images of this shard (``--shard I/N``) and of ``--where`` that have no
  prediction of this version yet, and did not fail before for it.
- Publish per part: errors and thumbnails, then the embeddings (MERGE on their key,
  so a part redone after a kill does not repeat them), then the predictions, last:
  that commit is what makes the part's images scored. A rerun after a kill plans
  only the images without a prediction, so every image is scored exactly once.
- ``prediction_id`` is derived from (image_id, model_version) alone: the same image
  and version always give the same id.
"""

from __future__ import annotations

import functools
import hashlib
import io
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import torch

from embed.finetune import TrainSettings
from embed.model import load_classifier
from jobs.embed_images import EmbedSummary, Part, Plan, Shard, _slug, run_plan
from jobs.runners import Runner
from mining.core import tables
from mining.core.config import EmbedConfig
from mining.core.lake import Lake
from mining.core.schema import EMBEDDINGS, PREDICTIONS, make_rows
from mining.core.sql import LakeDB
from mining.evaluation.models import checkpoint_path, read_model

JOB = "score"
SOURCE = "edgemine score"


@dataclass
class ScoreSummary(EmbedSummary):
    """``embedded`` counts the images scored now, ``already_embedded`` those scored before."""

    job: str = JOB
    model_version: str = ""


def prediction_id(image_id: str, version: str) -> str:
    """The id of a lake model's prediction on an image: the same for every run."""
    return hashlib.sha256(f"{image_id}|{version}|score".encode()).hexdigest()[:24]


def score_lake(lake: Lake, version: str, config: EmbedConfig = EmbedConfig(), *, shard: Shard = Shard(),  # noqa: B008
               where: str | None = None, retry_errors: bool = False, show_progress: bool = True,
               runner: Runner = Runner()) -> ScoreSummary:
    """Score the images (of ``shard``, matching ``where``, a SQL predicate over ``images``)
    that have no prediction of ``version`` yet; ``runner``: where the pipeline runs (local, or Ray)."""
    started = time.monotonic()
    runner.connect()
    with LakeDB(lake) as db:
        record = read_model(db, version)  # TrainingError for an unknown version
        selected = db.query(f"SELECT image_id FROM images WHERE {where}") if where else None
    loaded = torch.load(
        io.BytesIO(lake.fs.cat_file(checkpoint_path(lake, version))), map_location="cpu", weights_only=True
    )
    preprocessing = TrainSettings(backbone=record["backbone"], image_size=record["image_size"]).preprocessing()
    load_model = functools.partial(load_classifier, record["backbone"], loaded["state_dict"], record["classes"],
                                   f"model:{version}", preprocessing=preprocessing)
    model = load_model(device=runner.model_device or config.device)
    on_device = config.decode == "device" or (config.decode == "auto" and model.uses_cuda)
    summary = ScoreSummary(model_version=version, backbone=model.name, weights=model.weights, device=str(model.device),
                           decode="device" if on_device else "workers", shard=str(shard), runner=runner.kind)
    done = "image_id IN (SELECT image_id FROM predictions WHERE model_version = $model)"
    with Plan(lake, model, shard, overwrite=False, retry_errors=retry_errors, done=done, job=JOB, source=version,
              selected=selected) as plan:
        prefix = f"{_slug(version)}-s{shard.index}of{shard.count}-"

        def publish(part):
            return publish_part(lake, part, version, model.name, model.weights, record["classes"])

        run_plan(lake, plan, model, config, summary, prefix, publish, on_device=on_device,
                 show_progress=show_progress, label="score", runner=runner, load_model=load_model)
    summary.seconds = time.monotonic() - started
    summary.images_per_second = (summary.embedded + summary.errors) / summary.seconds if summary.seconds else 0.0
    return summary


def publish_part(lake: Lake, part: Part, version: str, backbone: str, weights: str, classes: list[str]) -> None:
    """Errors, thumbnails, embeddings, then predictions: the last commit marks the part's images scored."""
    now = datetime.now(UTC)
    info = tables.commit_info(JOB, part=part.name, model_version=version)
    part.publish_errors_and_thumbnails(lake, JOB, version, info, False, now)
    tables.upsert(lake, EMBEDDINGS, part.embedding_rows(backbone, weights, now), info)
    tables.append(lake, PREDICTIONS, prediction_rows(part, version, classes, now), info)


def prediction_rows(part: Part, version: str, classes: list[str], now: datetime) -> pa.Table:
    """One predictions row per image of the part: the top class, its probability, every class's."""
    scores = np.concatenate(part.scores) if part.scores else np.zeros((0, len(classes)), np.float32)
    top = scores.argmax(axis=1) if len(scores) else np.zeros(0, np.int64)
    keys = pa.array(np.tile(np.array(classes, dtype=object), len(scores)), pa.string())
    offsets = pa.array(np.arange(0, len(scores) * len(classes) + 1, len(classes), dtype=np.int32))
    score_map = pa.MapArray.from_arrays(offsets, keys, pa.array(scores.reshape(-1), pa.float32()))
    return make_rows(
        PREDICTIONS,
        len(part.ids),
        prediction_id=[prediction_id(i, version) for i in part.ids],
        image_id=part.ids,
        image_uri=part.uris,
        model_version=version,
        ts=now,
        label=[classes[i] for i in top],
        confidence=scores.max(axis=1) if len(scores) else np.zeros(0, np.float32),
        scores=score_map,
        source=SOURCE,
        ingested_at=now,
        date=now.date(),
    )
