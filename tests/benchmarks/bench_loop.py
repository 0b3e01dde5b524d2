"""Benchmark (the retrain loop's proof): does retraining on the edge cases the reviewer
loop found fix them, and break nothing else?

On a glare demo lake (hidden truth in ``demo_truth``) with ``--edge-rate`` glare images
(10% by default, so the held-out set has enough of them to measure; built once under
``--cache``):

1. a held-out evaluation set: the images whose id hash falls in the top ``--eval``
   share (mining.evaluation.models.validation_fraction_of; disjoint from every training split),
   labelled with their true class as batch ``eval``, never trained on;
   the lake's embeddings (what the reviewer ranks by) come from ``--backbone`` with
   ``--weights`` (``efficientnet-lite0`` with ``imagenet``: the pretrained backbone that
   works offline);
2. a first labelling round: a random ``--base`` share of the other images, in which glare
   is kept at ``--base-glare`` of the round (3%, the demo's natural rate: the round a team
   labelled before anyone looked for glare), batch ``base``; model **before** =
   `edgemine loop` on it (train ``--backbone`` from ``--from`` (imagenet or random),
   training what ``--finetune`` says; score; metrics; card), once, seeded by
   ``--before-seed`` (the lake with it is kept under ``--cache`` and reused by a later run
   with the same settings);
3. for each of ``--seeds``: the reviewer loop (what `edgemine similar POSITIVES --not
   NEGATIVES` ranks, as in bench_mining) from one flagged glare image outside the evaluation
   set (drawn from the seed), ``--pages`` pages of 20; every image marked an edge case is
   labelled with its true class, batch ``glare``;
4. and model **after** = `edgemine loop` from *before* on base + glare (``--after-epochs``,
   ``--after-lr``, ``--glare-weight`` as `--batch-weight glare=W`; training seeded by the
   seed), score, metrics of both versions on every slice, the regression check
   (mining.evaluation.metrics: 0.02 below with a bootstrap interval below 0), the card.

Reported per seed, and as mean and spread over the seeds: accuracy of before and after on
the held-out glare images and on the held-out other images, and the regression alarms.

    python tests/benchmarks/bench_loop.py [--images 2000] [--edge-rate 0.1] [--seeds 0 1 2]
        [--backbone efficientnet-lite0 --weights imagenet --from imagenet --finetune head|last|all]
        [--base 0.6] [--pages 5] [--epochs 8] [--after-epochs 4] [--image-size 48]
        [--after-lr 0.001] [--glare-weight 1] [--reviewer-finds loop|all] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torchvision

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from embed.backbones import BACKBONES, FINETUNE_CHOICES  # noqa: E402
from embed.finetune import TrainSettings  # noqa: E402
from jobs.demo import run_demo  # noqa: E402
from jobs.loop import run_loop  # noqa: E402
from jobs.train import TrainRequest  # noqa: E402
from mining.core import tables  # noqa: E402
from mining.core.config import Config, DemoConfig, EmbedConfig  # noqa: E402
from mining.core.lake import Lake  # noqa: E402
from mining.core.schema import LABELS, make_rows  # noqa: E402
from mining.core.sql import LakeDB  # noqa: E402
from mining.evaluation.models import read_model, validation_fraction_of  # noqa: E402
from mining.search.index import VectorIndex  # noqa: E402
from mining.search.index_sync import index_lake  # noqa: E402
from mining.search.similar import model_uncertainty, rank  # noqa: E402
from tests.benchmarks.bench_mining import PAGE, load_truth  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

GLARE = "i.image_id IN (SELECT image_id FROM demo_truth WHERE glare)"
HELD_OUT = "list_contains(t.batches, 'eval')"
SLICES = {"heldout_glare": f"{HELD_OUT} AND {GLARE}", "heldout_other": f"{HELD_OUT} AND NOT ({GLARE})"}
STARTED = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr (a run takes minutes a seed)."""
    print(f"[{time.monotonic() - STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


def build_lake(cache: Path, args) -> tuple[Path, VectorIndex, dict]:
    """The glare demo lake (built once under ``cache``: the demo is idempotent), its index
    and, per index position, the truth and the production model's uncertainty."""
    path = cache / f"glare-{args.images}-r{args.edge_rate:g}-s0-{args.weights}-{args.backbone}"
    config = Config(lake=str(path), embed=EmbedConfig(device="cpu", backbone=args.backbone),
                    demo=replace(DemoConfig(), images=args.images, kind="glare", weights=args.weights,
                                 edge_case_rate=args.edge_rate, round=False))
    lake = Lake.from_config(config)
    if not (path / ".built").exists():
        say(f"building the demo lake {path} (once)")
        run_demo(config, show_progress=False)
        (path / ".built").touch()
    with LakeDB(lake) as db:
        index, _ = index_lake(db, config.index)
        uncertainty = model_uncertainty(db, index)
    edge, _ = load_truth(lake, index)
    return path, index, {"edge": edge, "uncertainty": uncertainty}


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
    where = slice_sql.replace(HELD_OUT + " AND ", "")
    with LakeDB(lake, read_only=False) as db:
        got = db.query(f"""SELECT avg((p.label = t.true_label)::int) AS acc, count(*) AS n
            FROM predictions p JOIN demo_truth t USING (image_id) JOIN labels l USING (image_id)
            JOIN images i USING (image_id)
            WHERE p.model_version = '{version}' AND l.batch = 'eval' AND {where}""").to_pylist()[0]
    return got["acc"], got["n"]


def first_round(ids: np.ndarray, edge: np.ndarray, held_out: np.ndarray, share: float, glare_share: float,
                rng: np.random.Generator) -> np.ndarray:
    """bool (n,): a random ``share`` of the images not held out, glare kept with the probability
    that makes it ``glare_share`` of the round (the lake's glare rate is raised to measure it)."""
    rate = edge[~held_out].mean()
    keep_glare = min(1.0, glare_share * (1 - rate) / (rate * (1 - glare_share))) if rate > 0 else 1.0
    draw = rng.random(len(ids))
    return ~held_out & (draw < share) & (~edge | (rng.random(len(ids)) < keep_glare))


def train_before(source: Path, index: VectorIndex, truth: dict, args, work: Path) -> tuple[Lake, dict, dict]:
    """Steps 1-2, once: the lake copied to ``work``, the eval and base batches labelled, *before*
    trained (seed ``--before-seed``) and scored. Every seed's after starts from this lake, which is
    kept under ``--cache`` for the next run with the same settings (before takes most of a run)."""
    key = (f"before-{args.images}-r{args.edge_rate:g}-e{args.eval:g}-b{args.base:g}-g{args.base_glare:g}"
           f"-ep{args.epochs}-px{args.image_size}-s{args.before_seed}-{args.weights}-{args.backbone}"
           f"-from-{args.base_from}-{args.finetune}-lr{args.lr:g}")
    cached = Path(args.cache) / key
    ids, edge = np.array(index.ids), truth["edge"]
    held_out = validation_fraction_of(ids) >= 1 - args.eval
    base = first_round(ids, edge, held_out, args.base, args.base_glare, np.random.default_rng(args.before_seed))
    result = {"held_out": int(held_out.sum()), "held_out_edge": int((held_out & edge).sum()),
              "base_labels": int(base.sum()), "base_edge": int((base & edge).sum()), "seed": args.before_seed}
    reuse = (cached / ".done").exists()
    shutil.copytree(cached / "lake" if reuse else source, work / "lake")
    lake = Lake(str(work / "lake"))
    config = Config(lake=lake.root, slices=SLICES, embed=EmbedConfig(device="cpu", batch_size=64))
    with LakeDB(lake) as db:
        true_label = {
            r["image_id"]: r["true_label"] for r in db.query("SELECT image_id, true_label FROM demo_truth").to_pylist()
        }
    if reuse:
        say(f"before: reusing {cached}")
    else:
        label(lake, ids[held_out].tolist(), true_label, "eval")
        label(lake, ids[base].tolist(), true_label, "base")
        say(f"training before on {result['base_labels']} labels ({result['base_edge']} glare), {args.epochs} epochs")
        run_loop(
            lake,
            config,
            TrainRequest(version="before", base=args.base_from, labels_where="batch = 'base'", user="bench"),
            settings(args, args.epochs, args.before_seed, args.lr),
            show_progress=False,
        )
        shutil.copytree(work / "lake", cached / "lake", dirs_exist_ok=True)
        (cached / ".done").touch()
    with LakeDB(lake) as db:
        record = read_model(db, "before")
    result.update(seconds=record["timings"]["seconds"], val_accuracy=record["best_val_accuracy"])
    for name, sql in SLICES.items():
        acc, n = accuracy(lake, "before", sql)
        result[name] = {"accuracy": acc, "n": n}
    say(f"before: trained in {result['seconds']:.0f} s, val {result['val_accuracy']:.3f}, held-out glare "
        f"{result['heldout_glare']['accuracy']:.3f}, other {result['heldout_other']['accuracy']:.3f}")
    return lake, {"true_label": true_label, "held_out": held_out, "base": base}, result


def settings(args, epochs: int, seed: int, lr: float) -> TrainSettings:
    return TrainSettings(backbone=args.backbone, epochs=epochs, image_size=args.image_size, batch_size=32, lr=lr,
                         seed=seed, device="cpu", patience=epochs, finetune=args.finetune)


def one_seed(before_lake: Lake, split: dict, index: VectorIndex, truth: dict, args, seed: int, work: Path) -> dict:
    """Steps 3-4 for one seed (the flagged image, the reviewer's ranking, after's training), on a
    copy of the lake with *before*."""
    shutil.copytree(before_lake.root, work / f"seed-{seed}")
    lake = Lake(str(work / f"seed-{seed}"))
    config = Config(lake=lake.root, slices=SLICES, embed=EmbedConfig(device="cpu", batch_size=64))
    ids, edge, held_out, base = np.array(index.ids), truth["edge"], split["held_out"], split["base"]
    rng = np.random.default_rng(1000 + seed)
    flagged = int(rng.choice(np.flatnonzero(edge & ~held_out)))
    if args.reviewer_finds == "all":  # the ceiling: every glare image outside the held-out set labelled
        found = np.flatnonzero(edge & ~held_out).tolist()
    else:
        found = reviewer_finds(index, edge, ~held_out, flagged, args.pages, truth["uncertainty"])
    new = [p for p in found if not base[p]]
    label(lake, ids[new].tolist(), split["true_label"], "glare")
    result: dict = {
        "seed": seed,
        "reviewer_views": args.pages * PAGE if args.reviewer_finds == "loop" else None,
        "glare_found": len(found),
        "glare_labelled_new": len(new),
    }
    weights = {"glare": args.glare_weight} if args.glare_weight != 1 else {}
    say(f"seed {seed}: reviewer found {len(found)} glare ({args.reviewer_finds}) ({len(new)} new); "
        f"training after, {args.after_epochs} epochs")
    started = time.monotonic()
    after = run_loop(
        lake,
        config,
        TrainRequest(
            version="after",
            base="before",
            labels_where="batch IN ('base', 'glare')",
            user="bench",
            batch_weights=weights,
        ),
        settings(args, args.after_epochs, seed, args.after_lr),
        baseline="before",
        show_progress=False,
    )
    result["seconds"] = time.monotonic() - started
    for name, sql in SLICES.items():
        acc, n = accuracy(lake, "after", sql)
        result[name] = {"accuracy": acc, "n": n}
    result["alarms"] = [
        {k: a[k] for k in ("slice", "metric", "label", "baseline_value", "value", "n")} for a in after.alarms
    ]
    result["comparisons"] = after.comparisons
    result["val_accuracy"] = after.train["best_val_accuracy"]
    say(f"seed {seed}: after in {result['seconds']:.0f} s; held-out glare {result['heldout_glare']['accuracy']:.3f}, "
        f"other {result['heldout_other']['accuracy']:.3f}; {len(after.alarms)} alarms")
    shutil.rmtree(work / f"seed-{seed}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--backbone", default="resnet18", choices=list(BACKBONES),
                        help="the backbone of the embeddings and of both models")
    parser.add_argument("--weights", default="random", help="the demo lake's embedding weights: random or imagenet")
    parser.add_argument("--from", dest="base_from", default="random",
                        help="what before is trained from: random or imagenet (`edgemine loop --from`)")
    parser.add_argument("--finetune", default="all", choices=FINETUNE_CHOICES, help="what both trainings train")
    parser.add_argument("--lr", type=float, default=1e-3, help="before's peak learning rate")
    parser.add_argument("--edge-rate", type=float, default=0.1, help="share of glare images in the demo lake")
    parser.add_argument("--cache", default="/tmp/bench-loop-cache", help="where the demo lake is built once")
    parser.add_argument("--eval", type=float, default=0.3, help="share of images held out for evaluation")
    parser.add_argument(
        "--base", type=float, default=0.6, help="share of the other images in the first labelling round"
    )
    parser.add_argument(
        "--base-glare", type=float, default=0.03, help="glare's share of the first round (the demo's natural rate)"
    )
    parser.add_argument("--pages", type=int, default=5, help="pages of 20 the reviewer looks at")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of before")
    parser.add_argument("--after-epochs", type=int, default=4, help="epochs of after (from before)")
    parser.add_argument(
        "--after-lr", type=float, default=1e-3, help="after's peak learning rate (`edgemine loop --lr`)"
    )
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--before-seed", type=int, default=0, help="seed of the first round and of before's training")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the reviewer's flagged image and of after"
    )
    parser.add_argument("--reviewer-finds", choices=["loop", "all"], default="loop",
                        help="loop: what the reviewer loop finds in --pages; all: every glare image (the ceiling)")
    parser.add_argument("--glare-weight", type=float, default=1.0, help="after's --batch-weight of the glare batch")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine is shared)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    source, index, truth = build_lake(Path(args.cache), args)
    results: dict = {"machine": describe({"torch": torch.__version__, "torchvision": torchvision.__version__}),
                     "images": len(index), "edge_cases": int(truth["edge"].sum()), "args": vars(args), "seeds": []}
    work = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    try:
        lake, split, results["before"] = train_before(source, index, truth, args, work)
        for seed in args.seeds:
            results["seeds"].append(one_seed(lake, split, index, truth, args, seed, work))
    finally:
        shutil.rmtree(work)
    before, runs = results["before"], results["seeds"]
    for name in SLICES:
        change = np.array([r[name]["accuracy"] - before[name]["accuracy"] for r in runs])
        results[f"change_{name}"] = {
            "mean": float(change.mean()),
            "min": float(change.min()),
            "max": float(change.max()),
            "std": float(change.std(ddof=1)) if len(change) > 1 else 0.0,
        }
    results["alarms_per_seed"] = [len(r["alarms"]) for r in runs]
    results["seconds"] = time.monotonic() - STARTED
    if args.json:
        print(json.dumps(results, indent=1, default=str))
        return
    print(results["machine"])
    print(f"{results['images']} images, {results['edge_cases']} glare; settings: {vars(args)}")
    print(
        f"held out {before['held_out']} ({before['held_out_edge']} glare); base labels {before['base_labels']} "
        f"({before['base_edge']} glare); before: val accuracy {before['val_accuracy']:.3f}, {before['seconds']:.0f} s"
    )
    for r in runs:
        print(
            f"seed {r['seed']}: reviewer {r['glare_found']} glare in {r['reviewer_views']} views, "
            f"{r['glare_labelled_new']} "
            f"newly labelled; after: val accuracy {r['val_accuracy']:.3f}, {r['seconds']:.0f} s"
        )
        for name in SLICES:
            b, a = before[name], r[name]
            print(f"  {name:15s} n={b['n']:4d}  before {b['accuracy']:.3f}  after {a['accuracy']:.3f}  "
                  f"change {a['accuracy'] - b['accuracy']:+.3f}")
        print(f"  regression alarms: {len(r['alarms'])} in {r['comparisons']} comparisons")
        for a in r["alarms"]:
            print("    ", a)
    for name in SLICES:
        c = results[f"change_{name}"]
        print(
            f"{name}: change mean {c['mean']:+.3f} (sd {c['std']:.3f}, min {c['min']:+.3f}, max {c['max']:+.3f}) "
            f"over {len(runs)} seeds"
        )
    print(f"alarms per seed: {results['alarms_per_seed']}; {results['seconds']:.0f} s in all")


if __name__ == "__main__":
    main()
