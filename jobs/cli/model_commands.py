"""Models: `train`, `score`, `loop` (the retrain loop for a scheduler), `models` (docs/TRAINING.md)."""

from __future__ import annotations

import argparse
import sys

import mining
from jobs.cli.common import (
    EXIT_REGRESSION,
    UsageError,
    add_runner,
    embed_config,
    open_db,
    print_result,
    runner_of,
)
from mining.core.config import Config
from mining.core.errors import command
from mining.core.lake import Lake


def add_train(commands, add) -> None:
    train = add(
        commands,
        "train",
        cmd_train,
        "fine-tune a classifier on the lake's image-level labels; store it as a model version",
    )
    _add_train_arguments(train, base_default="imagenet")


def add_score(commands, add) -> None:
    score = add(
        commands,
        "score",
        cmd_score,
        "run a model version over the lake's images: predictions and embeddings, images not yet scored",
    )
    score.add_argument(
        "--model", required=True, metavar="VERSION", help="a model version of the lake (edgemine models)"
    )
    score.add_argument("--where", help="SQL predicate over the images table, e.g. \"uri LIKE '%%cam-07%%'\"")
    score.add_argument("--shard", default="0/1", help="score only shard I of N (e.g. 2/8), by image id")
    score.add_argument("--batch-size", type=int, help="images per model call (default: config embed.batch_size)")
    score.add_argument("--workers", type=int, help="image decoding processes (default: config embed.workers)")
    score.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: config embed.device, auto)")
    score.add_argument("--retry-errors", action="store_true", help="try again images that failed before for this model")
    add_runner(score)


def add_loop(commands, add) -> None:
    loop = add(
        commands,
        "loop",
        cmd_loop,
        "the retrain loop for a scheduler: train, score, metrics against the previous "
        "version (exit 3 on a regression), model card; a rerun finishes a loop that stopped",
    )
    _add_train_arguments(loop, base_default="latest")
    loop.add_argument(
        "--baseline", metavar="VERSION", help="compare with this version (default: the one before, by first prediction)"
    )


def add_models(commands, add) -> None:
    add(commands, "models", cmd_models, "list the model versions in the lake")


def _add_train_arguments(parser: argparse.ArgumentParser, base_default: str) -> None:
    """The flags of `train`, shared by `loop`."""
    from embed.backbones import BACKBONES, FINETUNE_CHOICES  # the parsers of train and loop only

    parser.add_argument(
        "--name", required=True, metavar="VERSION", help="the new model version (letters, digits, _ . -)"
    )
    latest = ", latest (the lake's newest model; imagenet when it has none)" if base_default == "latest" else ""
    parser.add_argument(
        "--from",
        dest="base",
        default=base_default,
        metavar="BASE",
        help=(
            f"start from: imagenet, random, a checkpoint file, a model version of the lake{latest} "
            f"(default: {base_default})"
        ),
    )
    parser.add_argument(
        "--labels",
        dest="labels_where",
        metavar="WHERE",
        help="SQL predicate over the labels table, e.g. \"batch = 'b7'\"",
    )
    split = parser.add_mutually_exclusive_group()
    split.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of labelled images for validation, by image_id hash (default: 0.1)",
    )
    split.add_argument(
        "--val",
        dest="val_name",
        metavar="SET_OR_QUEUE",
        help="validate on this named set's (or queue's) labelled images",
    )
    parser.add_argument(
        "--epochs", type=int, default=10, help="at most this many epochs (default: 10; early stopping may end sooner)"
    )
    parser.add_argument("--backbone", default=None,
                        help=f"{', '.join(BACKBONES)} (default: resnet18, or the --from model's)")
    parser.add_argument("--finetune", choices=FINETUNE_CHOICES, default="all",
                        help="what to train: the classifier head only (fast on a CPU), the last blocks and the head, "
                             "or all layers (default: all)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default: 32)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of AdamW (default: 0.001)")
    parser.add_argument(
        "--patience",
        type=int,
        default=3,
        help="stop after this many epochs without a better validation accuracy (default: 3)",
    )
    parser.add_argument("--image-size", type=int, default=224, help="model input side in pixels (default: 224)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the head, shuffling and augmentations (default: 0)"
    )
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: config embed.device, auto)")
    parser.add_argument("--workers", type=int, default=0, help="image decoding processes (default: 0 = up to 4)")
    if base_default != "latest":  # the loop resumes an interrupted training by itself
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue an interrupted run of this version from its last epoch checkpoint",
        )
    parser.add_argument(
        "--pseudo-labels",
        dest="pseudo_from",
        metavar="FROM_VERSION",
        help="also train on this model version's confident predictions on unlabelled images (marked pseudo)",
    )
    parser.add_argument(
        "--min-confidence", type=float, default=0.9, help="least confidence of a pseudo-label (default: 0.9)"
    )
    parser.add_argument(
        "--pseudo-weight",
        type=float,
        default=0.5,
        help="a pseudo-label's weight in the loss, a label's being 1 (default: 0.5)",
    )
    parser.add_argument("--batch-weight", action="append", default=[], metavar="BATCH=WEIGHT",
                        help="weight in the loss of the images of a label batch, others 1 (repeatable), e.g. glare=3")


