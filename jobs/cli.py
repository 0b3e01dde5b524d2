"""The `edgemine` command. Subcommand names and flags are a public contract.

Each subcommand parses its flags, builds the Config once, calls one library
function with paths and plain values, and prints the result (``--json`` for
machines). Progress goes to stderr, results to stdout.

Exit codes: 0 done; 1 done, but some inputs failed (see the summary);
2 nothing done: bad usage, configuration or input.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import duckdb
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from jobs.output import FORMATS, write_json, write_rows
from jobs.readers import InputFormatError
from mining.config import Config, ConfigError, load_config
from mining.lake import Lake

log = logging.getLogger("edgemine")


class UsageError(Exception):
    """Wrong input from the user: printed as one line, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        config = load_config(args.config, lake=args.lake)
        return args.run(args, config)
    except (UsageError, ConfigError, InputFormatError, FileNotFoundError, duckdb.Error, PermissionError) as e:
        print(f"edgemine: error: {e}", file=sys.stderr)
        return 2
    except NoCredentialsError:
        print("edgemine: error: no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
              "(or [s3] key and secret in the config file)", file=sys.stderr)
        return 2
    except EndpointConnectionError as e:
        print(f"edgemine: error: cannot reach S3: {e}. Check AWS_ENDPOINT_URL or [s3] endpoint_url in the config, "
              "and that the server is up", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as e:
        print(f"edgemine: error: S3 refused the request: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgemine: interrupted; rerun the same command to finish (finished shards are kept)", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
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
    embed.add_argument("--backbone", help="model (default: config embed.backbone, resnet18)")
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

    add(commands, "tables", cmd_tables, "list the lake's tables with their row counts")
    return parser


# -- commands ----------------------------------------------------------------
def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    from jobs.demo import run_demo

    demo = dataclasses.replace(
        config.demo,
        images=args.images if args.images is not None else config.demo.images,
        seed=args.seed if args.seed is not None else config.demo.seed,
    )
    if demo.images < 1:
        raise UsageError("--images must be at least 1")
    summary = run_demo(dataclasses.replace(config, demo=demo), show_progress=not args.quiet)
    if args.json:
        write_json(summary, sys.stdout)
    else:
        p = summary["predictions"]
        i = summary["images"]
        print(f"demo lake ready at {summary['lake']} ({summary['seconds']:.1f}s)")
        print(f"  images: {i['registered']} registered now, {i['already_known']} already there, {i['errors']} refused")
        print(f"  predictions: {p['rows'].get('predictions', 0)} rows, {p['rows'].get('detections', 0)} detections, "
              f"{p['errors']} bad rows recorded in errors, {p['skipped']} files unchanged")
        e = summary["embeddings"]
        print(f"  embeddings: {e['embedded']} computed now ({e['backbone']}, {e['weights']}), {e['already_embedded']} already there, "
              f"{e['errors']} images failed")
        print("  try: edgemine sql \"SELECT label, count(*) n, avg(confidence) FROM predictions GROUP BY ALL ORDER BY n DESC\"")
    return 1 if summary["predictions"]["failed"] or summary["embeddings"]["errors"] else 0


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
    from jobs.ingest_predictions import IngestFileError, ingest_predictions

    try:
        summary = ingest_predictions(Lake.from_config(config), args.files, config.ingest, fmt=args.format,
                                     force=args.force, show_progress=not args.quiet)
    except IngestFileError as e:
        raise UsageError(str(e)) from None
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


def cmd_embed(args: argparse.Namespace, config: Config) -> int:
    from embed.model import DeviceError, WeightsError
    from jobs.embed import Shard, embed_lake

    flags = {"weights": args.weights, "backbone": args.backbone, "device": args.device, "decode": args.decode,
             "batch_size": args.batch_size, "workers": args.workers, "seed": args.seed}
    embed = dataclasses.replace(config.embed, **{k: v for k, v in flags.items() if v is not None})
    if embed.batch_size < 0 or embed.workers < 0:
        raise UsageError("--batch-size and --workers must be at least 0 (0: automatic)")
    try:
        shard = Shard.parse(args.shard)
        summary = embed_lake(Lake.from_config(config), embed, shard=shard, overwrite=args.overwrite,
                             retry_errors=args.retry_errors, show_progress=not args.quiet)
    except (ValueError, WeightsError, DeviceError) as e:
        raise UsageError(str(e)) from None
    report = summary.to_dict()
    if args.json:
        write_json(report, sys.stdout)
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
    with LakeDB(lake) as db:
        result = db.query(query)
    if args.output:
        _write_parquet_output(result, args.output, config)
        print(f"wrote {result.num_rows} rows to {args.output}", file=sys.stderr)
        return 0
    write_rows(result, "json" if args.json else args.format, sys.stdout, max_rows=args.max_rows)
    return 0


def cmd_tables(args: argparse.Namespace, config: Config) -> int:
    from mining.schema import TABLES
    from mining.sql import LakeDB

    lake = Lake.from_config(config)
    with LakeDB(lake) as db:
        counts = " UNION ALL ".join(
            f"SELECT '{name}' AS \"table\", (SELECT count(*) FROM {name}) AS rows, "
            f"(SELECT count(*) FROM raw.{name}) AS stored_rows" for name in TABLES
        )
        result = db.query(counts)
    write_rows(result, "json" if args.json else "table", sys.stdout)
    return 0


def _write_parquet_output(result: Any, output: str, config: Config) -> None:
    import pyarrow.parquet as pq

    from mining.lake import open_url

    if Lake.from_config(config).contains(output):
        raise UsageError(f"--output {output} is inside the lake; write query results elsewhere (the lake is written only by jobs)")
    fs, path = open_url(output, config.s3)
    with fs.open(path, "wb") as f:
        pq.write_table(result, f)


if __name__ == "__main__":
    sys.exit(main())
