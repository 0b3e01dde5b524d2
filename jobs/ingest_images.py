"""`edgemine ingest images SOURCE`: register image files in ``images`` and ``image_files``.

Each file is read once: its bytes give the content id (mining.core.schema) and its
header the format and size; pixels are not decoded. Files that are not images
go to ``errors``. The job is incremental: a file already registered, or already
refused, is skipped, so rerunning it (after a kill, or every hour on a growing
bucket) registers only what is new. New files are taken in shards; each shard
adds its new images (one row per content), then its errors, then its files:
``image_files`` is what says a file is done, so a kill anywhere before that
commit redoes the shard, and a redo adds no image twice (insert-if-absent).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import logging
import os
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from jobs.progress import Progress
from jobs.runners import Runner
from mining.core import tables
from mining.core.config import IngestConfig
from mining.core.lake import Lake, as_uri, is_s3, open_url, path_of, read_many, walkable
from mining.core.schema import ERRORS, IMAGE_FILES, IMAGES, error_rows, image_id_from_sha256, make_rows
from mining.core.sql import LakeDB
from mining.core.summary import Summary

log = logging.getLogger(__name__)

JOB = "ingest-images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class ImagesSummary(Summary):
    job: str = JOB
    source: str = ""
    found: int = 0
    already_known: int = 0
    registered: int = 0
    shards: int = 0
    runner: str = "local"


def ingest_images(
    lake: Lake,
    source: str,
    config: IngestConfig = IngestConfig(),
    *,
    pattern: str | None = None,
    retry_errors: bool = False,
    show_progress: bool = True,
    runner: Runner = Runner(),
) -> ImagesSummary:
    """Register the images under ``source`` (a folder or s3:// prefix).

    ``pattern`` is a glob on paths relative to ``source`` (``**/*.jpg``); by
    default every file with an image suffix is taken. With a ``ray`` runner the files
    are read and probed by Ray tasks on the cluster (every node must reach ``source``);
    this process still lists, plans the shards and commits them, so the lake gets the
    same rows either way."""
    started = time.monotonic()
    summary = ImagesSummary(source=source, runner=runner.kind)
    uris = list_images(lake, source, pattern)
    summary.found = len(uris)
    known = _known_uris(lake, include_errors=not retry_errors)
    new = sorted(set(uris) - known)
    summary.already_known = len(uris) - len(new)

    fs, _ = open_url(source, lake.s3)
    outside = links_leading_outside(source, new) if not is_s3(source) else {}
    progress = Progress("ingest images", total=len(new), unit="images", enabled=show_progress)
    for start in range(0, len(new), config.image_shard):
        shard_uris = new[start : start + config.image_shard]
        shard = "img-" + hashlib.sha1("\n".join(shard_uris).encode()).hexdigest()[:16]
        ingested_at = datetime.now(UTC)
        errors = [{"source": source, "uri": uri, "reason": f"a symlink leading outside the source (to {outside[uri]}): "
                   "not followed; ingest the folder it leads to instead"} for uri in shard_uris if uri in outside]
        readable = [u for u in shard_uris if u not in outside]
        progress.update(len(shard_uris) - len(readable))
        if runner.kind == "ray":
            from jobs.ray_runner import probe_on_ray

            probed = probe_on_ray(readable, source, lake.s3, ingested_at, config.image_batch, progress)
        else:
            probed = probe_files(fs, readable, source, ingested_at, config.image_batch, progress)
        rows = [row for row, _ in probed if row is not None]
        errors += [{"source": source, "uri": uri, "reason": reason} for (row, reason), uri in zip(probed, readable)
                   if row is None]
        info = tables.commit_info(JOB, source=source, shard=shard)
        first_of_each = list(
            {row["image_id"]: row for row in reversed(rows)}.values()
        )  # the same bytes twice: one image
        tables.insert_new(lake, IMAGES, pa.Table.from_pylist(first_of_each, schema=IMAGES.schema), info)
        tables.append(lake, ERRORS, error_rows(JOB, errors, ingested_at), info)
        files = make_rows(IMAGE_FILES, len(rows), uri=[r["uri"] for r in rows], image_id=[r["image_id"] for r in rows],
                          source=source, ingested_at=ingested_at)
        tables.insert_new(lake, IMAGE_FILES, files, info)
        summary.registered += len(rows)
        summary.add_errors(errors)
        summary.shards += 1
    progress.close()
    summary.seconds = time.monotonic() - started
    return summary


def list_images(lake: Lake, source: str, pattern: str | None = None) -> list[str]:
    fs, root = walkable(source, lake.s3)
    root = root.rstrip("/")
    if not fs.exists(root):
        raise FileNotFoundError(f"image source {source} does not exist; give a folder or an s3://bucket/prefix")
    uris = []
    for path in fs.find(root):
        relative = path[len(root) + 1 :]
        if pattern is not None:
            if not fnmatch.fnmatch(relative, pattern):
                continue
        elif not path.lower().endswith(IMAGE_SUFFIXES):
            continue
        uris.append(as_uri(path, like=source))
    return sorted(uris)


def links_leading_outside(source: str, uris: list[str]) -> dict[str, str]:
    """The local ``uris`` that are symlinks (or lie under one) leading out of ``source``, each
    with where it leads: an image source is what is in its folder, not what links reach."""
    root = os.path.realpath(path_of(source).removeprefix("file://")).rstrip("/") + "/"
    outside = {}
    for uri in uris:
        real = os.path.realpath(uri.removeprefix("file://"))
        if not real.startswith(root):
            outside[uri] = real
    return outside


def probe_files(fs, uris: list[str], source: str, at: datetime, batch: int,
                progress: Progress) -> list[tuple[dict | None, str | None]]:
    """(images row, None) or (None, the reason) for each of ``uris``, in order, read ``batch`` at a time."""
    probed = []
    for offset in range(0, len(uris), batch):
        part = uris[offset : offset + batch]
        contents = read_many(fs, [path_of(u) for u in part])
        probed += [probe_image(uri, data, source, at) for uri, data in zip(part, contents)]
        progress.update(len(part))
    return probed


def probe_image(uri: str, data: bytes | BaseException, source: str, at: datetime) -> tuple[dict | None, str | None]:
    """A row for the images table, or the reason there is none; ``data`` is what
    mining.core.lake.read_many returned for the file."""
    if isinstance(data, FileNotFoundError):
        return None, "file vanished while listing"
    if isinstance(data, BaseException):
        return None, f"could not read: {type(data).__name__}: {data}"
    if not data:
        return None, "empty file"
    try:
        with warnings.catch_warnings():
            # Size comes from the header; a huge image is registered, and the embed
            # job applies its own pixel limit when it decodes.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                fmt, mode = image.format, image.mode
    except Image.DecompressionBombError as e:
        return None, f"decompression bomb: {e}"
    except UnidentifiedImageError:
        return None, "not an image (or a format Pillow cannot identify)"
    except (OSError, ValueError, SyntaxError) as e:
        return None, f"unreadable image header: {e}"
    digest = hashlib.sha256(data).hexdigest()
    return (
        {
            "image_id": image_id_from_sha256(digest),
            "uri": uri,
            "width": width,
            "height": height,
            "bytes": len(data),
            "sha256": digest,
            "format": fmt,
            "mode": mode,
            "source": source,
            "ingested_at": at,
        },
        None,
    )


def _known_uris(lake: Lake, *, include_errors: bool) -> set[str]:
    with LakeDB(lake) as db:
        sql = "SELECT uri FROM image_files"
        if include_errors:
            sql += f" UNION SELECT uri FROM errors WHERE job = '{JOB}' AND uri IS NOT NULL"
        return set(db.query(sql).column("uri").to_pylist())
