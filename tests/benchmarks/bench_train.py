"""Benchmark: `edgemine train` and `edgemine score` against the loops a user would write.

The same labelled JPEG files (synthetic street scenes, labelled with their true class) go through:

Training, the same epochs, image size, batch size, seed and optimiser (AdamW) in both:
(a) plain: a torchvision training loop: a Dataset opening each file with PIL every
    epoch, ``transforms.v2`` (random resized crop, flip, to float, normalise),
    a DataLoader with the same worker count, ResNet18 from seeded random weights;
(b) edgemine: ``train_model`` on a lake holding the same images and labels: files
    read once through the embed reader, augmentations on the held uint8 pixels,
    validation each epoch, checkpoints and the published model included.
Rates are training images per second of wall time, each epoch counted.

Scoring the same images with the model (b) trained:
(c) naive: for each file, PIL open, resize and centre crop, the plain torchvision
    model (the trained weights) on that one image, softmax;
(d) edgemine: ``score_lake``: predictions and embeddings written to the lake.
The script checks (c) and (d) give the same probabilities (max absolute difference).

    python tests/benchmarks/bench_train.py [--images 128] [--epochs 1] [--image-size 96] [--device auto] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import torch
import torchvision
import torchvision.transforms.v2 as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from embed.finetune import MEAN, STD, TrainSettings
from jobs.demo_data import draw_scene, encode_jpeg, sample_scene, scene_rng
from jobs.ingest_images import ingest_images
from jobs.score import score_lake
from jobs.train import TrainRequest, train_model
from mining.core import tables
from mining.core.config import EmbedConfig
from mining.core.devices import resolve_device
from mining.core.lake import Lake
from mining.core.schema import LABELS, image_id_from_bytes, make_rows
from mining.core.sql import LakeDB
from tests.benchmarks.machine import describe

SEED = 0


def make_images(folder: Path, n: int, width: int, height: int) -> list[tuple[Path, str]]:
    """``n`` JPEG scenes and their true class."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        rng = scene_rng(SEED, i)
        scene = sample_scene(rng, i, width, height, 0.05)
        path = folder / f"{i:06d}.jpg"
        path.write_bytes(encode_jpeg(draw_scene(scene, rng, width, height)))
        out.append((path, scene.true_label))
    return out


class Files(Dataset):
    def __init__(self, files: list[tuple[Path, int]], transform):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path, label = self.files[i]
        return self.transform(Image.open(path).convert("RGB")), label


def plain_training(files: list[tuple[Path, str]], classes: list[str], settings: TrainSettings, workers: int) -> float:
    """The torchvision loop a user writes; images/s over all epochs."""
    transform = T.Compose([T.ToImage(), T.RandomResizedCrop(settings.image_size, scale=(0.6, 1.0), antialias=True),
                           T.RandomHorizontalFlip(), T.ColorJitter(0.2, 0.2, 0.2), T.ToDtype(torch.float32, scale=True),
                           T.Normalize(MEAN, STD)])
    data = Files([(p, classes.index(label)) for p, label in files], transform)
    torch.manual_seed(SEED)
    model = torchvision.models.resnet18(num_classes=len(classes)).to(settings.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    loader = DataLoader(data, batch_size=settings.batch_size, shuffle=True, num_workers=workers, drop_last=True)
    started = time.perf_counter()
    seen = 0
    for _ in range(settings.epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x.to(settings.device)), y.to(settings.device))
            loss.backward()
            optimizer.step()
            seen += len(y)
    return seen / (time.perf_counter() - started)


def naive_scoring(
    files: list[tuple[Path, str]], state: dict, classes: list[str], settings: TrainSettings
) -> tuple[float, dict]:
    """One image at a time: PIL, resize and crop as the model was trained, the plain model, softmax."""
    p = settings.preprocessing()
    transform = T.Compose([T.ToImage(), T.Resize(p.resize, antialias=True), T.CenterCrop(p.crop),
                           T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])
    model = torchvision.models.resnet18(num_classes=len(classes))
    model.load_state_dict(state)
    model = model.eval().to(settings.device)
    scores = {}
    started = time.perf_counter()
    with torch.no_grad():
        for path, _ in files:
            data = path.read_bytes()
            x = transform(Image.open(io.BytesIO(data)).convert("RGB")).unsqueeze(0).to(settings.device)
            scores[image_id_from_bytes(data)] = torch.softmax(model(x), 1).cpu().numpy()[0]
    return len(files) / (time.perf_counter() - started), scores


