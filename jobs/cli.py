"""The `edgemine` command. Subcommand names and flags are a public contract.

Each subcommand parses its flags, builds the Config once, calls one library
function with paths and plain values, and prints the result (``--json`` for
machines). Progress goes to stderr, results to stdout. Modules are imported by
the command that needs them: `edgemine sql` starts without torch, faiss or boto.

Exit codes: 0 done; 1 done, but some inputs failed (see the summary);
2 nothing done: bad usage, configuration or input (one line on stderr says what to do).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from jobs.output import FORMATS, write_json, write_rows
from mining.config import Config, EmbedConfig, load_config
from mining.errors import EdgemineError
from mining.lake import Lake

log = logging.getLogger("edgemine")


class UsageError(EdgemineError):
    """Wrong flags from the user: printed as one line, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(samplers="queue" in (sys.argv[1:] if argv is None else argv))
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        allowed = getattr(args, "allowed_flags", None)
        if allowed is None:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        print(f"edgemine: error: unrecognized option(s) {' '.join(unknown)}; {allowed}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if getattr(args, "quiet", False):
        logging.getLogger().setLevel(logging.WARNING)  # which SIMD build loaded: noise to a user
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        config = load_config(args.config, lake=args.lake)
        return args.run(args, config)
    except KeyboardInterrupt:
        print("edgemine: interrupted; rerun the same command to finish (finished shards are kept)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every error the user can fix is one line; anything else is a bug
        message = user_message(e)
        if message is None:
            raise
        print(f"edgemine: error: {message}", file=sys.stderr)
        return 2


def user_message(error: BaseException) -> str | None:
    """The one line to print for an error the user can fix, or None for a bug."""
    if isinstance(error, EdgemineError | FileNotFoundError | PermissionError):
        return str(error)
    if "botocore" in sys.modules:  # S3 was used: its errors say what to set
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        if isinstance(error, NoCredentialsError):
            return ("no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                    "(or [s3] key and secret in the config file)")
        if isinstance(error, EndpointConnectionError):
            return (f"cannot reach S3: {error}. Check AWS_ENDPOINT_URL or [s3] endpoint_url in the config, "
                    "and that the server is up")
        if isinstance(error, BotoCoreError | ClientError):
            return f"S3 refused the request: {error}"
    return None


def build_parser(samplers: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgemine", description="Find the edge cases in a lake of model predictions.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--lake", help="lake URI: a folder or s3://bucket/prefix (default: $EDGEMINE_LAKE, the config's lake, ./lake)")
    common.add_argument("--config", help="TOML config file (default: $EDGEMINE_CONFIG; options in configs/default.toml)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    def add(parent, name: str, run: Callable[[argparse.Namespace, Config], int], help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(run=run)
        return p

    demo = add(commands, "demo", cmd_demo, "generate a synthetic lake (images, predictions, ground truth) and ingest it")
    demo.add_argument("--images", type=int, help="number of images (default: config demo.images, 2000)")
    demo.add_argument("--seed", type=int, help="random seed (default: config demo.seed, 0)")
    # issue 15: which edge case the demo lake hides
    demo.add_argument("--kind", help="the hidden edge case: glare, unseen_class, new_camera, snow, small_occluded "
                      "(default: config demo.kind, glare)")
    demo.add_argument("--no-round", action="store_true", help="skip the simulated labelling round (labels from the "
                      "truth, two queues, metrics, drift) that otherwise follows (config demo.round)")

    ingest = commands.add_parser("ingest", help="load images or predictions into the lake")
    ingest_commands = ingest.add_subparsers(title="what", metavar="WHAT")
    images = add(ingest_commands, "images", cmd_ingest_images, "register image files from a folder or s3:// prefix")
    images.add_argument("source", help="folder or s3://bucket/prefix holding the images")
    images.add_argument("--glob", dest="pattern", help="only paths (relative to SOURCE) matching this glob, e.g. '**/*.jpg'")
    images.add_argument("--retry-errors", action="store_true", help="try again files that failed before")
    predictions = add(ingest_commands, "predictions", cmd_ingest_predictions, "ingest prediction files (JSONL, CSV, Parquet; local or s3://; globs allowed)")
    predictions.add_argument("files", nargs="+", metavar="FILE")
    predictions.add_argument("--format", default="auto", choices=["auto", "jsonl", "csv", "parquet"], help="input format (default: from the file name)")
    predictions.add_argument("--force", action="store_true", help="ingest again files already ingested and unchanged")

    embed = add(commands, "embed", cmd_embed, "compute ResNet18 embeddings and thumbnails for the lake's images that need them")
    embed.add_argument("--weights", help="imagenet, random, or a checkpoint file (default: config embed.weights, imagenet)")
    embed.add_argument("--backbone", help="resnet18 or resnet34 (default: config embed.backbone, resnet18)")
    embed.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: config embed.device, auto)")
    embed.add_argument("--decode", choices=["auto", "workers", "device"], help="where JPEGs are decoded (default: auto: on the GPU when there is one)")
    embed.add_argument("--batch-size", type=int, help="images per model call (default: config embed.batch_size; 0 = 32 on CPU, 256 on CUDA)")
    embed.add_argument("--workers", type=int, help="image decoding processes (default: config embed.workers; 0 = one per core)")
    embed.add_argument("--seed", type=int, help="seed for --weights random (default: config embed.seed, 0)")
    embed.add_argument("--shard", default="0/1", help="embed only shard I of N (e.g. 2/8), by image id; N processes split the work")
    embed.add_argument("--overwrite", action="store_true", help="embed again images that already have an embedding for these weights")
    embed.add_argument("--retry-errors", action="store_true", help="try again images that failed before")

    sql = add(commands, "sql", cmd_sql, "run a read-only SQL query over the lake's views")
    sql.add_argument("query", nargs="?", help="the SQL; '-' reads it from stdin")
    sql.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table; --json means json)")
    sql.add_argument("--output", help="write the result to this Parquet file (local or s3://) instead of printing")
    sql.add_argument("--views", action="store_true", help="print the CREATE VIEW statements, for any DuckDB client")
    sql.add_argument("--max-rows", type=int, default=100, help="rows shown in table format (default: 100)")
    sql.add_argument("--as-of", metavar="WHEN", help="read the tables as they were: a time (2026-11-20T10:00:00Z), "
                     "TABLE@VERSION[,TABLE@VERSION...], or a VERSION when the query reads one table")

    add(commands, "tables", cmd_tables, "list the lake's tables with their row counts and versions")

    history = add(commands, "history", cmd_history, "list a table's commits: version, when, operation, rows, job, who")
    history.add_argument("table", metavar="TABLE")
    history.add_argument("--limit", type=int, help="only the newest N commits")

    compact = add(commands, "compact", cmd_compact, "rewrite small files into large ones (optimize), then vacuum; "
                  "reports files and a query's time before and after")
    compact.add_argument("tables", nargs="*", metavar="TABLE", help="tables to compact (default: every table)")
    compact.add_argument("--z-order", nargs="+", metavar="COLUMN", help="also cluster by these columns (one table at a time)")
    compact.add_argument("--vacuum-hours", type=int, help="delete files unused for this many hours "
                         "(default: config compact.vacuum_hours, 168); time travel before that is lost")

    add(commands, "migrate", cmd_migrate, "convert a lake written before Delta tables (Parquet folders) into Delta tables")

    index = add(commands, "index", cmd_index, "build the vector index over the embeddings, or bring it up to date")
    index.add_argument("--kind", choices=["auto", "flat", "ivf", "ivfpq"], help="index kind (default: config index.kind, auto: flat up to index.flat_max vectors)")
    index.add_argument("--nprobe", type=int, help="IVF lists searched per query (default: automatic)")
    index.add_argument("--rebuild", action="store_true", help="build from scratch even if the index is up to date")
    _add_index_choice(index)

    similar = add(commands, "similar", cmd_similar, "find the images most like some seeds (image ids or image files)")
    similar.add_argument("seeds", nargs="+", metavar="IMAGE_ID_OR_FILE")
    similar.add_argument("--not", dest="negatives", nargs="+", default=[], metavar="IMAGE_ID_OR_FILE", help="negatives: rank images unlike these lower (a classifier is fitted)")
    similar.add_argument("-k", type=int, help="number of results (default: config mining.k, 20)")
    similar.add_argument("--where", help="SQL predicate over images i LEFT JOIN predictions p, e.g. \"p.model_version = 'v7' AND confidence < 0.6\"")
    similar.add_argument("--save", metavar="SET", help="also save the results as the named set SET (the sets view)")
    similar.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table; --json means json)")
    _add_index_choice(similar)

    narrow = commands.add_parser("narrow", help="narrow from seeds to the edge case: cluster, pick, re-cluster (sessions saved in the lake)")
    steps = narrow.add_subparsers(title="action", metavar="ACTION")
    start = add(steps, "start", cmd_narrow_start, "start a session: cluster the images nearest the seeds")
    start.add_argument("seeds", nargs="+", metavar="IMAGE_ID_OR_FILE")
    start.add_argument("--not", dest="negatives", nargs="+", default=[], metavar="IMAGE_ID_OR_FILE")
    start.add_argument("--pool", type=int, help="images taken near the seeds (default: config mining.pool, 1000)")
    start.add_argument("--clusters", type=int, help="k-means clusters (default: config mining.clusters, 8)")
    start.add_argument("--where", help="restrict the pool to a SQL slice (as for similar)")
    start.add_argument("--name", help="session name (default: date and a random suffix)")
    _add_index_choice(start)
    pick = add(steps, "pick", cmd_narrow_pick, "re-cluster inside the chosen clusters of the current step")
    pick.add_argument("session")
    pick.add_argument("picked", nargs="+", type=int, metavar="CLUSTER")
    pick.add_argument("--clusters", type=int, help="k-means clusters (default: as in the current step, at most one per 10 images)")
    back = add(steps, "back", cmd_narrow_back, "go back to the parent of the current step")
    back.add_argument("session")
    show = add(steps, "show", cmd_narrow_show, "show the clusters of the current (or a given) step")
    show.add_argument("session")
    show.add_argument("--step", type=int)
    add(steps, "list", cmd_narrow_list, "list the sessions")
    save = add(steps, "save", cmd_narrow_save, "save the current step (or some clusters of it) as a named set")
    save.add_argument("session")
    save.add_argument("set_name", metavar="SET")
    save.add_argument("--cluster", dest="clusters", type=int, nargs="+", help="only these clusters")

    review = commands.add_parser("review", help="accept or reject images; accepted ones become a named set (decisions saved in the lake)")
    actions = review.add_subparsers(title="action", metavar="ACTION")
    for decision in ("accept", "reject"):
        p = add(actions, decision, cmd_review_decide, f"{decision} images in a review (recorded with your name and the time)")
        p.set_defaults(decision=decision)
        p.add_argument("review", help="the review's name; its accepted images become the set of that name")
        p.add_argument("image_ids", nargs="+", metavar="IMAGE_ID")
        p.add_argument("--source", help="where the images were found, e.g. narrow:SESSION/STEP (kept with the decision)")
    add(actions, "list", cmd_review_list, "list the reviews: accepted, rejected, who, when")
    publish = add(actions, "save", cmd_review_save, "publish a review's accepted images as a named set")
    publish.add_argument("review")
    publish.add_argument("--as", dest="set_name", metavar="SET", help="the set's name (default: the review's)")

    export = add(commands, "export", cmd_export, "send images for labelling: one batch of files in an annotation tool's "
                 "format (folder or s3://), or tasks in a Label Studio project; recorded in the exports table")
    export.add_argument("source", nargs="?", metavar="SOURCE",
                        help="set:NAME, review:NAME (its accepted images), session:NAME (its current step) or sql:QUERY")
    export.add_argument("--where", help="instead of SOURCE: a SQL predicate over images i LEFT JOIN predictions p")
    export.add_argument("--format", dest="export_format", required=True, metavar="FORMAT",
                        help="label-studio, coco, cvat, yolo, prodigy or manifest")
    export.add_argument("--to", dest="target", required=True, metavar="URI",
                        help="a folder or s3://bucket/prefix (the batch goes in URI/BATCH/), or http(s)://HOST of a Label Studio server")
    export.add_argument("--project", help="the Label Studio project (created when missing) for an http(s) --to")
    export.add_argument("--batch", help="the batch's folder name (default: its id, from its images and options)")
    export.add_argument("--task-size", type=int, help="images per task file (default: config export.task_size; 0: one task)")
    export.add_argument("--include-predictions", dest="predictions", action="store_true", default=True,
                        help="write the newest prediction as pre-annotations (the default)")
    export.add_argument("--no-predictions", dest="predictions", action="store_false", help="images only, no pre-annotations")
    export.add_argument("--copy-images", action="store_true", help="copy the images beside the files (default: by reference)")
    export.add_argument("--resend", action="store_true", help="send again images already sent to this target")
    export.add_argument("--drop-duplicates", action="store_true",
                        help="send one image per near-duplicate group (run edgemine duplicates first)")

    labels = commands.add_parser("labels", help="labels from annotators, into the lake's labels table")
    label_actions = labels.add_subparsers(title="action", metavar="ACTION")
    imported = add(label_actions, "import", cmd_labels_import, "import a label file (Label Studio JSON, COCO, CVAT XML, "
                   "a YOLO folder) or a Label Studio project's annotations")
    imported.add_argument("source", metavar="FILE_OR_URL", help="a file or folder (local or s3://), or http(s)://HOST with --project")
    imported.add_argument("--format", dest="label_format", required=True, metavar="FORMAT", help="label-studio, coco, cvat or yolo")
    imported.add_argument("--project", help="the Label Studio project to pull annotations from")
    imported.add_argument("--batch", help="the batch the labels belong to (default: the export batch the file names)")
    imported.add_argument("--annotator", help="who labelled (default: the file's own user, else unknown)")
    imported.add_argument("--allow-new-classes", action="store_true", help="take classes the lake has not seen (else they are refused)")

    feedback = add(ingest_commands, "feedback", cmd_ingest_feedback, "ingest reports about images or predictions (JSONL, CSV; local or s3://)")
    feedback.add_argument("files", nargs="+", metavar="FILE")
    feedback.add_argument("--format", default="auto", choices=["auto", "jsonl", "csv"], help="input format (default: from the file name)")
    feedback.add_argument("--force", action="store_true", help="ingest again files already ingested and unchanged")
    _add_queue_commands(commands, add, samplers)
    duplicates = add(commands, "duplicates", cmd_duplicates, "group near-identical images (through the index) into the duplicates table")
    duplicates.add_argument("--threshold", type=float, help="least cosine similarity to a group's first image (default: config queues.duplicate_threshold, 0.98)")
    _add_index_choice(duplicates)
    _add_model_commands(commands, add)

    # -- issue 16: slices, metrics, regression alarms, drift, model cards ----------------------
    slice_ = commands.add_parser("slice", help="named slices of the lake (SQL predicates) that metrics are computed on")
    slice_actions = slice_.add_subparsers(title="action", metavar="ACTION")
    slice_add = add(slice_actions, "add", cmd_slice_add, "save a slice: a SQL predicate over predictions p, images i, truth t")
    slice_add.add_argument("name")
    slice_add.add_argument("sql", metavar="SQL", help="e.g. \"hour(p.ts) >= 20\", \"t.box_area < 0.01\", \"p.camera = 'cam-7'\"")
    slice_list = add(slice_actions, "list", cmd_slice_list, "list every slice: automatic, the config's, saved, sets, queues")
    slice_list.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    slice_show = add(slice_actions, "show", cmd_slice_show, "a slice's size, share of the lake and label balance")
    slice_show.add_argument("name")

    metrics = add(commands, "metrics", cmd_metrics, "metrics per model version and slice against the labels "
                  "(into the metrics table), and regression alarms against the previous version")
    metrics.add_argument("--model-version", dest="versions", nargs="+", metavar="V", help="versions (default: all)")
    metrics.add_argument("--slice", dest="slices", nargs="+", metavar="S", help="slices (default: all; see slice list)")
    metrics.add_argument("--baseline", metavar="V", help="compare the newest version with this one "
                         "(default: the version whose predictions appeared before it)")
    metrics.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table; csv: every metric row)")
    metrics.add_argument("--fail-on-regression", action="store_true", help="exit with 3 when a regression alarm is raised")

    drift = add(commands, "drift", cmd_drift, "drift of each time window against a reference: embeddings, "
                "predicted labels, confidence, metadata columns (into the drift table)")
    drift.add_argument("--window", help="window length: 1h, 6h, 1d, 1w (default: config drift.window, 1d)")
    drift.add_argument("--reference", metavar="DATE..DATE", help="the reference days, both included "
                       "(default: the first config drift.reference_windows windows)")
    drift.add_argument("--no-embeddings", dest="embeddings", action="store_false", help="skip the embedding check")
    drift.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")

    card = add(commands, "card", cmd_card, "write a model version's model card (Markdown or HTML), stored in the lake")
    card.add_argument("model_version", metavar="MODEL_VERSION")
    card.add_argument("--output", metavar="FILE", help="also write it to FILE.md or FILE.html (local or s3://); "
                      "default: print the Markdown")

    ui = add(commands, "ui", cmd_ui, "start the review UI (Streamlit) on the lake")
    ui.add_argument("--port", type=int, help="port (default: config ui.port, 8501)")
    ui.add_argument("--address", default="localhost", help="address to listen on (default: localhost; 0.0.0.0 for others to reach it)")
    return parser


def _add_queue_commands(commands, add, samplers: bool) -> None:
    """`edgemine queue SAMPLER|list|show`: one subcommand per sampler, its flags from
    mining.samplers.SAMPLERS (the registry), built only when the command line says queue (importing the
    samplers is a tenth of a second of every other command's start-up)."""
    queue = commands.add_parser("queue", help="make a review queue with a sampler, or list and show queues (saved in the lake)")
    if not samplers:
        return
    from mining.queues import COMMON
    from mining.samplers import SAMPLERS

    kinds = queue.add_subparsers(title="sampler", metavar="SAMPLER")
    for spec in SAMPLERS.values():
        p = add(kinds, spec.name, cmd_queue, spec.help)
        p.set_defaults(sampler=spec.name, allowed_flags=f"options of queue {spec.name}: " + ", ".join(
            ["--name", *("--" + c.replace("_", "-") for c in COMMON), *(o.flag for o in spec.options)]))
        p.add_argument("--name", required=True, help="the queue's name; made again, it becomes a new version (the old one is kept)")
        p.add_argument("--where", help="SQL predicate over images i JOIN predictions p, e.g. \"p.camera = 'cam-07'\"")
        p.add_argument("--model-version", help="only this model version's predictions")
        limit = "queue size (default: config queues.limit, 100)" if spec.ranked else "at most this many (default: every pick)"
        p.add_argument("--limit", type=int, help=limit)
        p.add_argument("--diverse", action="store_true", help="keep a diverse subset (k-center greedy on the embeddings) "
                       "of the sampler's best queues.diverse_pool x limit")
        p.add_argument("--include-reviewed", action="store_true", help="keep images already reviewed or exported")
        p.add_argument("--drop-duplicates", action="store_true", help="keep one image per near-duplicate group (edgemine duplicates)")
        for option in spec.options:
            if option.type is bool:
                p.add_argument(option.flag, dest=f"opt_{option.name}", action="store_true", default=None, help=option.help)
            else:
                default = f" (default: {option.default})" if option.default is not None else ""
                p.add_argument(option.flag, dest=f"opt_{option.name}", type=option.type, choices=option.choices,
                               help=option.help + default)
    add(kinds, "list", cmd_queue_list, "list the queues: sampler, version, images, how many are reviewed")
    show = add(kinds, "show", cmd_queue_show, "show a queue's images in order, with score, reason and decision")
    show.add_argument("queue")
    show.add_argument("--version", type=int, help="an earlier version (default: the latest)")
    show.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table; --json means json)")


