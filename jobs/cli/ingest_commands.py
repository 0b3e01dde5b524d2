"""Into the lake: `ingest images|predictions|feedback`, and `embed`."""

from __future__ import annotations

import argparse
import sys

from jobs.cli.common import UsageError, add_runner, embed_config, print_result, runner_of
from mining.core.config import Config
from mining.core.lake import Lake


def add_ingest(commands, add) -> None:
    ingest = commands.add_parser("ingest", help="load images or predictions into the lake")
    ingest_commands = ingest.add_subparsers(title="what", metavar="WHAT")
    images = add(ingest_commands, "images", cmd_ingest_images, "register image files from a folder or s3:// prefix")
    images.add_argument("source", help="folder or s3://bucket/prefix holding the images")
    images.add_argument(
        "--glob", dest="pattern", help="only paths (relative to SOURCE) matching this glob, e.g. '**/*.jpg'"
    )
    images.add_argument("--retry-errors", action="store_true", help="try again files that failed before")
    add_runner(images)
    predictions = add(
        ingest_commands,
        "predictions",
        cmd_ingest_predictions,
        "ingest prediction files (JSONL, CSV, Parquet; a detector's YOLO folder or COCO results; local or s3://; "
        "globs allowed)",
    )
    predictions.add_argument("files", nargs="+", metavar="FILE")
    predictions.add_argument(
        "--format",
        default="auto",
        choices=["auto", "jsonl", "csv", "parquet", "yolo", "coco-results", "png-masks"],
        help="input format (default: from the file name); yolo: a folder of <image stem>.txt files; "
        "coco-results: a JSON array of {image_id, category_id, bbox, score[, segmentation]}; "
        "png-masks: a folder of <image stem>.png semantic label maps (the class index per pixel)",
    )
    predictions.add_argument("--model-version",
                             help="yolo, coco-results, png-masks: the model that wrote the files (required)")
    predictions.add_argument("--ts", help="yolo, coco-results, png-masks: when the model ran, ISO 8601 or epoch "
                             "seconds (default: each file's modification time)")
    predictions.add_argument("--classes", metavar="FILE",
                             help="yolo, png-masks: the class names, a data.yaml or a names file (one a line, class 0 "
                             "first); yolo without it: the class numbers are the labels; png-masks needs it")
    predictions.add_argument("--categories", metavar="FILE",
                             help="coco-results: a COCO dataset file (its categories, and its images to match "
                             'image ids) or a JSON object {"1": "car"}; without it the category ids are the labels')
    predictions.add_argument("--force", action="store_true", help="ingest again files already ingested and unchanged")
    feedback = add(
        ingest_commands,
        "feedback",
        cmd_ingest_feedback,
        "ingest reports about images or predictions (JSONL, CSV; local or s3://)",
    )
    feedback.add_argument("files", nargs="+", metavar="FILE")
    feedback.add_argument(
        "--format", default="auto", choices=["auto", "jsonl", "csv"], help="input format (default: from the file name)"
    )
    feedback.add_argument("--force", action="store_true", help="ingest again files already ingested and unchanged")


def cmd_ingest_images(args: argparse.Namespace, config: Config) -> int:
    from jobs.ingest_images import ingest_images

    runner = runner_of(args)
    summary = ingest_images(Lake.from_config(config), args.source, config.ingest, pattern=args.pattern,
                            retry_errors=args.retry_errors, show_progress=not args.quiet, runner=runner)
    print_result(args, summary, _images_text)
    return 0


def _images_text(summary) -> None:
    print(
        f"{summary.found} files found, {summary.already_known} already known, {summary.registered} registered, "
        f"{summary.errors} refused (see: edgemine sql \"SELECT uri, reason FROM errors WHERE job = 'ingest-images'\")"
    )
    for sample in summary.error_samples:
        print(f"  refused {sample['uri']}: {sample['reason']}")


def cmd_ingest_predictions(args: argparse.Namespace, config: Config) -> int:
    from jobs.detector_readers import Detector, parse_ts
    from jobs.ingest_predictions import ingest_predictions

    detector = None
    if args.model_version or args.ts or args.classes or args.categories:
        detector = Detector(args.model_version or "", ts=parse_ts(args.ts) if args.ts else None,
                            classes=args.classes, categories=args.categories)
    summary = ingest_predictions(Lake.from_config(config), args.files, config.ingest, fmt=args.format,
                                 detector=detector, force=args.force, show_progress=not args.quiet)
    print_result(args, summary, _predictions_text)
    return _files_exit_code(summary)


def _predictions_text(summary) -> None:
    report = summary.to_dict()
    rows = report["rows"]
    print(
        f"{report['ingested']} file(s) ingested, {report['skipped']} unchanged, {report['failed']} failed: "
        f"{rows.get('predictions', 0)} predictions, {rows.get('detections', 0)} detections, {report['errors']} bad rows"
    )
    if report["errors"]:
        print("  bad rows are in the errors table: edgemine sql \"SELECT source, row, reason FROM errors "
              "WHERE job = 'ingest-predictions'\"")
    for f in summary.failed:
        print(f"  FAILED {f.reason}", file=sys.stderr)


def cmd_ingest_feedback(args: argparse.Namespace, config: Config) -> int:
    from jobs.ingest_feedback import ingest_feedback

    summary = ingest_feedback(Lake.from_config(config), args.files, config.ingest, fmt=args.format, force=args.force,
                              show_progress=not args.quiet)
    print_result(args, summary, _feedback_text)
    return _files_exit_code(summary)


