"""`--runner ray`: the embed and score pipeline as Ray Data stages on a Ray cluster.

The same pieces as the local runner (jobs.embed_images), arranged on a cluster:

1. This process, the driver, plans as the local runner does (``Plan.requests``: the
   images still to do, in parts) and puts the plan in Ray's object store, one block per
   part, as it streams from the query: the driver's memory holds each part's name and size
   only, and Ray Data runs the whole plan in one execution (one actor pool, models loaded
   once per actor for the whole run).
2. A CPU stage (``map_batches`` with a function: Ray tasks) reads and decodes each batch
   with ``embed.reader.ImageBatches``, exactly what a DataLoader worker runs locally.
3. A model stage (``map_batches`` with a callable class: an actor pool) embeds with
   ``jobs.embed_images.embed_batch``; each actor builds its model once, with the job's own
   loader (``load_backbone`` or ``load_classifier``), on one GPU where the cluster has GPUs.
4. The driver gathers the rows coming back (in any order) into their parts and publishes
   each whole part through the job's own ``publish`` (mining.core.tables, one Delta
   transaction per table): the lake gets the local runner's commits, row for row.

Exactly once: a part is published only when every image of it has come back, and the
driver keeps one row per image, so a batch Ray computes twice (a killed actor is restarted
and its batch retried: Ray Data's defaults ``max_restarts=-1``, ``max_task_retries=-1``) is
still published once. A killed driver loses the parts it had not committed; a rerun plans
them again, as after a local kill.

`ingest images --runner ray` is simpler: ``probe_on_ray`` reads and probes a shard's files in
Ray tasks (jobs.ingest_images.probe_files on each batch) and the driver commits the shard.

Connecting is jobs.runners' (before the model is loaded). Every node of the cluster needs
edgemine installed (the same version) and the lake's storage reachable: the workers import
this module and read the images themselves.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from embed.model import Backbone
from embed.preprocess import ImageOptions, Thumbnail
from embed.reader import ImageBatches, Item, LoadedBatch, ReaderSettings, Request
from jobs.embed_images import DEFAULT_BATCH, Embedded, EmbedSummary, Part, Publisher, embed_batch, reader_settings
from jobs.progress import Progress
from jobs.runners import describe_resources, import_ray
from mining.core.config import EmbedConfig, S3Config
from mining.core.errors import DeviceError
from mining.core.lake import Lake, open_url
from mining.core.schema import IMAGES

log = logging.getLogger(__name__)

# Heap memory reserved per model actor (a ResNet and a batch of activations fit in it). Asking
# for it also keeps the model stage apart from the decoding stage: Ray Data fuses adjacent
# stages whose resource requests are equal, and the decoding would then run inside the actors,
# one batch after another, instead of in tasks beside them.
MODEL_ACTOR_MEMORY = 1 << 30
# Row states out of the CPU stage.
DECODED, JPEG, FAILED = 0, 1, 2


def run_plan_on_ray(lake: Lake, requests_of: Callable[[int], Iterator[Request]], backbone: Backbone,
                    load_model: Callable[..., Backbone], config: EmbedConfig, summary: EmbedSummary,
                    progress: Progress, publish: Callable[[Part], None]) -> None:
    """Run the plan (``requests_of(n)``: its images in requests of at most n, part by part) on the
    connected cluster; ``load_model(device=...)`` builds each actor's model. Fills the summary's counts."""
    ray = import_ray()
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if config.device != "cpu" else 0
    if not gpus and config.device.startswith("cuda"):
        raise DeviceError(f"--device {config.device}, but the Ray cluster has no GPU "
                          f"({describe_resources(resources)}); use --device auto or cpu")
    cpus = int(resources.get("CPU", 1))
    actors = gpus or max(1, cpus - max(1, cpus // 4))  # on CPUs: about a quarter of the cores left to decoding
    on_device = config.decode == "device" or (config.decode == "auto" and gpus > 0)
    summary.device, summary.decode = ("cuda" if gpus else "cpu"), ("device" if on_device else "workers")
    batch_size = config.batch_size or DEFAULT_BATCH[summary.device]
    stages = Stages(
        settings=reader_settings(lake, backbone, config, on_device=on_device),
        recipe=ray.put(load_model),
        device=config.device if gpus else "cpu",
        batch_size=batch_size,
        gpus=gpus,
        actors=actors,
        # On CPUs the actors share out the cores, as the local runner's model shares them with its
        # decoding workers: Ray would give each actor one thread (OMP_NUM_THREADS = its num_cpus).
        threads=0 if gpus else max(1, cpus // actors),
    )
    log.info("Ray: %d model actor(s) (%s), batches of %d, decoding on %s", stages.actors, stages.device, batch_size,
             summary.decode)
    crop = backbone.preprocessing.crop
    _configure_ray_data(ray, block_bytes=batch_size * 3 * crop * crop)
    sizes: dict[str, int] = {}
    blocks = []
    for request in requests_of(config.part_size):  # batches as large as parts: one request per part
        sizes[request.part] = len(request.items)
        blocks.append(ray.put(_plan_block(request)))
    parts = PartGatherer(sizes, backbone.width)
    dataset = stages.dataset(ray, blocks)
    with Publisher(publish, summary) as publisher:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            new, complete = parts.add(batch)
            progress.update(new)
            for part in complete:
                publisher.submit(part)
    parts.check_all_published()
    log.debug("Ray Data's stages:\n%s", dataset.stats())


def _configure_ray_data(ray: ModuleType, *, block_bytes: int) -> None:
    """This process's Ray Data settings for the job: blocks of about one batch of pixels
    (``block_bytes``; Ray Data's default, 128 MiB, would gather a whole part's decoded batches
    into one block before the model saw any), and the job's own progress line and logs, not
    Ray Data's bars."""
    context = ray.data.DataContext.get_current()
    context.target_max_block_size = block_bytes
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def probe_on_ray(uris: list[str], source: str, s3: S3Config, at: datetime, batch: int,
                 progress: Progress) -> list[tuple[dict | None, str | None]]:
    """`ingest images` on the cluster: (images row, None) or (None, the reason) for each of
    ``uris``, in order, as jobs.ingest_images.probe_files gives them locally; Ray tasks read and
    probe ``batch`` files each (a retried batch's second answer replaces its first)."""
    if not uris:
        return []
    ray = import_ray()
    _configure_ray_data(ray, block_bytes=batch * 512)
    blocks = [pa.table({"uri": uris[i : i + batch]}) for i in range(0, len(uris), batch)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        _probe_batch, batch_size=batch, batch_format="pyarrow", num_cpus=1,
        fn_kwargs={"source": source, "s3": s3, "at": at})
    found: dict[str, tuple[dict | None, str | None]] = {}
    for rows in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in rows.to_pylist():
            uri, reason = row["uri"], row.pop("reason")
            if uri not in found:
                progress.update(1)
            found[uri] = (None, reason) if reason is not None else (row, None)
    missing = len(set(uris) - found.keys())
    if missing:
        raise RuntimeError(f"Ray finished without probing {missing} of the shard's files: nothing of the shard was "
                           "written; rerun the same command")
    return [found[uri] for uri in uris]