def _add_index_choice(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help="embedding set to use, by its weights tag (e.g. imagenet1k_v1); default: the lake's only one")
    parser.add_argument("--backbone", help="backbone of the embedding set (default: the lake's only one)")
    parser.add_argument("--device", help="where kNN and k-means run: auto, cpu, cuda, cuda:N (default: config index.device)")


# -- commands ----------------------------------------------------------------
def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    from jobs.demo import run_demo

    demo = dataclasses.replace(
        config.demo,
        images=args.images if args.images is not None else config.demo.images,
        seed=args.seed if args.seed is not None else config.demo.seed,
        kind=args.kind or config.demo.kind,
        round=config.demo.round and not args.no_round,
    )
    if demo.images < 1:
        raise UsageError("--images must be at least 1")
    summary = run_demo(dataclasses.replace(config, demo=demo), show_progress=not args.quiet)
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
    else:
        p, i, e, x = summary.predictions, summary.images, summary.embeddings, summary.index
        rows = p.totals()
        print(f"demo lake ready at {summary.lake} ({summary.seconds:.1f}s)")
        print(f"  images: {i.registered} registered now, {i.already_known} already there, {i.errors} refused")
        print(f"  predictions: {rows.get('predictions', 0)} rows, {rows.get('detections', 0)} detections, "
              f"{p.errors} bad rows recorded in errors, {p.extra()['skipped']} files unchanged")
        print(f"  embeddings: {e.embedded} computed now ({e.backbone}, {e.weights}), {e.already_embedded} already there, "
              f"{e.errors} images failed")
        print(f"  index: {x.vectors} vectors, {x.kind} ({x.action})")
        print(f"  labelling round: {_round_line(summary.round)}")
        print("  try: edgemine sql \"SELECT label, count(*) n, avg(confidence) FROM predictions GROUP BY ALL ORDER BY n DESC\"")
        print("       edgemine similar $(edgemine sql \"SELECT image_id FROM demo_truth WHERE is_edge_case LIMIT 1\" --format csv | tail -1)")
    return 1 if summary.predictions.failed or summary.embeddings.errors else 0


