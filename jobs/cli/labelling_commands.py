"""Labelling: `export` (images out to an annotation tool) and `labels import` (labels back)."""

from __future__ import annotations

import argparse
import sys

import mining
from jobs.cli.common import UsageError, open_db, print_result
from mining.core.config import Config


def add_export(commands, add) -> None:
    export = add(
        commands,
        "export",
        cmd_export,
        "send images for labelling: one batch of files in an annotation tool's "
        "format (folder or s3://), or tasks in a Label Studio project; recorded in the exports table",
    )
    export.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="set:NAME, review:NAME (its accepted images), session:NAME (its current step) or sql:QUERY",
    )
    export.add_argument("--where", help="instead of SOURCE: a SQL predicate over images i LEFT JOIN predictions p")
    export.add_argument("--detections", nargs="+", metavar="DETECTION_ID",
                        help="instead of SOURCE: chosen boxes (object hits of similar): each frame once, with these "
                             "boxes, and only these, as pre-annotations")
    export.add_argument("--format", dest="export_format", required=True, metavar="FORMAT",
                        help="label-studio, coco, cvat, yolo, prodigy or manifest")
    export.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="URI",
        help=(
            "a folder or s3://bucket/prefix (the batch goes in URI/BATCH/), "
            "or http(s)://HOST of a Label Studio server"
        ),
    )
    export.add_argument("--project", help="the Label Studio project (created when missing) for an http(s) --to")
    export.add_argument("--batch", help="the batch's folder name (default: its id, from its images and options)")
    export.add_argument(
        "--task-size", type=int, help="images per task file (default: config export.task_size; 0: one task)"
    )
    export.add_argument("--include-predictions", dest="predictions", action="store_true", default=True,
                        help="write the newest prediction as pre-annotations (the default)")
    export.add_argument(
        "--no-predictions", dest="predictions", action="store_false", help="images only, no pre-annotations"
    )
    export.add_argument(
        "--preannotate", metavar="WHAT",
        help="the pre-annotations: predictions (the newest, the default), model:VERSION (that version's), "
             "model:imagenet (the open ImageNet classifier's top class), superpixels (SLIC regions to merge or "
             "assign; coco, label-studio) or none",
    )
    export.add_argument(
        "--copy-images", action="store_true", help="copy the images beside the files (default: by reference)"
    )
    export.add_argument("--resend", action="store_true", help="send again images already sent to this target")
    export.add_argument("--drop-duplicates", action="store_true",
                        help="send one image per near-duplicate group (run edgemine duplicates first)")


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    from jobs.export_images import run_export

    if args.detections:
        if args.source or args.where or not args.predictions or args.drop_duplicates:
            raise UsageError("--detections is the export's source and its pre-annotations: give no SOURCE, --where, "
                             "--no-predictions or --drop-duplicates with it")
        with open_db(config) as db:
            summary = mining.export_objects(db, args.detections, fmt=args.export_format, to=args.target,
                                            batch=args.batch, task_size=args.task_size, copy_images=args.copy_images,
                                            resend=args.resend, project=args.project, config=config)
        print_result(args, summary, _export_text)
        return 1 if summary.errors else 0
    summary = run_export(
        config,
        args.source,
        fmt=args.export_format,
        target=args.target,
        where=args.where,
        name=args.batch,
        task_size=args.task_size,
        predictions=args.predictions,
        copy_images=args.copy_images,
        resend=args.resend,
        project=args.project,
        drop_duplicates=args.drop_duplicates,
        preannotate=args.preannotate,
        show_progress=not args.quiet,
    )
    print_result(args, summary, _export_text)
    return 1 if summary.errors else 0


def _export_text(summary) -> None:
    if summary.status == "unchanged":
        print(
            f"batch {summary.batch} was exported before ({summary.exported} images to {summary.target}): "
            "nothing changed"
        )
        return
    if summary.status == "nothing-new":
        print(f"all {summary.skipped} images were sent to {summary.target} before: nothing exported "
              "(--resend sends them again)")
        return
    print(f"batch {summary.batch}: {summary.exported} images exported as {summary.format} to {summary.folder} in "
          f"{summary.tasks} task(s) (pre-annotations: {summary.preannotate}), {summary.skipped} skipped "
          f"(sent to this target before), {summary.errors} refused"
          + (f", {summary.duplicates_dropped} near-duplicates left out" if summary.duplicates_dropped else ""))
    for sample in summary.error_samples:
        print(f"  refused {sample['uri']}: {sample['reason']}")
    print(f"  what was sent: edgemine sql \"SELECT * FROM exports WHERE batch = '{summary.batch}'\"", file=sys.stderr)


def add_labels(commands, add) -> None:
    labels = commands.add_parser("labels", help="labels from annotators, into the lake's labels table")
    label_actions = labels.add_subparsers(title="action", metavar="ACTION")
    imported = add(
        label_actions,
        "import",
        cmd_labels_import,
        "import a label file (Label Studio JSON, COCO, CVAT XML, "
        "a YOLO folder) or a Label Studio project's annotations",
    )
    imported.add_argument(
        "source", metavar="FILE_OR_URL", help="a file or folder (local or s3://), or http(s)://HOST with --project"
    )
    imported.add_argument(
        "--format", dest="label_format", required=True, metavar="FORMAT", help="label-studio, coco, cvat or yolo"
    )
    imported.add_argument("--project", help="the Label Studio project to pull annotations from")
    imported.add_argument("--batch", help="the batch the labels belong to (default: the export batch the file names)")
    imported.add_argument("--annotator", help="who labelled (default: the file's own user, else unknown)")
    imported.add_argument(
        "--allow-new-classes", action="store_true", help="take classes the lake has not seen (else they are refused)"
    )


def cmd_labels_import(args: argparse.Namespace, config: Config) -> int:
    from jobs.import_labels import run_import

    summary = run_import(config, args.source, fmt=args.label_format, batch=args.batch, annotator=args.annotator,
                         project=args.project, allow_new_classes=args.allow_new_classes, show_progress=not args.quiet)
    print_result(args, summary, _labels_text)
    return 1 if summary.errors else 0


def _labels_text(summary) -> None:
    print(
        f"{summary.annotations} annotations read: {summary.imported} labels imported, {summary.already} already in the "
        f"lake, {summary.errors} refused (batch {summary.batch})"
    )
    for sample in summary.error_samples:
        print(f"  refused {sample['uri']}: {sample['reason']}")
    if summary.errors:
        print("  refused annotations are in the errors table: edgemine sql \"SELECT row, reason FROM errors WHERE "
              "job = 'labels-import'\"", file=sys.stderr)
