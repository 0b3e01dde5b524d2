"""Reading images from storage in parallel workers, ahead of the model.

The job streams ``Request``s (one batch of images each) into a torch DataLoader
as its sampler; each worker process turns a request into a ``LoadedBatch`` by
fetching the files (one concurrent ``cat`` per batch on S3) and decoding them.
The DataLoader keeps ``prefetch_factor`` batches per worker in flight, so reads
and decoding overlap with the model and memory stays bounded whatever the
number of images.

Workers receive plain settings (``ReaderSettings``) and build their own
filesystem clients: a client made in the parent does not survive a fork.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from embed.preprocess import (
    ImageError,
    ImageOptions,
    Thumbnail,
    check_bytes,
    decode,
    is_jpeg,
    make_thumbnails,
    open_image,
)
from mining.core.config import S3Config
from mining.core.lake import open_url, path_of, read_many

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """An image to embed, as the plan found it in the images table."""

    image_id: str
    uri: str
    sha256: str | None = None
    needs_thumbnail: bool = True


@dataclass(frozen=True)
class Request:
    """One batch to read. ``part`` groups batches into the unit the job publishes."""

    part: str
    last_in_part: bool
    items: tuple[Item, ...]


@dataclass
class LoadedBatch:
    """What a worker hands back for a Request.

    decoded: images decoded by the worker, ``pixels`` uint8 (n, 3, crop, crop) theirs.
    thumbnails: encoded thumbnails of the decoded images that need one.
    jpegs: JPEG images left for the model's device to decode (1-D uint8 tensors).
    errors: (item, reason) for every image that could not be read or decoded.
    """

    request: Request
    decoded: list[Item] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    thumbnails: list[Thumbnail] = field(default_factory=list)
    jpeg_items: list[Item] = field(default_factory=list)
    jpegs: list[torch.Tensor] = field(default_factory=list)
    errors: list[tuple[Item, str]] = field(default_factory=list)

    def pin_memory(self) -> LoadedBatch:
        # DataLoader(pin_memory=True) calls this in its pinning thread: page-locked
        # buffers make the host-to-GPU copies asynchronous.
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        self.jpegs = [j.pin_memory() for j in self.jpegs]
        return self


@dataclass(frozen=True)
class ReaderSettings:
    s3: S3Config
    options: ImageOptions
    decode_on_device: bool  # leave JPEGs undecoded for the model's device


class ImageBatches(Dataset):
    """``dataset[request]`` reads and decodes one batch of images."""

    def __init__(self, settings: ReaderSettings):
        self.settings = settings

    def __getitem__(self, request: Request) -> LoadedBatch:
        out = LoadedBatch(request)
        prepared = []
        for item, data in zip(request.items, self._fetch(request.items)):
            try:
                data = check_bytes(data, item.sha256)
                if self.settings.decode_on_device and is_jpeg(open_image(data, self.settings.options.max_pixels)):
                    out.jpeg_items.append(item)
                    out.jpegs.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
                    continue
                prepared.append(decode(data, self.settings.options))
            except ImageError as e:
                out.errors.append((item, e.reason))
                continue
            except Exception as e:  # a decoder bug on one odd file must not end a run of millions
                log.warning("unexpected %s decoding %s: %s", type(e).__name__, item.uri, e)
                out.errors.append((item, f"undecodable: {type(e).__name__}: {e}"))
                continue
            out.decoded.append(item)
        if prepared:
            out.pixels = torch.stack([p.pixels for p in prepared])
        out.thumbnails = make_thumbnails(out.decoded, prepared, self.settings.options.thumbnail_quality)
        return out

    def _fetch(self, items: tuple[Item, ...]) -> list[bytes | BaseException]:
        """The bytes of each item, or the exception reading it raised."""
        by_storage: dict[str, list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            by_storage[item.uri.split("://", 1)[0] if "://" in item.uri else "file"].append(index)
        found: list[bytes | BaseException] = [b""] * len(items)
        for indices in by_storage.values():
            fs, _ = open_url(items[indices[0]].uri, self.settings.s3)
            contents = read_many(fs, [path_of(items[i].uri) for i in indices])
            for i, data in zip(indices, contents):
                found[i] = data
        return found


def make_loader(requests: Iterable[Request], settings: ReaderSettings, *, workers: int, pin_memory: bool,
                not_forked: bool = False, dataset: Dataset | None = None) -> DataLoader:
    """A DataLoader yielding one LoadedBatch per request, in request order; ``not_forked``: its
    workers start from a fork server (for reads from S3); ``dataset``: another reader of requests
    than ``ImageBatches(settings)`` (embed.crops.CropBatches)."""
    return DataLoader(
        dataset if dataset is not None else ImageBatches(settings),
        batch_size=None,  # each request already is a batch
        sampler=requests,
        num_workers=workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        # Reading from S3, not fork: the parent holds s3fs's event-loop thread, and a forked child
        # inherits its state mid-use; one segfaulted reading from S3 in a CI run. Local reads keep
        # fork (faster to start, and what the tests' injected decoder faults rely on).
        multiprocessing_context="forkserver" if workers and not_forked else None,
    )


def _identity(batch: LoadedBatch) -> LoadedBatch:
    return batch


def read_all(items: list[Item], settings: ReaderSettings, *, workers: int, batch_size: int = 32,
             progress=None) -> tuple[list[Item], torch.Tensor, list[tuple[Item, str]]]:
    """Read and decode ``items`` whole (training holds them in memory): the items decoded,
    their pixels uint8 (n, 3, crop, crop) in that order, and (item, reason) for the others.
    Decoding on the CPU workers only (``settings.decode_on_device`` is ignored)."""
    settings = ReaderSettings(settings.s3, settings.options, decode_on_device=False)
    requests = [
        Request(
            part="all", last_in_part=start + batch_size >= len(items), items=tuple(items[start : start + batch_size])
        )
        for start in range(0, len(items), batch_size)
    ]
    decoded, pixels, errors = [], [], []
    for batch in make_loader(requests, settings, workers=workers, pin_memory=False):
        decoded += batch.decoded
        if batch.pixels is not None:
            pixels.append(batch.pixels)
        errors += batch.errors
        if progress is not None:
            progress(len(batch.request.items))
    crop = settings.options.preprocessing.crop
    return decoded, torch.cat(pixels) if pixels else torch.zeros((0, 3, crop, crop), dtype=torch.uint8), errors