def _round_line(r) -> str:
    """The demo's labelling round (jobs.demo.RoundSummary) in one line."""
    if r.skipped:
        return f"skipped: {r.skipped}"
    queues = ", ".join(f"{name} ({images} images)" for name, images in r.queues.items()) or "none new"
    return (f"{r.labels} labels from the truth now ({r.labels_already} already there, batch {r.batch}); "
            f"queues: {queues}; {r.metrics} metric rows, {r.alarms} regression alarms; "
            f"{r.drift} drift rows ({r.drift_flagged} flagged)")


def cmd_ingest_images(args: argparse.Namespace, config: Config) -> int:
    from jobs.ingest_images import ingest_images

    summary = ingest_images(Lake.from_config(config), args.source, config.ingest, pattern=args.pattern,
                            retry_errors=args.retry_errors, show_progress=not args.quiet)
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
    else:
        print(f"{summary.found} files found, {summary.already_known} already known, {summary.registered} registered, "
              f"{summary.errors} refused (see: edgemine sql \"SELECT uri, reason FROM errors WHERE job = 'ingest-images'\")")
        for sample in summary.error_samples:
            print(f"  refused {sample['uri']}: {sample['reason']}")
    return 0


def cmd_ingest_predictions(args: argparse.Namespace, config: Config) -> int:
    from jobs.ingest_predictions import ingest_predictions

    summary = ingest_predictions(Lake.from_config(config), args.files, config.ingest, fmt=args.format,
                                 force=args.force, show_progress=not args.quiet)
    report = summary.to_dict()
    if args.json:
        write_json(report, sys.stdout)
    else:
        rows = report["rows"]
        print(f"{report['ingested']} file(s) ingested, {report['skipped']} unchanged, {report['failed']} failed: "
              f"{rows.get('predictions', 0)} predictions, {rows.get('detections', 0)} detections, {report['errors']} bad rows")
        if report["errors"]:
            print("  bad rows are in the errors table: edgemine sql \"SELECT source, row, reason FROM errors WHERE job = 'ingest-predictions'\"")
        for f in summary.failed:
            print(f"  FAILED {f.reason}", file=sys.stderr)
    if summary.failed and len(summary.failed) == len(summary.files):
        return 2
    return 1 if summary.failed else 0