def _probe_batch(rows: pa.Table, source: str, s3: S3Config, at: datetime) -> pa.Table:
    """The task of `ingest images --runner ray`: the batch's files read and probed."""
    from jobs.ingest_images import probe_files

    uris = rows.column("uri").to_pylist()
    fs, _ = open_url(source, s3)
    probed = probe_files(fs, uris, source, at, len(uris), Progress("probe", total=len(uris), enabled=False))
    out = [dict(row, reason=None) if row else {"uri": uri, "reason": reason}
           for uri, (row, reason) in zip(uris, probed)]
    return pa.Table.from_pylist(out, schema=PROBED)


# What a probing task returns: an images row, or the uri and the reason it has none.
PROBED = pa.schema([field.with_nullable(True) for field in IMAGES.schema] + [pa.field("reason", pa.string())])


class Stages:
    """The two Ray Data stages over the plan."""

    def __init__(self, *, settings: ReaderSettings, recipe: Any, device: str, batch_size: int, gpus: int,
                 actors: int, threads: int):
        self.settings, self.recipe, self.device = settings, recipe, device
        self.batch_size, self.gpus, self.actors = batch_size, gpus, actors
        self.threads = threads  # torch threads per actor; 0: Ray's choice

    def dataset(self, ray: ModuleType, blocks: list):
        """``blocks``: object refs of the plan's parts (Arrow tables), read and embedded in batches."""
        return ray.data.from_arrow_refs(blocks).map_batches(
            read_batch,
            batch_size=self.batch_size,
            batch_format="pyarrow",
            fn_kwargs={"settings": self.settings},
            num_cpus=1,
        ).map_batches(
            ModelActor,
            batch_size=self.batch_size,
            batch_format="numpy",
            fn_constructor_kwargs={"recipe": self.recipe, "options": self.settings.options, "device": self.device,
                                   "threads": self.threads},
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=self.actors),
            num_cpus=1,
            num_gpus=1 if self.gpus else None,
            memory=MODEL_ACTOR_MEMORY,
        )


