"""Benchmark: `edgemine embed` with the local runner against `--runner ray`, same lake, same machine.

The same JPEG files (bench_embed's synthetic street scenes) are registered in one lake, copied,
and embedded twice with the same settings:

(a) local: ``embed_lake`` as `edgemine embed` runs it (DataLoader workers, one per core, and the
    model in this process);
(b) ray: ``embed_lake(runner=Runner("ray"))`` on a Ray started on this machine with every core
    (a decoding stage of Ray tasks, the model in an actor pool, parts committed by this process).

Images/s counts the whole job (plan, decode, embed, commits; for Ray also its actors' start
and model load), not the cluster's own start, which is reported beside it. ``--rounds`` runs
the pair that many times, alternating, each on a fresh copy of the lake, and keeps each
runner's best round (a machine shared with other work slows one round, not all). The script
checks that both lakes hold the same vectors (within 1e-5).

    python tests/benchmarks/bench_ray.py [--images 384] [--size 640x480] [--backbone resnet18] [--rounds 3]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import deltalake  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from embed.backbones import BACKBONES  # noqa: E402
from jobs.embed_images import embed_lake  # noqa: E402
from jobs.ingest_images import ingest_images  # noqa: E402
from jobs.runners import Runner  # noqa: E402
from mining.core.config import EmbedConfig  # noqa: E402
from mining.core.lake import Lake  # noqa: E402
from mining.core.sql import LakeDB  # noqa: E402
from tests.benchmarks.bench_embed import make_images  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402


def vectors(lake: Lake) -> dict[str, np.ndarray]:
    with LakeDB(lake) as db:
        table = db.query("SELECT image_id, embedding FROM embeddings")
    return {i: np.asarray(e, np.float32) for i, e in zip(table.column("image_id").to_pylist(),
                                                        table.column("embedding").to_pylist())}


def timed(lake: Lake, config: EmbedConfig, runner: Runner) -> tuple[float, dict]:
    started = time.perf_counter()
    summary = embed_lake(lake, config, show_progress=False, runner=runner)
    seconds = time.perf_counter() - started
    assert summary.embedded == summary.to_embed and not summary.errors, summary
    return summary.embedded / seconds, summary.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the JPEGs (default: 640x480)")
    parser.add_argument("--backbone", default="resnet18", choices=list(BACKBONES))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--part-size", type=int, default=128, help="images per committed part (both runners)")
    parser.add_argument("--scenes", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3, help="local-then-ray pairs; the best of each is kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    config = EmbedConfig(backbone=args.backbone, weights="random", seed=0, device="cpu", batch_size=args.batch_size,
                         part_size=args.part_size)

    with tempfile.TemporaryDirectory(prefix="bench-ray-", dir="/tmp") as tmp:
        work = Path(tmp)
        paths = make_images(work / "images", args.images, width, height, args.scenes)
        base = Lake(str(work / "base"))
        ingest_images(base, str(paths[0].parent), show_progress=False)  # registering is not embedding: untimed
        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 _temp_dir=str(work / "ray-tmp"))
        cluster_start = time.perf_counter() - started
        local_rates, ray_rates = [], []
        try:
            for round_ in range(args.rounds):
                local_lake, ray_lake = (Lake(str(shutil.copytree(base.root, work / f"{name}-{round_}")))
                                        for name in ("local", "ray"))
                rate, local = timed(local_lake, config, Runner("local"))
                local_rates.append(rate)
                rate, on_ray = timed(ray_lake, config, Runner("ray"))
                ray_rates.append(rate)
        finally:
            ray.shutdown()
        local_rate, ray_rate = max(local_rates), max(ray_rates)
        left, right = vectors(local_lake), vectors(ray_lake)
        assert left.keys() == right.keys()
        largest_difference = max(float(np.abs(left[k] - right[k]).max()) for k in left)

    result = {
        "machine": describe({"ray": ray.__version__, "torch": torch.__version__, "deltalake": deltalake.__version__}),
        "backbone": args.backbone,
        "images": args.images,
        "size": f"{width}x{height}",
        "batch_size": args.batch_size,
        "part_size": args.part_size,
        "rounds": args.rounds,
        "local_images_per_s": round(local_rate, 1),
        "ray_images_per_s": round(ray_rate, 1),
        "local_rounds": [round(r, 1) for r in local_rates],
        "ray_rounds": [round(r, 1) for r in ray_rates],
        "ray_vs_local": round(ray_rate / local_rate, 2),
        "ray_cluster_start_s": round(cluster_start, 1),
        "parts": [local["parts"], on_ray["parts"]],
        "largest_vector_difference": largest_difference,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{result['machine']}\n{args.backbone} (random weights), {args.images} JPEGs {width}x{height}, batches of "
          f"{args.batch_size}, parts of {args.part_size}, on CPU")
    print(f"  local runner : {local_rate:7.1f} images/s (best of {result['local_rounds']})")
    print(f"  ray runner   : {ray_rate:7.1f} images/s (best of {result['ray_rounds']}; "
          f"{result['ray_vs_local']}x local; Ray's own start {cluster_start:.1f} s, not counted)")
    print(f"  same vectors : largest difference {largest_difference:.2e}")


if __name__ == "__main__":
    main()
