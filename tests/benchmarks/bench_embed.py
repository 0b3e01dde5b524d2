"""Benchmark: `edgemine embed` against the loop a user would write, and against
the model alone.

The same JPEG files (synthetic street scenes at a camera resolution) go through:

(a) naive: for each file, ``PIL.Image.open`` -> the weights' own
    preprocessing as torchvision transforms -> the plain model (torchvision's
    ResNet, timm's ``tf_efficientnet_lite0``) on that one image, vectors written
    to Parquet at the end;
(b) the job: ``embed_lake`` on a lake holding the same images (DataLoader
    workers, batches, reduced-size JPEG decoding, BN folded, channels_last; on
    CUDA also bf16 and GPU JPEG decoding), thumbnails and errors included;
(c) ceiling: random tensors through the job's model at the job's batch size,
    no decoding or I/O: the most the job could reach on this machine.

Both produce vectors from the same weights (seeded random, or ``--weights imagenet``),
and the script checks they agree (cosine), so the comparison is like for like.

    python tests/benchmarks/bench_embed.py [--images 384] [--size 1920x1080] [--device auto]
        [--backbone resnet18|resnet34|efficientnet-lite0] [--weights random|imagenet] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402

from embed.backbones import BACKBONES, get_backbone  # noqa: E402
from embed.model import load_backbone, network_with_weights  # noqa: E402
from jobs.demo_data import draw_scene, encode_jpeg, sample_scene, scene_rng  # noqa: E402
from jobs.embed_images import DEFAULT_BATCH, embed_lake  # noqa: E402
from jobs.ingest_images import ingest_images  # noqa: E402
from mining.core.config import EmbedConfig  # noqa: E402
from mining.core.devices import resolve_device  # noqa: E402
from mining.core.lake import Lake  # noqa: E402
from mining.core.sql import LakeDB  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

SEED = 0


def make_images(folder: Path, n: int, width: int, height: int, scenes: int) -> list[Path]:
    """``n`` JPEG files. Beyond ``scenes`` they repeat a scene's pixels with a
    JPEG comment that makes each file's content (and so its image_id) unique."""
    folder.mkdir(parents=True, exist_ok=True)
    drawn = []
    for i in range(min(n, scenes)):
        rng = scene_rng(SEED, i)
        drawn.append(encode_jpeg(draw_scene(sample_scene(rng, i, width, height, 0.05), rng, width, height)))
    paths = []
    for i in range(n):
        data = drawn[i % len(drawn)]
        comment = f"copy {i}".encode()
        data = data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]
        path = folder / f"{i:06d}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


def plain_model(config: EmbedConfig) -> tuple[torch.nn.Module, torchvision.transforms.Compose]:
    """The network as its library makes it, with the job's weights and its head removed, and
    the weights' preprocessing as torchvision transforms: what a user builds by hand."""
    spec = get_backbone(config.backbone)
    model, _ = network_with_weights(spec, config.weights, seed=SEED)
    setattr(model, spec.head, torch.nn.Identity())
    p = spec.preprocessing
    transform = torchvision.transforms.Compose([
        torchvision.transforms.Resize(p.resize), torchvision.transforms.CenterCrop(p.crop),
        torchvision.transforms.ToTensor(), torchvision.transforms.Normalize(p.mean, p.std)])
    return model, transform


def naive(paths: list[Path], config: EmbedConfig, device: torch.device,
          out: Path) -> tuple[float, dict[str, np.ndarray]]:
    """What a user writes first: one image at a time through PIL and the model."""
    model, transform = plain_model(config)
    model = model.eval().to(device)
    started = time.perf_counter()
    names, vectors = [], []
    with torch.no_grad():
        for path in paths:
            image = Image.open(path).convert("RGB")
            x = transform(image).unsqueeze(0).to(device)
            vectors.append(torch.nn.functional.normalize(model(x), dim=1).cpu().numpy()[0])
            names.append(path.name)
    matrix = np.stack(vectors).astype(np.float32)
    pq.write_table(
        pa.table(
            {"file": names, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])}
        ),
        out,
    )
    seconds = time.perf_counter() - started
    return len(paths) / seconds, dict(zip(names, matrix))