def _plan_block(request: Request) -> pa.Table:
    items = request.items
    return pa.table({
        "part": [request.part] * len(items),
        "image_id": [i.image_id for i in items],
        "uri": [i.uri for i in items],
        "sha256": pa.array([i.sha256 for i in items], pa.string()),
        "needs_thumbnail": [i.needs_thumbnail for i in items],
    })


def read_batch(rows: pa.Table, settings: ReaderSettings) -> dict[str, np.ndarray]:
    """The CPU stage: read and decode a batch as a local reader worker does (embed.reader),
    then as columns: the decoded pixels, the JPEG bytes left for the device, thumbnails, reasons."""
    items = tuple(Item(r["image_id"], r["uri"], r["sha256"], r["needs_thumbnail"]) for r in rows.to_pylist())
    loaded = ImageBatches(settings)[Request(part="", last_in_part=False, items=items)]
    crop = settings.options.preprocessing.crop
    n = len(items)
    columns = {
        "part": np.asarray(rows.column("part").to_pylist(), dtype=object),
        "image_id": np.asarray([i.image_id for i in items], dtype=object),
        "uri": np.asarray([i.uri for i in items], dtype=object),
        "needs_thumbnail": np.asarray([i.needs_thumbnail for i in items], dtype=bool),
        "state": np.full(n, FAILED, np.int8),
        "pixels": np.zeros((n, 3, crop, crop), np.uint8),
        "jpeg": np.full(n, b"", dtype=object),
        "reason": np.full(n, "", dtype=object),
        **_thumbnail_columns(items, loaded.thumbnails),
    }
    row = {item.image_id: index for index, item in enumerate(items)}
    decoded = [row[item.image_id] for item in loaded.decoded]
    columns["state"][decoded] = DECODED
    if decoded:
        columns["pixels"][decoded] = loaded.pixels.numpy()
    for item, jpeg in zip(loaded.jpeg_items, loaded.jpegs):
        columns["state"][row[item.image_id]] = JPEG
        columns["jpeg"][row[item.image_id]] = jpeg.numpy().tobytes()
    for item, reason in loaded.errors:
        columns["reason"][row[item.image_id]] = reason
    return columns


def _thumbnail_columns(items: Iterable[Item], thumbnails: list[Thumbnail]) -> dict[str, np.ndarray]:
    by_id = {t.image_id: t for t in thumbnails}
    found = [by_id.get(item.image_id) for item in items]
    return {
        "thumbnail": np.asarray([t.jpeg if t else b"" for t in found], dtype=object),
        "thumbnail_width": np.asarray([t.width if t else 0 for t in found], np.int32),
        "thumbnail_height": np.asarray([t.height if t else 0 for t in found], np.int32),
    }


def _loaded_batch(batch: dict[str, np.ndarray]) -> LoadedBatch:
    """The CPU stage's columns back into what the local runner's model step takes."""
    items = [Item(i, u, None, bool(t)) for i, u, t in zip(batch["image_id"], batch["uri"], batch["needs_thumbnail"])]
    state = batch["state"]
    loaded = LoadedBatch(Request(part="", last_in_part=False, items=tuple(items)))
    decoded = np.flatnonzero(state == DECODED)
    loaded.decoded = [items[i] for i in decoded]
    if len(decoded):
        loaded.pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][decoded]))
    loaded.thumbnails = [Thumbnail(items[i].image_id, batch["thumbnail"][i], int(batch["thumbnail_width"][i]),
                                   int(batch["thumbnail_height"][i])) for i in decoded if len(batch["thumbnail"][i])]
    for i in np.flatnonzero(state == JPEG):
        loaded.jpeg_items.append(items[i])
        loaded.jpegs.append(torch.frombuffer(bytearray(batch["jpeg"][i]), dtype=torch.uint8))
    loaded.errors = [(items[i], str(batch["reason"][i])) for i in np.flatnonzero(state == FAILED)]
    return loaded