def _embed_config(config: Config, **flags) -> EmbedConfig:
    """The config's [embed] with the flags given on the command line (None: not given); `embed` and `score`."""
    embed = dataclasses.replace(config.embed, **{k: v for k, v in flags.items() if v is not None})
    if embed.batch_size < 0 or embed.workers < 0:
        raise UsageError("--batch-size and --workers must be at least 0 (0: automatic)")
    return embed


def cmd_embed(args: argparse.Namespace, config: Config) -> int:
    from jobs.embed_images import Shard, embed_lake

    embed = _embed_config(config, weights=args.weights, backbone=args.backbone, device=args.device, decode=args.decode,
                          batch_size=args.batch_size, workers=args.workers, seed=args.seed)
    summary = embed_lake(Lake.from_config(config), embed, shard=Shard.parse(args.shard), overwrite=args.overwrite,
                         retry_errors=args.retry_errors, show_progress=not args.quiet)
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
    else:
        print(f"{summary.backbone} ({summary.weights}) on {summary.device}, shard {summary.shard}: "
              f"{summary.embedded} embedded, {summary.errors} failed, {summary.already_embedded} already embedded, "
              f"{summary.failed_before} failed before ({summary.images_per_second:.1f} images/s)")
        if summary.errors:
            print("  failures are in the errors table: edgemine sql \"SELECT uri, reason FROM errors WHERE job = 'embed'\"")
        for sample in summary.error_samples:
            print(f"  failed {sample['uri']}: {sample['reason']}")
    if summary.images_in_shard == 0:
        print("edgemine: the lake has no images (in this shard) yet: register some with `edgemine ingest images SOURCE`", file=sys.stderr)
    return 1 if summary.errors else 0


def cmd_sql(args: argparse.Namespace, config: Config) -> int:
    from mining.sql import LakeDB, view_statements

    lake = Lake.from_config(config)
    if args.views:
        sys.stdout.write(view_statements(lake))
        return 0
    query = sys.stdin.read() if args.query == "-" else args.query
    if not query:
        raise UsageError("give a query, e.g. edgemine sql \"SELECT count(*) FROM predictions\", or --views")
    as_of = None
    if args.as_of:
        from mining.tables import resolve_as_of

        with LakeDB(lake) as db:
            as_of = resolve_as_of(lake, args.as_of, db.check_read_only(query))
    with LakeDB(lake, as_of=as_of) as db:
        result = db.query(query)
    if args.output:
        _write_parquet_output(result, args.output, config)
        print(f"wrote {result.num_rows} rows to {args.output}", file=sys.stderr)
        return 0
    write_rows(result, "json" if args.json else args.format, sys.stdout, max_rows=args.max_rows)
    return 0


