"""Classifiers trained on the lake's labels: their training data, their split, and
their place in the lake (no torch here: embed/finetune.py trains, jobs/train.py and
jobs/score.py run the commands).

The data a version trains on (``training_labels``):
- image-level labels only (``labels.box IS NULL``), filtered by ``--labels WHERE``;
- one label per image: an image labelled several times (two imports, two annotators)
  keeps the row of its most recent import (``imported_at``, then ``labelled_at``,
  then ``label_id`` to break ties), so a correction imported later wins.

The validation split (``validation_mask``): an image is in validation when a hash of
its image_id falls under the fraction. It depends on nothing but the id, so an image
is in validation for every version trained with that fraction, and never leaks into
a later version's training data; within each class the split takes about the same
fraction (stratified in expectation, the per-class counts are in the record).
``--val NAME`` uses a named set (or queue) as the validation images instead.

A version in the lake (docs/TRAINING.md)::

    _models/<version>/model.pt     the best epoch's state dict and the class list (torch)
    _models/<version>/model.json   the record: config, data, curves, hardware, timings
    models (table)                 one row per version: written last, it makes the version exist

A training run keeps its epoch checkpoints in ``_models/_staging/<version>/``; until
the models row is committed no reader sees the version, so a killed run leaves no
half model visible.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from mining.core import tables
from mining.core.errors import TrainingError
from mining.core.lake import Lake
from mining.core.schema import MODELS, make_rows
from mining.core.sql import LakeDB, quote_literal

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
NAMED_BASES = ("imagenet", "random")


def check_version_name(version: str) -> str:
    """A version name is a folder name and a SQL value: letters, digits, ``_ . -``."""
    if not VERSION_PATTERN.match(version or ""):
        raise TrainingError(f"model version {version!r} is not a valid name: use letters, digits, '_', '.', '-' "
                            "(at most 100, starting with a letter or digit), e.g. v2 or glare-2026-11")
    return version


def validation_fraction_of(image_ids: list[str] | np.ndarray) -> np.ndarray:
    """float64 (n,) in [0, 1): where each image falls on the split's fixed scale (from sha256 of its id)."""
    return np.array([int(hashlib.sha256(i.encode()).hexdigest()[:12], 16) / 16**12 for i in image_ids], np.float64)


def validation_mask(image_ids: list[str] | np.ndarray, fraction: float) -> np.ndarray:
    """bool (n,): the images in validation for ``fraction``; the same ids always give the same answer.

    >>> validation_mask(["a", "b", "c", "d"], 0.5).tolist()
    [False, True, True, True]
    """
    if not 0 < fraction < 1:
        raise TrainingError(f"--val-fraction must be between 0 and 1 (exclusive), got {fraction}")
    return validation_fraction_of(image_ids) < fraction


def training_labels(db: LakeDB, where: str | None = None) -> pa.Table:
    """One label per labelled image: columns image_id, uri, sha256, label, batch, annotator.

    ``where``: a SQL predicate over the ``labels`` table's columns (e.g. ``batch = 'b7'``).
    Images no longer in ``images`` are left out (nothing to read)."""
    filter_sql = f"AND ({where})" if where else ""
    return db.query(
        f"""
        SELECT l.image_id, i.uri, i.sha256, l.label, l.batch, l.annotator
        FROM labels l JOIN images i USING (image_id)
        WHERE l.box IS NULL {filter_sql}
        QUALIFY row_number() OVER (PARTITION BY l.image_id
                                   ORDER BY l.imported_at DESC NULLS LAST, l.labelled_at DESC, l.label_id DESC) = 1
        ORDER BY l.image_id
        """
    )


def named_images(db: LakeDB, name: str) -> set[str]:
    """The image ids of the set ``name``, else of the latest version of the queue ``name``."""
    found = db.query("SELECT image_id FROM sets WHERE name = $name", {"name": name}).column("image_id").to_pylist()
    if not found:
        found = (
            db.query(
                "SELECT image_id FROM queues WHERE queue = $name AND version = "
                "(SELECT max(version) FROM queues WHERE queue = $name)",
                {"name": name},
            )
            .column("image_id")
            .to_pylist()
        )
    if not found:
        raise TrainingError(f"--val {name!r} is neither a named set nor a queue of the lake; "
                            "see `edgemine sets` / `edgemine queue list`, or use --val-fraction")
    return set(found)


def list_models(db: LakeDB) -> pa.Table:
    """One row per published model version, newest first (without the full record)."""
    return db.query("SELECT model_version, backbone, base, classes, train_images, val_images, epochs, best_epoch, "
                    "val_accuracy, created_by, created_at FROM models ORDER BY created_at DESC, model_version")


def model_row(db: LakeDB, version: str) -> dict[str, Any] | None:
    """The models row of ``version`` (None when there is none)."""
    found = db.query(f"SELECT * FROM models WHERE model_version = {quote_literal(version)}").to_pylist()
    return found[0] if found else None


def read_model(db: LakeDB, version: str) -> dict[str, Any]:
    """The record of a published version (what model.json holds), with its ``path``.

    Raises TrainingError for a version the lake does not have, listing the ones it has."""
    row = model_row(db, version)
    if row is None:
        known = list_models(db).column("model_version").to_pylist()
        raise TrainingError(
            f"the lake has no model {version!r}; models: {', '.join(known) or 'none yet (edgemine train)'}"
        )
    return json.loads(row["record"]) | {"path": row["path"]}


def checkpoint_path(lake: Lake, version: str) -> str:
    return f"{lake.model_dir(version)}/model.pt"


def publish_model(lake: Lake, record: dict[str, Any], checkpoint: bytes, *, user: str) -> None:
    """Write the model's files, then its models row (the commit point: before it, the version does not exist)."""
    version = record["version"]
    folder = lake.model_dir(version)
    if lake.protocol == "file":
        lake.fs.makedirs(folder, exist_ok=True)
    lake.fs.pipe_file(checkpoint_path(lake, version), checkpoint)
    sha = hashlib.sha256(checkpoint).hexdigest()
    text = json.dumps(record | {"checkpoint_sha256": sha}, indent=1, sort_keys=True, default=str)
    lake.fs.pipe_file(f"{folder}/model.json", text.encode())
    data = record["data"]
    row = make_rows(MODELS, 1, model_version=version, backbone=record["backbone"], base=record["base"],
                    classes=[record["classes"]], train_images=data["train_images"], val_images=data["val_images"],
                    epochs=len(record["curves"]["epoch"]), best_epoch=record["best_epoch"],
                    val_accuracy=record["best_val_accuracy"], path=lake.url(folder), checkpoint_sha256=sha,
                    record=text, created_by=user, created_at=datetime.now(UTC))
    tables.append(lake, MODELS, row, tables.commit_info("train", version=version))


def version_exists(lake: Lake, version: str) -> bool:
    """Whether a models row for ``version`` is committed (a fresh read, not a cached view)."""
    with LakeDB(lake, read_only=False) as db:
        return model_row(db, version) is not None