def job(paths: list[Path], work: Path, config: EmbedConfig) -> tuple[float, dict, dict[str, np.ndarray]]:
    lake = Lake(str(work / "lake"))
    ingest_images(lake, str(paths[0].parent), show_progress=False)  # registering is not embedding: untimed
    summary = embed_lake(lake, config, show_progress=False)
    assert summary.embedded == len(paths), summary
    with LakeDB(lake) as db:
        table = db.query("SELECT i.uri, e.embedding FROM embeddings e JOIN images i USING (image_id)")
    vectors = {
        Path(u).name: np.asarray(e, np.float32)
        for u, e in zip(table.column("uri").to_pylist(), table.column("embedding").to_pylist())
    }
    return summary.embedded / summary.seconds, summary.to_dict(), vectors


def ceiling(config: EmbedConfig, batches: int) -> float:
    """Random pixels through the job's model at the job's batch size: no decode, no I/O."""
    backbone = load_backbone(config.backbone, config.weights, seed=SEED, device=config.device)
    pixels = torch.randint(0, 256, (config.batch_size, 3, 224, 224), dtype=torch.uint8)
    if backbone.uses_cuda:
        pixels = pixels.pin_memory()
    backbone.embed(pixels)  # warm-up: kernel selection, allocations
    started = time.perf_counter()
    for _ in range(batches):
        backbone.embed(pixels)
    return batches * config.batch_size / (time.perf_counter() - started)


def machine(device: torch.device) -> str:
    return describe({"torch": torch.__version__, "torchvision": torchvision.__version__},
                    gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument(
        "--naive-images", type=int, help="images through the naive loop (default: all; fewer on a GPU run)"
    )
    parser.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT of the JPEGs (default: 1920x1080)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="resnet18", choices=list(BACKBONES))
    parser.add_argument("--weights", default="random", help="random (seeded) or imagenet")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="default 0: the job's own choice (32 on CPU, 256 on CUDA)"
    )
    parser.add_argument(
        "--scenes", type=int, default=48, help="distinct scenes drawn; the other images are byte-distinct copies"
    )
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: one per core)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(resolve_device(args.device))
    batch_size = args.batch_size or DEFAULT_BATCH[device.type]
    config = EmbedConfig(
        backbone=args.backbone, weights=args.weights, seed=SEED, device=str(device), batch_size=batch_size,
        workers=args.workers, part_size=50_000,
    )

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        work = Path(tmp)
        paths = make_images(work / "images", args.images, width, height, args.scenes)
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        naive_rate, naive_vectors = naive(
            paths[: args.naive_images or len(paths)], config, device, work / "naive.parquet"
        )
        job_rate, summary, job_vectors = job(paths, work, config)
        ceiling_rate = ceiling(config, batches=max(3, min(50, args.images // batch_size)))
    agreement = min(float(naive_vectors[k] @ job_vectors[k]) for k in naive_vectors)
    result = {
        "machine": machine(device),
        "backbone": args.backbone,
        "weights": args.weights,
        "device": str(device),
        "decode": summary["decode"],
        "images": args.images,
        "size": f"{width}x{height}",
        "jpeg_mb": round(megabytes, 1),
        "batch_size": batch_size,
        "naive_images_per_s": round(naive_rate, 1),
        "job_images_per_s": round(job_rate, 1),
        "ceiling_images_per_s": round(ceiling_rate, 1),
        "job_vs_naive": round(job_rate / naive_rate, 2),
        "job_vs_ceiling": round(job_rate / ceiling_rate, 3),
        "min_cosine_job_vs_naive": round(agreement, 5),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"{result['machine']}; {args.backbone} ({args.weights}); {args.images} JPEGs {width}x{height} "
        f"({megabytes:.0f} MB) on {device}, decode in {summary['decode']}"
    )
    print(f"  naive loop     {naive_rate:9.1f} images/s")
    print(
        f"  edgemine embed {job_rate:9.1f} images/s   {result['job_vs_naive']}x naive, "
        f"{100 * result['job_vs_ceiling']:.0f}% of the ceiling"
    )
    print(f"  model ceiling  {ceiling_rate:9.1f} images/s   (random tensors, batch {batch_size})")
    print(f"  vectors agree with the naive loop's: min cosine {agreement:.5f}")


if __name__ == "__main__":
    main()