def cmd_tables(args: argparse.Namespace, config: Config) -> int:
    from mining.sql import LakeDB
    from mining.statistics import table_rows

    with LakeDB(Lake.from_config(config)) as db:
        result = table_rows(db)
    write_rows(result, "json" if args.json else "table", sys.stdout)
    return 0


def cmd_history(args: argparse.Namespace, config: Config) -> int:
    from mining.tables import history

    commits = history(Lake.from_config(config), args.table, args.limit)
    if args.json:
        write_json(commits, sys.stdout)
        return 0
    import pyarrow as pa

    shown = [{**c, "detail": ", ".join(f"{k}={v}" for k, v in c["detail"].items())} for c in commits]
    write_rows(pa.Table.from_pylist(shown), "table", sys.stdout, max_rows=len(shown))
    return 0


def cmd_compact(args: argparse.Namespace, config: Config) -> int:
    from jobs.compact import compact_lake

    if args.z_order and len(args.tables) != 1:
        raise UsageError("--z-order clusters one table: name it, e.g. edgemine compact predictions --z-order model_version")
    hours = config.compact.vacuum_hours if args.vacuum_hours is None else args.vacuum_hours
    if hours < 0:
        raise UsageError("--vacuum-hours must be at least 0")
    summary = compact_lake(Lake.from_config(config), args.tables or None, z_order=args.z_order or (), vacuum_hours=hours,
                           user=config.mining.user, show_progress=not args.quiet)
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
    else:
        for t in summary.tables:
            print(f"{t.table}: {t.files_before} -> {t.files_after} files ({t.mb_before:.1f} MB), "
                  f"{t.vacuumed} old files deleted; SELECT count(*): {t.query_s_before:.3f} s -> {t.query_s_after:.3f} s")
    return 0


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    from jobs.migrate import migrate_lake

    summary = migrate_lake(Lake.from_config(config), user=config.mining.user, show_progress=not args.quiet)
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
    elif not summary.tables:
        print(f"{summary.lake}: nothing to migrate (every table is a Delta table already)")
    else:
        for t in summary.tables:
            print(f"{t['table']}: {t['files']} Parquet files, {t['stored_rows']} rows -> {t['rows']} rows in a Delta table")
        print(f"the old files are kept under {summary.kept_in}; delete that folder once you have checked the lake")
    return 0


def _index_config(args: argparse.Namespace, config: Config) -> Config:
    changes = {"device": args.device, "kind": getattr(args, "kind", None), "nprobe": getattr(args, "nprobe", None)}
    index = dataclasses.replace(config.index, **{k: v for k, v in changes.items() if v is not None})
    return dataclasses.replace(config, index=index)


def cmd_index(args: argparse.Namespace, config: Config) -> int:
    from mining.index_sync import index_lake
    from mining.sql import LakeDB

    config = _index_config(args, config)
    with LakeDB(Lake.from_config(config)) as db:
        _, summary = index_lake(db, config.index, backbone=args.backbone, weights=args.weights, rebuild=args.rebuild,
                                seed=config.mining.seed)
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
    else:
        print(f"index {summary.backbone}/{summary.weights}: {summary.action}"
              f"{f' ({summary.reason})' if summary.reason else ''}; {summary.vectors} vectors, {summary.kind}, "
              f"{summary.added} added, {summary.seconds:.1f}s")
    return 0


def cmd_similar(args: argparse.Namespace, config: Config) -> int:
    from embed.files import file_embedder
    from mining.index_sync import open_index
    from mining.search import find_similar, hits_table
    from mining.sql import LakeDB

    config = _index_config(args, config)
    if args.k is not None and args.k < 1:
        raise UsageError("-k must be at least 1")
    with LakeDB(Lake.from_config(config)) as db:
        index = open_index(db, config.index, backbone=args.backbone, weights=args.weights)
        hits = find_similar(db, index, config, args.seeds, negatives=args.negatives, k=args.k, where=args.where,
                            save=args.save, embed_files=file_embedder(config))
    write_rows(hits_table(hits), "json" if args.json else args.format, sys.stdout, max_rows=len(hits))
    if args.save:
        print(f"saved as set {args.save!r}: edgemine sql \"SELECT * FROM sets JOIN predictions USING (image_id) WHERE name = '{args.save}'\"",
              file=sys.stderr)
    return 0