def _feedback_text(summary) -> None:
    report = summary.to_dict()
    print(f"{report['ingested']} file(s) ingested, {report['skipped']} unchanged, {report['failed']} failed: "
          f"{report['rows'].get('feedback', 0)} reports, {report['errors']} bad rows")
    if report["errors"]:
        print("  bad rows are in the errors table: edgemine sql \"SELECT source, row, reason FROM errors "
              "WHERE job = 'ingest-feedback'\"")
    for f in summary.failed:
        print(f"  FAILED {f.reason}", file=sys.stderr)


def _files_exit_code(summary) -> int:
    """2 when every file failed, 1 when some did, else 0."""
    if summary.failed and len(summary.failed) == len(summary.files):
        return 2
    return 1 if summary.failed else 0


def add_embed(commands, add) -> None:
    from embed.backbones import BACKBONES  # the parser of `embed` only: other commands start without it

    embed = add(commands, "embed", cmd_embed, "compute embeddings and thumbnails for the lake's images that need them")
    embed.add_argument(
        "--weights", help="imagenet, random, or a checkpoint file (default: config embed.weights, imagenet)"
    )
    embed.add_argument("--backbone", help=f"{', '.join(BACKBONES)} (default: config embed.backbone, resnet18; "
                       "efficientnet-lite0 has ImageNet weights offline)")
    embed.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: config embed.device, auto)")
    embed.add_argument(
        "--decode",
        choices=["auto", "workers", "device"],
        help="where JPEGs are decoded (default: auto: on the GPU when there is one)",
    )
    embed.add_argument(
        "--batch-size",
        type=int,
        help="images per model call (default: config embed.batch_size; 0 = 32 on CPU, 256 on CUDA)",
    )
    embed.add_argument(
        "--workers", type=int, help="image decoding processes (default: config embed.workers; 0 = one per core)"
    )
    embed.add_argument("--seed", type=int, help="seed for --weights random (default: config embed.seed, 0)")
    embed.add_argument(
        "--shard", default="0/1", help="embed only shard I of N (e.g. 2/8), by image id; N processes split the work"
    )
    embed.add_argument(
        "--overwrite", action="store_true", help="embed again images that already have an embedding for these weights"
    )
    embed.add_argument("--retry-errors", action="store_true", help="try again images that failed before")
    embed.add_argument("--objects", action="store_true",
                       help="embed the detection boxes of each image's newest prediction instead (object_embeddings; "
                            "crops as config [objects] says)")
    add_runner(embed)


def cmd_embed(args: argparse.Namespace, config: Config) -> int:
    if args.objects and args.runner != "local":
        raise UsageError("--objects runs locally only for now: drop --runner ray")
    runner = runner_of(args)  # the cluster reached (or not) before torch is imported
    from jobs.embed_images import Shard, embed_lake

    embed = embed_config(config, weights=args.weights, backbone=args.backbone, device=args.device, decode=args.decode,
                         batch_size=args.batch_size, workers=args.workers, seed=args.seed)
    if args.objects:
        return _embed_objects(args, config, embed, runner)
    summary = embed_lake(Lake.from_config(config), embed, shard=Shard.parse(args.shard), overwrite=args.overwrite,
                         retry_errors=args.retry_errors, show_progress=not args.quiet, runner=runner)
    print_result(args, summary, _embed_text)
    if summary.images_in_shard == 0:
        print("edgemine: the lake has no images (in this shard) yet: "
              "register some with `edgemine ingest images SOURCE`", file=sys.stderr)
    return 1 if summary.errors else 0


def _embed_objects(args: argparse.Namespace, config: Config, embed, runner) -> int:
    from jobs.embed_images import Shard
    from jobs.embed_objects import embed_objects

    summary = embed_objects(Lake.from_config(config), embed, config.objects, shard=Shard.parse(args.shard),
                            overwrite=args.overwrite, retry_errors=args.retry_errors, show_progress=not args.quiet)
    print_result(args, summary, _objects_text)
    if summary.detections == 0:
        print("edgemine: the lake has no detections (in this shard) yet: ingest predictions with boxes first "
              "(`edgemine ingest predictions`)", file=sys.stderr)
    return 1 if summary.errors else 0


def _objects_text(summary) -> None:
    print(f"{summary.backbone} ({summary.weights}) on {summary.device}, shard {summary.shard}: "
          f"{summary.embedded} boxes embedded, {summary.errors} failed, {summary.already_embedded} already embedded, "
          f"{summary.failed_before} failed before, {summary.over_bound} over [objects] max_per_image "
          f"({summary.objects_per_second:.1f} boxes/s)")
    if summary.errors:
        print("  failures are in the errors table: edgemine sql \"SELECT uri, reason, raw FROM errors "
              "WHERE job = 'embed-objects'\"")
    for sample in summary.error_samples:
        print(f"  failed {sample['uri']}: {sample['reason']}")


def _embed_text(summary) -> None:
    print(f"{summary.backbone} ({summary.weights}) on {summary.device}, shard {summary.shard}: "
          f"{summary.embedded} embedded, {summary.errors} failed, {summary.already_embedded} already embedded, "
          f"{summary.failed_before} failed before ({summary.images_per_second:.1f} images/s)")
    if summary.errors:
        print("  failures are in the errors table: edgemine sql \"SELECT uri, reason FROM errors WHERE job = 'embed'\"")
    for sample in summary.error_samples:
        print(f"  failed {sample['uri']}: {sample['reason']}")
