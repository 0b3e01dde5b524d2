"""Benchmark (the retrain loop's proof): does retraining on the edge cases the reviewer
loop found fix them, and break nothing else?

On a glare demo lake (hidden truth in ``demo_truth``), seeded throughout:

1. a held-out evaluation set: the images whose id hash falls in the top ``--eval``
   share (mining.models.validation_fraction_of; disjoint from every training split),
   labelled with their true class as batch ``eval``, never trained on;
2. a first labelling round: a random ``--base`` share of the other images, batch ``base``;
   model **before** = `edgemine train` on it (random weights, as nothing can be downloaded
   here), then `edgemine score`;
3. the reviewer loop (what `edgemine similar POSITIVES --not NEGATIVES` ranks, as in
   bench_mining): one flagged glare image outside the evaluation set, ``--pages`` pages of
   20; every image marked an edge case is labelled with its true class, batch ``glare``;
4. model **after** = `edgemine loop` semantics: train from *before* on base + glare, score,
   metrics of both versions on the held-out slices, the regression check, the card.

Reported: accuracy of before and after on the held-out glare images and the held-out
other images, and the regression alarms (none expected beyond the margin).

    python tests/benchmarks/bench_loop.py [--images 1500] [--pages 5] [--epochs 6] [--image-size 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torchvision

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from embed.finetune import TrainSettings  # noqa: E402
from jobs.loop import run_loop  # noqa: E402
from jobs.train import TrainRequest  # noqa: E402
from mining import tables  # noqa: E402
from mining.config import Config, EmbedConfig  # noqa: E402
from mining.lake import Lake  # noqa: E402
from mining.models import validation_fraction_of  # noqa: E402
from mining.schema import LABELS, make_rows  # noqa: E402
from mining.search import rank  # noqa: E402
from mining.sql import LakeDB  # noqa: E402
from tests.benchmarks.bench_mining import PAGE, build_lake  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

GLARE = "i.image_id IN (SELECT image_id FROM demo_truth WHERE glare)"
HELD_OUT = "list_contains(t.batches, 'eval')"
SLICES = {"heldout_glare": f"{HELD_OUT} AND {GLARE}", "heldout_other": f"{HELD_OUT} AND NOT ({GLARE})"}


def label(lake: Lake, image_ids: list[str], truth: dict[str, str], batch: str) -> None:
    n = len(image_ids)
    rows = make_rows(LABELS, n, label_id=[f"{batch}-{i}" for i in image_ids], image_id=image_ids,
                     label=[truth[i] for i in image_ids], annotator="bench", batch=batch, format="coco",
                     labelled_at=datetime(2026, 11, 1, tzinfo=UTC))
    tables.append(lake, LABELS, rows, tables.commit_info("bench-loop", batch=batch))


def reviewer_finds(index, edge: np.ndarray, allowed: np.ndarray, seed: int, pages: int, uncertainty) -> list[int]:
    """Index positions the simulated reviewer marked as edge cases in ``pages`` pages (seed included)."""
    positives, negatives, seen = [seed], [], [seed]
    outside = np.flatnonzero(~allowed)  # held-out images are never shown: they are for evaluation
    for _ in range(pages):
        hits = rank(index, index.vectors[positives], index.vectors[negatives] if negatives else None, PAGE,
                    exclude=np.concatenate([np.array(seen), outside]), seed=len(seen), uncertainty=uncertainty,
                    positive_positions=np.array(positives), negative_positions=np.array(negatives, np.int64))
        for position in index.positions([h.image_id for h in hits]):
            seen.append(position)
            (positives if edge[position] else negatives).append(position)
    return positives


def accuracy(lake: Lake, version: str, slice_sql: str) -> tuple[float, int]:
    with LakeDB(lake, read_only=False) as db:
        got = db.query(f"""SELECT avg((p.label = t.true_label)::int) AS acc, count(*) AS n
            FROM predictions p JOIN demo_truth t USING (image_id) JOIN labels l USING (image_id)
            JOIN images i USING (image_id)
            WHERE p.model_version = '{version}' AND l.batch = 'eval' AND {slice_sql.replace(HELD_OUT + ' AND ', '')}""").to_pylist()[0]
    return got["acc"], got["n"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--cache", default="/tmp/bench-mining", help="where demo lakes are built once (shared with bench_mining)")
    parser.add_argument("--eval", type=float, default=0.3, help="share of images held out for evaluation")
    parser.add_argument("--base", type=float, default=0.4, help="share of the other images in the first labelling round")
    parser.add_argument("--pages", type=int, default=5, help="pages of 20 the reviewer looks at")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    index, truth = build_lake(Path(args.cache), "glare", args.images, "random", 0)
    source = Path(args.cache) / f"glare-{args.images}-s0-random"
    work = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    shutil.copytree(source, work / "lake")
    lake = Lake(str(work / "lake"))
    config = Config(lake=lake.root, slices=SLICES, embed=EmbedConfig(device="cpu", batch_size=64))
    with LakeDB(lake) as db:
        true_label = {r["image_id"]: r["true_label"] for r in db.query("SELECT image_id, true_label FROM demo_truth").to_pylist()}
    ids = np.array(index.ids)
    edge = truth["edge"]
    held_out = validation_fraction_of(ids) >= 1 - args.eval
    rng = np.random.default_rng(args.seed)
    base = ~held_out & (rng.random(len(ids)) < args.base)
    label(lake, ids[held_out].tolist(), true_label, "eval")
    label(lake, ids[base].tolist(), true_label, "base")

    settings = TrainSettings(epochs=args.epochs, image_size=args.image_size, batch_size=32, seed=args.seed, device="cpu",
                             patience=args.epochs)
    results: dict = {"machine": describe({"torch": torch.__version__, "torchvision": torchvision.__version__}), "images": len(ids), "edge_cases": int(edge.sum()),
                     "held_out": int(held_out.sum()), "held_out_edge": int((held_out & edge).sum()),
                     "base_labels": int(base.sum()), "base_edge": int((base & edge).sum())}
    started = time.monotonic()
    before = run_loop(lake, config, TrainRequest(version="before", base="random", labels_where="batch = 'base'",
                                                 user="bench"), settings, show_progress=False)
    results["before_seconds"] = time.monotonic() - started

    flagged = int(rng.choice(np.flatnonzero(edge & ~held_out)))
    found = reviewer_finds(index, edge, ~held_out, flagged, args.pages, truth["uncertainty"])
    new = [p for p in found if not base[p]]
    label(lake, ids[new].tolist(), true_label, "glare")
    results.update(reviewer_views=args.pages * PAGE, glare_found=len(found), glare_labelled_new=len(new))

    started = time.monotonic()
    after = run_loop(lake, config, TrainRequest(version="after", base="before", labels_where="batch IN ('base', 'glare')",
                                                user="bench"), settings, baseline="before", show_progress=False)
    results["after_seconds"] = time.monotonic() - started
    for name, sql in SLICES.items():
        for version in ("before", "after"):
            acc, n = accuracy(lake, version, sql)
            results[f"{version}_{name}"] = {"accuracy": acc, "n": n}
    results["alarms"] = [{k: a[k] for k in ("slice", "metric", "label", "baseline_value", "value", "n")} for a in after.alarms]
    results["comparisons"] = after.comparisons
    results["val_accuracy"] = {"before": before.train["best_val_accuracy"], "after": after.train["best_val_accuracy"]}
    shutil.rmtree(work)
    if args.json:
        print(json.dumps(results, indent=1, default=str))
        return
    print(results["machine"])
    print(f"{results['images']} images, {results['edge_cases']} glare; held out {results['held_out']} "
          f"({results['held_out_edge']} glare); base labels {results['base_labels']} ({results['base_edge']} glare); "
          f"reviewer: {results['glare_found']} glare in {results['reviewer_views']} views, {len(new)} newly labelled")
    for name in SLICES:
        b, a = results[f"before_{name}"], results[f"after_{name}"]
        print(f"{name:15s} n={b['n']:4d}  before {b['accuracy']:.3f}  after {a['accuracy']:.3f}  change {a['accuracy'] - b['accuracy']:+.3f}")
    print(f"regression alarms: {len(after.alarms)} in {after.comparisons} comparisons")
    for a in results["alarms"]:
        print("  ", a)


if __name__ == "__main__":
    main()