def cmd_narrow_start(args: argparse.Namespace, config: Config) -> int:
    from embed.files import file_embedder
    from mining import sessions
    from mining.backends import get_backend
    from mining.index_sync import open_index
    from mining.sql import LakeDB

    config = _index_config(args, config)
    for name in ("pool", "clusters"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1")
    with LakeDB(Lake.from_config(config)) as db:
        index = open_index(db, config.index, backbone=args.backbone, weights=args.weights)
        report = sessions.start_query(db, index, get_backend(config.index.device), config, args.seeds,
                                      negatives=args.negatives, where=args.where, pool=args.pool,
                                      clusters=args.clusters, session=args.name, embed_files=file_embedder(config))
    return _print_step(report, args)


def cmd_narrow_pick(args: argparse.Namespace, config: Config) -> int:
    from mining import sessions
    from mining.backends import get_backend
    from mining.index_sync import open_index
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        backbone, weights = sessions.session_embedding_set(db, args.session)
        index = open_index(db, config.index, backbone=backbone, weights=weights)
        report = sessions.pick(db, index, get_backend(config.index.device), config.mining, args.session, args.picked,
                               clusters=args.clusters)
    return _print_step(report, args)


def cmd_narrow_back(args: argparse.Namespace, config: Config) -> int:
    from mining import sessions
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        return _print_step(sessions.back(db, args.session, config.mining.user), args)


def cmd_narrow_show(args: argparse.Namespace, config: Config) -> int:
    from mining import sessions
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        return _print_step(sessions.show(db, args.session, args.step), args)


def cmd_narrow_list(args: argparse.Namespace, config: Config) -> int:
    from mining import sessions
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        write_rows(sessions.list_sessions(db), "json" if args.json else "table", sys.stdout)
    return 0


def cmd_narrow_save(args: argparse.Namespace, config: Config) -> int:
    from mining import sessions
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        n = sessions.save_session(db, args.session, args.set_name, config.mining.user, args.clusters)
    if args.json:
        write_json({"set": args.set_name, "images": n, "session": args.session}, sys.stdout)
    else:
        print(f"saved {n} images as set {args.set_name!r}: edgemine sql \"SELECT * FROM sets WHERE name = '{args.set_name}'\"")
    return 0


def cmd_review_decide(args: argparse.Namespace, config: Config) -> int:
    from mining.decisions import decide
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        n = decide(db, args.review, args.image_ids, args.decision, reviewer=config.mining.user, source=args.source)
    if args.json:
        write_json({"review": args.review, "decision": args.decision, "images": n, "reviewer": config.mining.user}, sys.stdout)
    else:
        print(f"{args.decision}ed {n} images in review {args.review!r} as {config.mining.user}")
    return 0


def cmd_review_list(args: argparse.Namespace, config: Config) -> int:
    from mining.decisions import list_reviews
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        write_rows(list_reviews(db), "json" if args.json else "table", sys.stdout)
    return 0


def cmd_review_save(args: argparse.Namespace, config: Config) -> int:
    from mining.decisions import save_review
    from mining.sql import LakeDB

    name = args.set_name or args.review
    with LakeDB(Lake.from_config(config)) as db:
        n = save_review(db, args.review, user=config.mining.user, name=name)
    if args.json:
        write_json({"set": name, "images": n, "review": args.review}, sys.stdout)
    else:
        print(f"saved {n} accepted images as set {name!r}: edgemine sql \"SELECT * FROM sets WHERE name = '{name}'\"")
    return 0


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    from jobs.export_images import run_export

    summary = run_export(config, args.source, fmt=args.export_format, target=args.target, where=args.where, name=args.batch,
                         task_size=args.task_size, predictions=args.predictions, copy_images=args.copy_images,
                         resend=args.resend, project=args.project, drop_duplicates=args.drop_duplicates,
                         show_progress=not args.quiet)
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
    elif summary.status == "unchanged":
        print(f"batch {summary.batch} was exported before ({summary.exported} images to {summary.target}): nothing changed")
    elif summary.status == "nothing-new":
        print(f"all {summary.skipped} images were sent to {summary.target} before: nothing exported (--resend sends them again)")
    else:
        print(f"batch {summary.batch}: {summary.exported} images exported as {summary.format} to {summary.folder} in "
              f"{summary.tasks} task(s), {summary.skipped} skipped (sent to this target before), {summary.errors} refused"
              + (f", {summary.duplicates_dropped} near-duplicates left out" if summary.duplicates_dropped else ""))
        for sample in summary.error_samples:
            print(f"  refused {sample['uri']}: {sample['reason']}")
        print(f"  what was sent: edgemine sql \"SELECT * FROM exports WHERE batch = '{summary.batch}'\"", file=sys.stderr)
    return 1 if summary.errors else 0


def cmd_labels_import(args: argparse.Namespace, config: Config) -> int:
    from jobs.import_labels import run_import

    summary = run_import(config, args.source, fmt=args.label_format, batch=args.batch, annotator=args.annotator,
                         project=args.project, allow_new_classes=args.allow_new_classes, show_progress=not args.quiet)
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
    else:
        print(f"{summary.annotations} annotations read: {summary.imported} labels imported, {summary.already} already in the "
              f"lake, {summary.errors} refused (batch {summary.batch})")
        for sample in summary.error_samples:
            print(f"  refused {sample['uri']}: {sample['reason']}")
        if summary.errors:
            print("  refused annotations are in the errors table: edgemine sql \"SELECT row, reason FROM errors WHERE "
                  "job = 'labels-import'\"", file=sys.stderr)
    return 1 if summary.errors else 0

def cmd_ingest_feedback(args: argparse.Namespace, config: Config) -> int:
    from jobs.ingest_feedback import ingest_feedback

    summary = ingest_feedback(Lake.from_config(config), args.files, config.ingest, fmt=args.format, force=args.force,
                              show_progress=not args.quiet)
    report = summary.to_dict()
    if args.json:
        write_json(report, sys.stdout)
    else:
        print(f"{report['ingested']} file(s) ingested, {report['skipped']} unchanged, {report['failed']} failed: "
              f"{report['rows'].get('feedback', 0)} reports, {report['errors']} bad rows")
        if report["errors"]:
            print("  bad rows are in the errors table: edgemine sql \"SELECT source, row, reason FROM errors WHERE job = 'ingest-feedback'\"")
        for f in summary.failed:
            print(f"  FAILED {f.reason}", file=sys.stderr)
    if summary.failed and len(summary.failed) == len(summary.files):
        return 2
    return 1 if summary.failed else 0


def cmd_queue(args: argparse.Namespace, config: Config) -> int:
    from mining.index_sync import open_index
    from mining.queues import make_queue, queue_rows
    from mining.samplers import SAMPLERS
    from mining.sql import LakeDB

    options = {o.name: getattr(args, f"opt_{o.name}") for o in SAMPLERS[args.sampler].options}
    with LakeDB(Lake.from_config(config), config=config) as db:
        summary = make_queue(db, args.sampler, args.name, where=args.where, model_version=args.model_version,
                             limit=args.limit, diverse=args.diverse, include_reviewed=args.include_reviewed,
                             drop_duplicates=args.drop_duplicates, options=options, user=config.mining.user,
                             config=config, index=lambda: open_index(db, config.index))
        top = queue_rows(db, args.name, summary.version).select(["rank", "image_id", "score", "reason"]).slice(0, 10)
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
        return 0
    print(f"queue {summary.queue!r} version {summary.version}: {summary.images} images by {summary.sampler} "
          f"from {summary.candidates:,} candidates ({summary.excluded:,} already reviewed or exported left out"
          f"{f', {summary.duplicates_dropped} near-duplicates dropped' if summary.duplicates_dropped else ''}), {summary.seconds:.1f}s")
    for note in summary.notes:
        print(f"  note: {note}")
    write_rows(top, "table", sys.stdout, max_rows=10)
    print(f"next: edgemine queue show {summary.queue} | review it in the UI (Review, images from: Queue)", file=sys.stderr)
    return 0


def cmd_queue_list(args: argparse.Namespace, config: Config) -> int:
    from mining.queues import list_queues
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        write_rows(list_queues(db), "json" if args.json else "table", sys.stdout)
    return 0


def cmd_queue_show(args: argparse.Namespace, config: Config) -> int:
    from mining.queues import queue_rows
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        rows = queue_rows(db, args.queue, args.version)
    shown = rows.select(["rank", "image_id", "score", "reason", "decision"])
    write_rows(shown, "json" if args.json else args.format, sys.stdout, max_rows=rows.num_rows)
    return 0


def cmd_duplicates(args: argparse.Namespace, config: Config) -> int:
    from jobs.progress import Progress
    from mining.duplicates import find_duplicates
    from mining.index_sync import open_index
    from mining.sql import LakeDB

    config = _index_config(args, config)
    threshold = config.queues.duplicate_threshold if args.threshold is None else args.threshold
    with LakeDB(Lake.from_config(config)) as db:
        index = open_index(db, config.index, backbone=args.backbone, weights=args.weights)
        progress = Progress("duplicates", total=len(index), unit="images", enabled=not args.quiet)
        summary = find_duplicates(db, index, threshold=threshold, k=config.queues.duplicate_k, user=config.mining.user,
                                  progress=progress.update)
        progress.close()
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
    else:
        print(f"{summary.images:,} images compared ({summary.backbone}/{summary.weights}): {summary.groups:,} groups of "
              f"near-duplicates (cosine >= {summary.threshold}), {summary.duplicates:,} images beyond each group's first, "
              f"{summary.seconds:.1f}s")
        print("  see: edgemine sql \"SELECT group_id, count(*) n FROM duplicates GROUP BY ALL ORDER BY n DESC\"; "
              "queues drop them with --drop-duplicates")
    return 0


def cmd_ui(args: argparse.Namespace, config: Config) -> int:
    from ui.launch import run_ui

    return run_ui(config, args.config, port=args.port or config.ui.port, address=args.address)


def _print_step(report: Any, args: argparse.Namespace) -> int:
    if args.json:
        write_json(report.to_dict(), sys.stdout)
        return 0
    crumbs = " > ".join(f"step {s}" for s in report.path)
    print(f"session {report.session}: {crumbs} ({report.pool_size} images; seeds: {', '.join(report.seeds)})")
    print(f"{'cluster':>7} {'size':>6} {'to seeds':>9} {'mean conf':>9}  labels (latest prediction)         nearest the centre")
    for c in report.clusters:
        labels = ", ".join(f"{k} {v}" for k, v in sorted(c.labels.items(), key=lambda kv: -kv[1])[:3]) or "-"
        conf = f"{c.mean_confidence:.2f}" if c.mean_confidence is not None else "-"
        print(f"{c.cluster:>7} {c.size:>6} {c.seed_distance:>9.4f} {conf:>9}  {labels:<34} {' '.join(c.nearest[:3])}")
    print(f"next: edgemine narrow pick {report.session} CLUSTER... | narrow back {report.session} | "
          f"narrow save {report.session} SET_NAME", file=sys.stderr)
    return 0


def _write_parquet_output(result: Any, output: str, config: Config) -> None:
    import pyarrow.parquet as pq

    from mining.lake import open_url

    if Lake.from_config(config).contains(output):
        raise UsageError(f"--output {output} is inside the lake; write query results elsewhere (the lake is written only by jobs)")
    fs, path = open_url(output, config.s3)
    with fs.open(path, "wb") as f:
        pq.write_table(result, f)


# -- train and score (issue 17; docs/TRAINING.md) --------------------------------------------
def _add_model_commands(commands, add) -> None:
    train = add(commands, "train", cmd_train, "fine-tune a classifier on the lake's image-level labels; store it as a model version")
    _add_train_arguments(train, base_default="imagenet")

    score = add(commands, "score", cmd_score, "run a model version over the lake's images: predictions and embeddings, images not yet scored")
    score.add_argument("--model", required=True, metavar="VERSION", help="a model version of the lake (edgemine models)")
    score.add_argument("--where", help="SQL predicate over the images table, e.g. \"uri LIKE '%%cam-07%%'\"")
    score.add_argument("--shard", default="0/1", help="score only shard I of N (e.g. 2/8), by image id")
    score.add_argument("--batch-size", type=int, help="images per model call (default: config embed.batch_size)")
    score.add_argument("--workers", type=int, help="image decoding processes (default: config embed.workers)")
    score.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: config embed.device, auto)")
    score.add_argument("--retry-errors", action="store_true", help="try again images that failed before for this model")

    loop = add(commands, "loop", cmd_loop, "the retrain loop for a scheduler: train, score, metrics against the previous "
               "version (exit 3 on a regression), model card; a rerun finishes a loop that stopped")
    _add_train_arguments(loop, base_default="latest")
    loop.add_argument("--baseline", metavar="VERSION", help="compare with this version (default: the one before, by first prediction)")

    add(commands, "models", cmd_models, "list the model versions in the lake")