def labelled_lake(work: Path, files: list[tuple[Path, str]]) -> Lake:
    lake = Lake(str(work / "lake"))
    ingest_images(lake, str(files[0][0].parent), show_progress=False)
    ids = [image_id_from_bytes(p.read_bytes()) for p, _ in files]
    now = datetime.now(UTC)
    rows = make_rows(
        LABELS,
        len(ids),
        label_id=ids,
        image_id=ids,
        label=[label for _, label in files],
        annotator="bench",
        batch="bench",
        format="coco",
        labelled_at=now,
        imported_at=now,
    )
    tables.append(lake, LABELS, rows, tables.commit_info("bench"))
    return lake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the JPEGs (default: 640x480)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=96, help="model input side (default 96; 224 on a GPU)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="decoding processes in every variant (default 2)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = resolve_device(args.device)
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size, device=device,
                             patience=args.epochs + 1, seed=SEED)

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        files = make_images(work / "images", args.images, width, height)
        lake = labelled_lake(work, files)
        classes = sorted({label for _, label in files})
        plain_rate = plain_training(files, classes, settings, args.workers)
        trained = train_model(lake, TrainRequest("bench", base="random", val_fraction=0.1, workers=args.workers),
                              settings, show_progress=False)
        train_rate = trained.epochs * trained.train_images / trained.seconds
        state = torch.load(io.BytesIO(lake.fs.cat_file(f"{lake.model_dir('bench')}/model.pt")), weights_only=True)[
            "state_dict"
        ]
        naive_rate, naive_scores = naive_scoring(files, state, classes, settings)
        scored = score_lake(lake, "bench", EmbedConfig(device=device, workers=args.workers, batch_size=args.batch_size),
                            show_progress=False)
        with LakeDB(lake) as db:
            got = db.query("SELECT image_id, scores FROM predictions").to_pylist()
        difference = max(
            float(np.abs(np.array([dict(r["scores"])[c] for c in classes]) - naive_scores[r["image_id"]]).max())
            for r in got
        )
    score_rate = scored.embedded / scored.seconds
    result = {
        "machine": describe({"torch": torch.__version__, "torchvision": torchvision.__version__},
                            gpu=torch.cuda.get_device_name(device) if device.startswith("cuda") else None),
        "device": device, "images": args.images, "size": f"{width}x{height}", "epochs": args.epochs,
        "image_size": args.image_size, "batch_size": args.batch_size, "workers": args.workers,
        "plain_train_images_per_s": round(plain_rate, 1),
        "edgemine_train_images_per_s": round(train_rate, 1),
        "edgemine_fit_only_images_per_s": round(trained.train_images_per_second, 1),
        "train_vs_plain": round(train_rate / plain_rate, 2),
        "naive_score_images_per_s": round(naive_rate, 1),
        "edgemine_score_images_per_s": round(score_rate, 1),
        "score_vs_naive": round(score_rate / naive_rate, 2),
        "max_probability_difference": round(difference, 5),
        "train_seconds": round(trained.seconds, 1), "score_seconds": round(scored.seconds, 1),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"{result['machine']}; {args.images} JPEGs {width}x{height}, "
        f"{args.epochs} epoch(s) at {args.image_size} px on {device}"
    )
    print(f"  train: plain torchvision loop {plain_rate:7.1f} images/s, edgemine train {train_rate:7.1f} "
          f"({result['train_vs_plain']}x; fit alone {trained.train_images_per_second:.1f})")
    print(
        f"  score: naive loop {naive_rate:7.1f} images/s, "
        f"edgemine score {score_rate:7.1f} ({result['score_vs_naive']}x), "
        f"max probability difference {difference:.5f}"
    )


if __name__ == "__main__":
    main()
