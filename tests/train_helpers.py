"""A tiny labelled lake for the train and score tests: coloured images of three
classes (red, green, blue tint under seeded noise), so a few epochs learn something."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
from PIL import Image

from embed.finetune import TrainSettings
from jobs.ingest_images import ingest_images
from mining.core import tables
from mining.core.lake import Lake
from mining.core.schema import LABELS, make_rows
from tests.helpers import put, rows, source_uri

CLASSES = ("blue", "green", "red")
# Small and quick: 32-px inputs, 2 epochs, random seeded weights (no download).
FAST = TrainSettings(backbone="resnet18", epochs=2, batch_size=16, image_size=32, seed=0, device="cpu", patience=5)


def coloured_jpeg(i: int, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(i)
    pixels = rng.integers(0, 90, (size[1], size[0], 3)).astype(np.uint8)
    pixels[..., 2 - i % 3] += 150  # channel 2 (blue) for i % 3 == 0, as CLASSES orders them
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def labelled_lake(lake: Lake, n: int = 60, *, labelled: int | None = None, batch: str = "b1") -> list[dict]:
    """``n`` images ingested, the first ``labelled`` (default all) with an image-level label; returns
    the images rows (image_id, uri, label) in file order."""
    source = source_uri(lake, "images")
    for i in range(n):
        put(lake, f"{source}/img-{i:04d}.jpg", coloured_jpeg(i))
    ingest_images(lake, source, show_progress=False)
    found = rows(lake, "SELECT image_id, uri FROM images ORDER BY uri")
    for i, row in enumerate(found):
        row["label"] = CLASSES[i % 3]
    add_labels(lake, found[: n if labelled is None else labelled], batch=batch)
    return found


def add_labels(
    lake: Lake, images: list[dict], *, batch: str, label: str | None = None, at: datetime | None = None
) -> None:
    at = at or datetime(2026, 11, 1, tzinfo=UTC)
    ids = [r["image_id"] for r in images]
    values = [label or r["label"] for r in images]
    table = make_rows(LABELS, len(ids), label_id=[f"{batch}-{i}" for i in ids], image_id=ids, label=values,
                      annotator="ann", batch=batch, format="coco", labelled_at=at, imported_at=at + timedelta(hours=1))
    tables.append(lake, LABELS, table, tables.commit_info("labels-import", batch=batch))