def _add_train_arguments(parser: argparse.ArgumentParser, base_default: str) -> None:
    """The flags of `train`, shared by `loop`."""
    parser.add_argument("--name", required=True, metavar="VERSION", help="the new model version (letters, digits, _ . -)")
    latest = ", latest (the lake's newest model; imagenet when it has none)" if base_default == "latest" else ""
    parser.add_argument("--from", dest="base", default=base_default, metavar="BASE",
                        help=f"start from: imagenet, random, a checkpoint file, a model version of the lake{latest} (default: {base_default})")
    parser.add_argument("--labels", dest="labels_where", metavar="WHERE", help="SQL predicate over the labels table, e.g. \"batch = 'b7'\"")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--val-fraction", type=float, default=0.1, help="share of labelled images for validation, by image_id hash (default: 0.1)")
    split.add_argument("--val", dest="val_name", metavar="SET_OR_QUEUE", help="validate on this named set's (or queue's) labelled images")
    parser.add_argument("--epochs", type=int, default=10, help="at most this many epochs (default: 10; early stopping may end sooner)")
    parser.add_argument("--backbone", default=None, help="resnet18 or resnet34 (default: resnet18, or the --from model's)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default: 32)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of AdamW (default: 0.001)")
    parser.add_argument("--patience", type=int, default=3, help="stop after this many epochs without a better validation accuracy (default: 3)")
    parser.add_argument("--image-size", type=int, default=224, help="model input side in pixels (default: 224)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the head, shuffling and augmentations (default: 0)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: config embed.device, auto)")
    parser.add_argument("--workers", type=int, default=0, help="image decoding processes (default: 0 = up to 4)")
    if base_default != "latest":  # the loop resumes an interrupted training by itself
        parser.add_argument("--resume", action="store_true", help="continue an interrupted run of this version from its last epoch checkpoint")
    parser.add_argument("--pseudo-labels", dest="pseudo_from", metavar="FROM_VERSION",
                       help="also train on this model version's confident predictions on unlabelled images (marked pseudo)")
    parser.add_argument("--min-confidence", type=float, default=0.9, help="least confidence of a pseudo-label (default: 0.9)")
    parser.add_argument("--pseudo-weight", type=float, default=0.5, help="a pseudo-label's weight in the loss, a label's being 1 (default: 0.5)")
    parser.add_argument("--batch-weight", action="append", default=[], metavar="BATCH=WEIGHT",
                        help="weight in the loss of the images of a label batch, others 1 (repeatable), e.g. glare=3")