class ModelActor:
    """The model stage: one model per actor, built once by the job's own loader."""

    def __init__(self, recipe: Any, options: ImageOptions, device: str, threads: int = 0):
        import ray

        load_model = ray.get(recipe) if isinstance(recipe, ray.ObjectRef) else recipe
        if threads:
            torch.set_num_threads(threads)
        self.backbone: Backbone = load_model(device=device)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        embedded = embed_batch(self.backbone, _loaded_batch(batch), self.options)
        return _result_columns(batch, embedded, self.backbone)


def _result_columns(batch: dict[str, np.ndarray], embedded: Embedded, backbone: Backbone) -> dict[str, np.ndarray]:
    """One row per input row: its vector (and class scores) or the reason it has none, its thumbnail."""
    ids = list(batch["image_id"])
    row = {image_id: index for index, image_id in enumerate(ids)}
    n = len(ids)
    vectors = np.zeros((n, backbone.width), np.float32)
    ok = np.zeros(n, bool)
    done = [row[item.image_id] for item in embedded.items]
    ok[done] = True
    vectors[done] = embedded.vectors
    reasons = np.full(n, "", dtype=object)
    for item, reason in embedded.errors:
        reasons[row[item.image_id]] = reason
    items = [Item(i, u) for i, u in zip(ids, batch["uri"])]
    columns = {"part": batch["part"], "image_id": batch["image_id"], "uri": batch["uri"], "ok": ok,
               "vector": vectors, "reason": reasons, **_thumbnail_columns(items, embedded.thumbnails)}
    if backbone.head is not None:
        scores = np.zeros((n, len(backbone.classes)), np.float32)
        if embedded.scores:
            scores[done] = np.concatenate(embedded.scores)
        columns["scores"] = scores
    return columns


class PartGatherer:
    """Rows coming back from the cluster, in any order, gathered into the plan's parts
    (``sizes``: each part's name and number of images); a part is complete when each of its
    images has come back once (a row seen again, from a batch Ray retried, is ignored)."""

    def __init__(self, sizes: dict[str, int], width: int):
        self.width, self.sizes = width, sizes
        self.rows: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.published: set[str] = set()

    def add(self, batch: dict[str, np.ndarray]) -> tuple[int, list[Part]]:
        """Take a batch of result rows: (rows new to their part, the parts now complete)."""
        new, touched = 0, set()
        for index, (name, image_id) in enumerate(zip(batch["part"], batch["image_id"])):
            if name not in self.sizes:
                raise RuntimeError(f"Ray returned a row of part {name!r}, which the plan does not have")
            if name in self.published or image_id in self.rows[name]:
                continue
            self.rows[name][image_id] = {key: column[index] for key, column in batch.items()}
            touched.add(name)
            new += 1
        complete = [name for name in touched if len(self.rows[name]) == self.sizes[name]]
        return new, [self._part(name) for name in complete]

    def _part(self, name: str) -> Part:
        rows = self.rows.pop(name)
        self.published.add(name)
        items = [Item(image_id, str(rows[image_id]["uri"])) for image_id in sorted(rows)]  # the plan's order
        ok = [item for item in items if rows[item.image_id]["ok"]]
        vectors = np.stack([rows[i.image_id]["vector"] for i in ok]) if ok else np.zeros((0, self.width), np.float32)
        embedded = Embedded(
            items=ok,
            vectors=vectors.astype(np.float32, copy=False),
            thumbnails=[Thumbnail(i.image_id, bytes(r["thumbnail"]), int(r["thumbnail_width"]),
                                  int(r["thumbnail_height"]))
                        for i in items if len((r := rows[i.image_id])["thumbnail"])],
            errors=[(i, str(rows[i.image_id]["reason"])) for i in items if not rows[i.image_id]["ok"]],
        )
        if ok and "scores" in rows[ok[0].image_id]:
            embedded.scores = [np.stack([rows[i.image_id]["scores"] for i in ok])]
        part = Part(name, self.width)
        part.add(embedded)
        return part

    def check_all_published(self) -> None:
        missing = {name: size - len(self.rows.get(name, {}))
                   for name, size in self.sizes.items() if name not in self.published}
        if missing:
            raise RuntimeError(f"Ray finished without returning every image of parts {missing}: nothing of them "
                               "was written; rerun the same command to do them")