def _train_inputs(args: argparse.Namespace, config: Config):
    """`train`'s (and `loop`'s) flags as the job's TrainRequest and TrainSettings."""
    from embed.finetune import TrainSettings
    from jobs.train import TrainRequest

    settings = TrainSettings(
        backbone=args.backbone or "resnet18",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        image_size=args.image_size,
        seed=args.seed,
        device=args.device or config.embed.device,
        finetune=args.finetune,
    )
    request = TrainRequest(
        version=args.name,
        base=args.base,
        labels_where=args.labels_where,
        val_fraction=args.val_fraction,
        val_name=args.val_name,
        resume=getattr(args, "resume", False),
        workers=args.workers,
        user=config.mining.user,
        pseudo_from=args.pseudo_from,
        min_confidence=args.min_confidence,
        pseudo_weight=args.pseudo_weight,
        batch_weights=_batch_weights(args.batch_weight),
    )
    return request, settings


def _batch_weights(given: list[str]) -> dict[str, float]:
    """``--batch-weight BATCH=WEIGHT`` flags as {batch: weight}."""
    weights = {}
    for text in given:
        batch, _, weight = text.rpartition("=")
        try:
            weights[batch] = float(weight)
        except ValueError:
            raise UsageError(f"--batch-weight {text!r}: write BATCH=WEIGHT, e.g. glare=3") from None
        if not batch:
            raise UsageError(f"--batch-weight {text!r}: write BATCH=WEIGHT, e.g. glare=3")
    return weights

def cmd_train(args: argparse.Namespace, config: Config) -> int:
    from jobs.train import train_model

    request, settings = _train_inputs(args, config)
    summary = train_model(Lake.from_config(config), request, settings, backbone_given=args.backbone is not None,
                          show_progress=not args.quiet)
    print_result(args, summary, _trained_text)
    return 1 if summary.errors else 0


def _trained_text(summary) -> None:
    print(f"model {summary.version} ({summary.backbone} from {summary.base}): {summary.train_images} training and "
          f"{summary.val_images} validation images, classes {', '.join(summary.classes)}; {summary.epochs} epochs, "
          f"best validation accuracy {summary.best_val_accuracy:.3f} at epoch {summary.best_epoch} "
          f"({summary.seconds:.0f}s)")
    if summary.errors:
        print("  unreadable images are in the errors table: edgemine sql \"SELECT uri, reason FROM errors "
              "WHERE job = 'train'\"")
    print(f"  next: {command('score', '--model', summary.version)}", file=sys.stderr)


def cmd_score(args: argparse.Namespace, config: Config) -> int:
    runner = runner_of(args)  # the cluster reached (or not) before torch is imported
    from jobs.embed_images import Shard
    from jobs.score import score_lake

    embed = embed_config(config, device=args.device, batch_size=args.batch_size, workers=args.workers)
    summary = score_lake(Lake.from_config(config), args.model, embed, shard=Shard.parse(args.shard), where=args.where,
                         retry_errors=args.retry_errors, show_progress=not args.quiet, runner=runner)
    print_result(args, summary, _scored_text)
    return 1 if summary.errors else 0


def _scored_text(summary) -> None:
    print(f"model {summary.model_version} on {summary.device}, shard {summary.shard}: {summary.embedded} scored, "
          f"{summary.errors} failed, {summary.already_embedded} scored before, {summary.failed_before} failed before "
          f"({summary.images_per_second:.1f} images/s)")
    if summary.errors:
        print("  failures are in the errors table: edgemine sql \"SELECT uri, reason FROM errors WHERE job = 'score'\"")


def cmd_loop(args: argparse.Namespace, config: Config) -> int:
    from jobs.loop import run_loop

    request, settings = _train_inputs(args, config)
    summary = run_loop(Lake.from_config(config), config, request, settings, backbone_given=args.backbone is not None,
                       baseline=args.baseline, show_progress=not args.quiet)
    print_result(args, summary, _loop_text)
    if summary.regressed:
        return EXIT_REGRESSION
    return 1 if summary.errors else 0


def _loop_text(summary) -> None:
    trained = (f"trained from {summary.base}: best validation accuracy {summary.train['best_val_accuracy']:.3f}"
               if summary.trained else "trained by an earlier run")
    print(f"loop {summary.model_version}: {trained}; {summary.score['embedded']} images scored now; "
          f"{summary.metrics} metrics; compared with {summary.baseline or 'no earlier version'}: "
          f"{len(summary.alarms)} regressions in {summary.comparisons} comparisons; card {summary.card} "
          f"({summary.seconds:.0f}s)")
    for a in summary.alarms:
        print(f"  REGRESSION {a['slice']} {a['metric']}{'[' + a['label'] + ']' if a['label'] else ''}: "
              f"{a['baseline_value']:.3f} -> {a['value']:.3f} (n={a['n']})")
    if summary.errors:
        print("  unreadable images are in the errors table: edgemine sql \"SELECT job, uri, reason FROM errors "
              "WHERE job IN ('train', 'score')\"")


def cmd_models(args: argparse.Namespace, config: Config) -> int:
    with open_db(config) as db:
        print_result(args, mining.list_models(db))
    return 0