def _train_inputs(args: argparse.Namespace, config: Config):
    """`train`'s (and `loop`'s) flags as the job's TrainRequest and TrainSettings."""
    from embed.finetune import TrainSettings
    from jobs.train import TrainRequest

    settings = TrainSettings(backbone=args.backbone or "resnet18", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             patience=args.patience, image_size=args.image_size, seed=args.seed,
                             device=args.device or config.embed.device)
    request = TrainRequest(version=args.name, base=args.base, labels_where=args.labels_where, val_fraction=args.val_fraction,
                           val_name=args.val_name, resume=getattr(args, "resume", False), workers=args.workers,
                           user=config.mining.user, pseudo_from=args.pseudo_from, min_confidence=args.min_confidence,
                           pseudo_weight=args.pseudo_weight, batch_weights=_batch_weights(args.batch_weight))
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
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
    else:
        print(f"model {summary.version} ({summary.backbone} from {summary.base}): {summary.train_images} training and "
              f"{summary.val_images} validation images, classes {', '.join(summary.classes)}; {summary.epochs} epochs, "
              f"best validation accuracy {summary.best_val_accuracy:.3f} at epoch {summary.best_epoch} "
              f"({summary.seconds:.0f}s)")
        if summary.errors:
            print("  unreadable images are in the errors table: edgemine sql \"SELECT uri, reason FROM errors WHERE job = 'train'\"")
        print(f"  next: edgemine score --model {summary.version}", file=sys.stderr)
    return 1 if summary.errors else 0


def cmd_score(args: argparse.Namespace, config: Config) -> int:
    from jobs.embed_images import Shard
    from jobs.score import score_lake

    embed = _embed_config(config, device=args.device, batch_size=args.batch_size, workers=args.workers)
    summary = score_lake(Lake.from_config(config), args.model, embed, shard=Shard.parse(args.shard), where=args.where,
                         retry_errors=args.retry_errors, show_progress=not args.quiet)
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
    else:
        print(f"model {summary.model_version} on {summary.device}, shard {summary.shard}: {summary.embedded} scored, "
              f"{summary.errors} failed, {summary.already_embedded} scored before, {summary.failed_before} failed before "
              f"({summary.images_per_second:.1f} images/s)")
        if summary.errors:
            print("  failures are in the errors table: edgemine sql \"SELECT uri, reason FROM errors WHERE job = 'score'\"")
    return 1 if summary.errors else 0


def cmd_loop(args: argparse.Namespace, config: Config) -> int:
    from jobs.loop import run_loop

    request, settings = _train_inputs(args, config)
    summary = run_loop(Lake.from_config(config), config, request, settings, backbone_given=args.backbone is not None,
                       baseline=args.baseline, show_progress=not args.quiet)
    if args.json:
        write_json(summary.to_dict(), sys.stdout)
    else:
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
    if summary.regressed:
        return EXIT_REGRESSION
    return 1 if summary.errors else 0


def cmd_models(args: argparse.Namespace, config: Config) -> int:
    from mining.models import list_models
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        write_rows(list_models(db), "json" if args.json else "table", sys.stdout)
    return 0


# -- issue 16: slices, metrics, regression alarms, drift, model cards --------------------------
EXIT_REGRESSION = 3  # `metrics --fail-on-regression`: a regression alarm was raised (a rollout should stop)


def cmd_slice_add(args: argparse.Namespace, config: Config) -> int:
    from mining.slices import add_slice
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        n = add_slice(db, args.name, args.sql, user=config.mining.user)
    if args.json:
        write_json({"name": args.name, "sql": args.sql, "rows": n}, sys.stdout)
    else:
        print(f"slice {args.name}: {n:,} predictions (newest per image and model version)")
    return 0


def cmd_slice_list(args: argparse.Namespace, config: Config) -> int:
    from mining.slices import all_slices, slice_table
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        found = all_slices(db, config.slices, max_values=config.metrics.auto_max_values)
    write_rows(slice_table(found), "json" if args.json else args.format, sys.stdout, max_rows=len(found))
    return 0


def cmd_slice_show(args: argparse.Namespace, config: Config) -> int:
    from mining.slices import all_slices, find_slices, show_slice
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        one = find_slices(all_slices(db, config.slices, max_values=config.metrics.auto_max_values), [args.name])[0]
        shown = show_slice(db, one)
    if args.json:
        write_json(shown, sys.stdout)
        return 0
    print(f"slice {shown['name']} ({shown['kind']}): {shown['sql']}")
    print(f"  {shown['images']:,} images ({shown['share']:.1%} of the lake), {shown['predictions']:,} predictions, "
          f"{shown['labelled']:,} labelled")
    for row in shown["labels"]:
        print(f"  {row['label']:<20} {row['images']:>8,}")
    return 0


def cmd_metrics(args: argparse.Namespace, config: Config) -> int:
    from mining.metrics import run_metrics, summary_table
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        rows, report = run_metrics(db, config, versions=args.versions, slices=args.slices, baseline=args.baseline)
    if args.json:
        write_json({"metrics": rows.to_pylist(), "regressions": report.to_dict()}, sys.stdout)
    elif args.format == "csv":
        write_rows(rows, "csv", sys.stdout)
    else:
        write_rows(summary_table(rows), "table", sys.stdout, max_rows=1000)
        if report.baseline is None:
            print("regressions: one model version only, nothing to compare with")
        else:
            print(f"regressions of {report.model_version} against {report.baseline}: {len(report.alarms)} "
                  f"({report.checked} slice and class comparisons)")
        for a in report.alarms:
            print(f"  REGRESSION {a['slice']} {a['metric']}{'[' + a['label'] + ']' if a['label'] else ''}: "
                  f"{a['baseline_value']:.3f} -> {a['value']:.3f} (n={a['n']}, interval of the change "
                  f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}])")
    return EXIT_REGRESSION if args.fail_on_regression and report.alarms else 0


def cmd_drift(args: argparse.Namespace, config: Config) -> int:
    from mining.drift import detect_drift, record_drift
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        rows = detect_drift(db, config.drift, window=args.window, reference=args.reference, embeddings=args.embeddings)
        record_drift(db, rows, user=config.mining.user)
    flagged = rows.filter(rows.column("flagged"))
    windows = len(set(rows.column("window_start").to_pylist()))
    if args.json:
        write_json({"windows": windows, "flagged": flagged.num_rows, "reference": rows.column("reference")[0].as_py(),
                    "rows": rows.to_pylist()}, sys.stdout)
        return 0
    if args.format != "table":
        write_rows(rows, args.format, sys.stdout)
        return 0
    print(f"{windows} windows against the reference {rows.column('reference')[0].as_py()}: "
          f"{flagged.num_rows} flagged checks")
    shown = flagged.select(["window_start", "check", "statistic", "score", "p_value", "detail"])
    write_rows(shown, "table", sys.stdout, max_rows=200)
    return 0


def cmd_card(args: argparse.Namespace, config: Config) -> int:
    from mining.cards import card_path, write_card
    from mining.sql import LakeDB

    with LakeDB(Lake.from_config(config)) as db:
        text = write_card(db, args.model_version, config, args.output)
        stored = db.lake.url(card_path(db, args.model_version))
    if args.json:
        write_json({"model_version": args.model_version, "stored": stored, "output": args.output, "markdown": text},
                   sys.stdout)
    elif args.output:
        print(f"model card of {args.model_version}: {args.output} (stored in the lake: {stored})")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
