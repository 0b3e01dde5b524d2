"""`edgemine train`: a classifier fine-tuned on the lake's labels, stored in the lake.

1. Check everything that can be wrong before any work: the version name is free,
   there are image-level labels of at least two classes, ``--from`` names something
   that loads into the chosen backbone (nothing is written when one of these fails).
2. The data: one label per image (mining.evaluation.models.training_labels), split into
   training and validation by the image_id hash (or ``--val NAME``); the images
   read through the embed job's reader. Labelled images whose file is gone or
   unreadable become rows of ``errors`` (job ``train``) and training goes on
   without them, unless too few remain.
3. Train (embed.finetune.fit); after each epoch a checkpoint goes to
   ``_models/_staging/<version>/last.pt``: ``--resume`` continues from it.
4. Publish (mining.evaluation.models.publish_model): model.pt and model.json, then the
   ``models`` row, the commit point. A run killed before it leaves no visible model.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from embed.backbones import get_backbone
from embed.finetune import (
    TrainSettings,
    build_network,
    check_base_is_classifier,
    fit,
    hardware,
)
from embed.preprocess import ImageOptions
from embed.reader import Item, ReaderSettings, read_all
from jobs.progress import Progress
from mining.core import tables
from mining.core.devices import resolve_device
from mining.core.errors import TrainingError, WeightsError
from mining.core.lake import Lake
from mining.core.schema import ERRORS, error_rows
from mining.core.sql import LakeDB
from mining.core.summary import Summary
from mining.evaluation.models import (
    NAMED_BASES,
    check_version_name,
    checkpoint_path,
    model_row,
    named_images,
    publish_model,
    read_model,
    training_labels,
    validation_mask,
)

log = logging.getLogger(__name__)

JOB = "train"
MIN_PER_CLASS = 1  # training images a class needs after unreadable files are dropped


@dataclass
class TrainSummary(Summary):
    job: str = JOB
    version: str = ""
    backbone: str = ""
    base: str = ""
    classes: list[str] = field(default_factory=list)
    train_images: int = 0
    val_images: int = 0
    epochs: int = 0
    best_epoch: int = 0
    best_val_accuracy: float = 0.0
    resumed_from_epoch: int = 0
    stopped_early: bool = False
    train_images_per_second: float = 0.0
    path: str = ""


@dataclass(frozen=True)
class TrainRequest:
    version: str
    base: str = "imagenet"  # imagenet, random, a checkpoint file, or a model version of the lake
    labels_where: str | None = None
    val_fraction: float = 0.1
    val_name: str | None = None
    resume: bool = False
    workers: int = 0
    user: str = ""
    pseudo_from: str | None = None  # a model version whose confident predictions on unlabelled images are added
    min_confidence: float = 0.9
    pseudo_weight: float = 0.5  # a pseudo-label's share of the loss against a label's 1
    # label batch -> weight of its images in the loss (others 1): a small batch of rare cases
    # (the edge cases a review found) counts more beside a large first round.
    batch_weights: dict[str, float] = field(default_factory=dict)


def train_model(lake: Lake, request: TrainRequest, settings: TrainSettings | None = None, *,
                backbone_given: bool = True, show_progress: bool = True) -> TrainSummary:
    """Train ``request.version`` and publish it to the lake (see the module doc).

    ``backbone_given``: ``settings.backbone`` was asked for (else a ``--from`` model's backbone is used)."""
    started = time.monotonic()
    settings = settings or TrainSettings()
    settings.check()
    version = check_version_name(request.version)
    with LakeDB(lake, read_only=False) as db:
        if model_row(db, version) is not None:
            raise TrainingError(
                f"the lake already has a model {version!r}; choose another --name (versions are never replaced)"
            )
    with LakeDB(lake) as db:
        labels = training_labels(db, request.labels_where).to_pylist()
        classes = _check_classes(labels, request.labels_where)
        _check_batch_weights(labels, request)
        in_val = _split(db, labels, request)
        labels, in_val = _with_pseudo_labels(db, labels, in_val, classes, request)
        base_state, base_tag, settings = _resolve_base(db, lake, request.base, settings, classes, backbone_given)
    settings = TrainSettings(**(asdict(settings) | {"device": resolve_device(settings.device)}))
    # Fails here, before any image is read, when --from does not fit the backbone.
    model = build_network(settings.backbone, base_state, len(classes), seed=settings.seed)
    log.info("training %s (%s, fine-tuning %s) from %s on %s", version, settings.backbone, settings.finetune,
             base_tag, settings.device)
    summary = TrainSummary(version=version, backbone=settings.backbone, base=base_tag, classes=classes)

    train, val, seen = _read(lake, labels, in_val, classes, settings, request, summary, show_progress)
    staging = lake.model_staging_dir(version)
    resume = _load_resume(lake, staging, settings, classes) if request.resume else None
    if resume is None and lake.fs.exists(staging):
        lake.fs.rm(staging, recursive=True)  # a rerun without --resume restarts cleanly
    summary.resumed_from_epoch = resume["epoch"] if resume else 0
    signature = _signature(settings, classes)

    def save_epoch(checkpoint: dict[str, Any]) -> None:
        lake.write_atomic(f"{staging}/last.pt", _to_bytes(checkpoint | {"signature": signature}))

    progress = Progress("train", total=settings.epochs * len(train[1]), unit="images", enabled=show_progress)
    try:
        result = fit(model, train, val, settings, resume=resume, on_epoch=save_epoch, progress=progress.update)
    finally:
        progress.close()

    record = {
        "version": version,
        "backbone": settings.backbone,
        "base": base_tag,
        "classes": classes,
        "image_size": settings.image_size,
        "finetune": settings.finetune,
        "config": asdict(settings)
        | {
            "labels_where": request.labels_where,
            "val_fraction": None if request.val_name else request.val_fraction,
            "val": request.val_name,
            "batch_weights": dict(request.batch_weights),
        },
        "data": seen,
        "curves": asdict(result.curves),
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "stopped_early": result.stopped_early,
        "hardware": hardware(settings.device),
        "created_at": datetime.now(UTC).isoformat(),
        "timings": {"seconds": time.monotonic() - started, "train_images_per_second": result.train_images_per_second},
    }
    checkpoint = _to_bytes({"state_dict": result.best_state, "classes": classes, "backbone": settings.backbone,
                            "image_size": settings.image_size})
    publish_model(lake, record, checkpoint, user=request.user)
    lake.fs.rm(staging, recursive=True)
    summary.epochs = len(result.curves.epoch)
    summary.best_epoch, summary.best_val_accuracy = result.best_epoch, result.best_val_accuracy
    summary.stopped_early, summary.train_images_per_second = result.stopped_early, result.train_images_per_second
    summary.path = lake.url(lake.model_dir(version))
    summary.seconds = time.monotonic() - started
    return summary


def _check_classes(labels: list[dict[str, Any]], where: str | None) -> list[str]:
    scope = f" matching --labels {where!r}" if where else ""
    if not labels:
        raise TrainingError(f"the lake has no image-level labels{scope} (labels rows with no box) to train on; "
                            "import some with `edgemine labels import FILE --format ...`")
    classes = sorted({row["label"] for row in labels})
    if len(classes) < 2:
        raise TrainingError(f"the labels{scope} name one class only ({classes[0]!r}, {len(labels)} images); "
                            "a classifier needs at least two")
    return classes


def _check_batch_weights(labels: list[dict[str, Any]], request: TrainRequest) -> None:
    batches = {row["batch"] for row in labels}
    for batch, weight in request.batch_weights.items():
        if batch not in batches:
            raise TrainingError(f"--batch-weight {batch}={weight}: no label to train on is in batch {batch!r} "
                                f"(batches: {', '.join(sorted(map(str, batches)))}); check the name or --labels")
        if not weight > 0:
            raise TrainingError(
                f"--batch-weight {batch}={weight}: a weight must be above 0 (leave a batch out with --labels)"
            )


def _split(db: LakeDB, labels: list[dict[str, Any]], request: TrainRequest) -> np.ndarray:
    ids = [row["image_id"] for row in labels]
    if request.val_name:
        chosen = named_images(db, request.val_name)
        return np.array([i in chosen for i in ids], dtype=bool)
    return validation_mask(ids, request.val_fraction)


def _with_pseudo_labels(db: LakeDB, labels: list[dict[str, Any]], in_val: np.ndarray, classes: list[str],
                        request: TrainRequest) -> tuple[list[dict[str, Any]], np.ndarray]:
    """``labels`` and the split, plus the ``--pseudo-labels`` model's predictions at or above
    ``--min-confidence`` on images nobody labelled, marked ``pseudo`` (training only: an image
    the split puts in validation is left out, validation is on human labels alone)."""
    if not request.pseudo_from:
        return labels, in_val
    if model_row(db, request.pseudo_from) is None:
        raise TrainingError(
            f"--pseudo-labels {request.pseudo_from!r} is not a model version of the lake (see `edgemine models`)"
        )
    if not 0 <= request.min_confidence <= 1:
        raise TrainingError(f"--min-confidence must be in [0, 1], got {request.min_confidence}")
    found = db.query(
        """
        SELECT p.image_id, i.uri, i.sha256, p.label, 'pseudo:' || p.model_version AS batch, 'pseudo' AS annotator
        FROM predictions p JOIN images i USING (image_id)
        WHERE p.model_version = $version AND p.confidence >= $confidence AND list_contains($classes, p.label)
          AND p.image_id NOT IN (SELECT image_id FROM labels)
        QUALIFY row_number() OVER (PARTITION BY p.image_id ORDER BY p.ts DESC) = 1
        ORDER BY p.image_id
        """,
        {"version": request.pseudo_from, "confidence": request.min_confidence, "classes": classes},
    ).to_pylist()
    if request.val_name:
        pseudo = found
    else:
        pseudo = [
            row for row, v in zip(found, validation_mask([r["image_id"] for r in found], request.val_fraction)) if not v
        ]
    log.info("%d pseudo-labels from %s (confidence >= %s)", len(pseudo), request.pseudo_from, request.min_confidence)
    return labels + [row | {"pseudo": True} for row in pseudo], np.concatenate([in_val, np.zeros(len(pseudo), bool)])


def _resolve_base(db: LakeDB, lake: Lake, base: str, settings: TrainSettings, classes: list[str],
                  backbone_given: bool) -> tuple[str | dict[str, torch.Tensor], str, TrainSettings]:
    """What ``--from`` names: (imagenet/random/file path, or a lake model's state dict), its tag, and the
    settings (a lake model fixes the backbone)."""
    if base in NAMED_BASES:
        return base, base, settings
    if os.path.isfile(base):
        return base, f"file:{os.path.basename(base)}", settings
    if model_row(db, base) is None:
        raise TrainingError(f"--from {base!r} is neither {' nor '.join(NAMED_BASES)}, a checkpoint file, "
                            f"nor a model version of the lake (see `edgemine models`)")
    record = read_model(db, base)
    if record["backbone"] != settings.backbone:
        if backbone_given:
            raise WeightsError(f"--from {base} is a {record['backbone']} model; it cannot continue as --backbone "
                               f"{settings.backbone} (leave --backbone out, or start from imagenet)")
        settings = TrainSettings(**(asdict(settings) | {"backbone": record["backbone"]}))
    loaded = torch.load(
        io.BytesIO(lake.fs.cat_file(checkpoint_path(lake, base))), map_location="cpu", weights_only=True
    )
    state = check_base_is_classifier(loaded, f"model {base}")
    if list(loaded.get("classes", [])) != classes:
        state = get_backbone(settings.backbone).without_head(state)  # other classes: a new head
    return state, f"model:{base}", settings


def _read(lake: Lake, labels: list[dict[str, Any]], in_val: np.ndarray, classes: list[str], settings: TrainSettings,
          request: TrainRequest, summary: TrainSummary, show_progress: bool):
    """Decode the labelled images; unreadable ones go to ``errors``. Returns the train and val
    tensors and what the record says about the data."""
    items = [Item(row["image_id"], row["uri"], row["sha256"], needs_thumbnail=False) for row in labels]
    options = ImageOptions(preprocessing=settings.preprocessing())
    progress = Progress("read", total=len(items), unit="images", enabled=show_progress)
    decoded, pixels, errors = read_all(items, ReaderSettings(lake.s3, options, False),
                                       workers=request.workers or min(4, os.cpu_count() or 1), progress=progress.update)
    progress.close()
    if errors:
        rows = [
            {
                "source": request.version,
                "uri": item.uri,
                "reason": reason,
                "raw": json.dumps({"image_id": item.image_id}),
            }
            for item, reason in errors
        ]
        tables.append(
            lake, ERRORS, error_rows(JOB, rows, datetime.now(UTC)), tables.commit_info(JOB, version=request.version)
        )
        summary.add_errors(rows)
    by_id = {row["image_id"]: (row, bool(v)) for row, v in zip(labels, in_val)}
    y = torch.tensor([classes.index(by_id[item.image_id][0]["label"]) for item in decoded], dtype=torch.int64)
    val = torch.tensor([by_id[item.image_id][1] for item in decoded], dtype=torch.bool)
    pseudo = torch.tensor([bool(by_id[item.image_id][0].get("pseudo")) for item in decoded], dtype=torch.bool)
    weights = torch.where(pseudo, request.pseudo_weight, 1.0).float()
    if request.batch_weights:
        weights *= torch.tensor([request.batch_weights.get(by_id[item.image_id][0]["batch"], 1.0) for item in decoded])
    train_counts = Counter(classes[i] for i in y[~val].tolist())
    val_counts = Counter(classes[i] for i in y[val].tolist())
    missing = [c for c in classes if train_counts[c] < MIN_PER_CLASS]
    if missing or not val.any() or (~val).sum() < 2:
        raise TrainingError(
            f"too few readable labelled images: training has {dict(train_counts)}, validation {dict(val_counts)} "
            f"({len(errors)} unreadable, see the errors table: job '{JOB}'); every class needs a training image "
            "and validation at least one image (raise --val-fraction or label more)")
    summary.train_images, summary.val_images = int((~val).sum()), int(val.sum())
    seen = {
        "train_images": summary.train_images, "val_images": summary.val_images, "unreadable": len(errors),
        "train_per_class": dict(sorted(train_counts.items())), "val_per_class": dict(sorted(val_counts.items())),
        "label_batches": dict(sorted(Counter(row["batch"] for row in labels).items())),
        "val_image_ids": sorted(item.image_id for item, v in zip(decoded, val.tolist()) if v),
    }
    if request.pseudo_from:
        seen["pseudo_labels"] = {"from": request.pseudo_from, "min_confidence": request.min_confidence,
                                 "weight": request.pseudo_weight, "images": int(pseudo.sum()),
                                 "per_class": dict(sorted(Counter(classes[i] for i in y[pseudo].tolist()).items()))}
    return (pixels[~val], y[~val], weights[~val]), (pixels[val], y[val]), seen


def _signature(settings: TrainSettings, classes: list[str]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the same training, not an older one's."""
    return {"settings": asdict(settings) | {"device": None}, "classes": classes}


def _load_resume(lake: Lake, staging: str, settings: TrainSettings, classes: list[str]) -> dict[str, Any] | None:
    try:
        data = lake.fs.cat_file(f"{staging}/last.pt")
    except FileNotFoundError:
        log.info("--resume: no epoch checkpoint of this version; training from the start")
        return None
    checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if checkpoint.get("signature") != _signature(settings, classes):
        raise WeightsError("--resume: the epoch checkpoint was made with other settings or classes; "
                           "rerun without --resume to start again")
    log.info("resuming after epoch %d", checkpoint["epoch"])
    return checkpoint


def _to_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
