"""The lake itself: `demo`, `sql`, `tables`, `history`, `compact`, `migrate`, `index`, `ui`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

import mining
from jobs.cli.common import UsageError, add_index_choice, index_config, open_db, print_result
from jobs.output import FORMATS, render_rows, write_json, write_rows
from mining.core.config import Config
from mining.core.lake import Lake


def add_demo(commands, add) -> None:
    demo = add(
        commands, "demo", cmd_demo, "generate a synthetic lake (images, predictions, ground truth) and ingest it"
    )
    demo.add_argument("--images", type=int, help="number of images (default: config demo.images, 2000)")
    demo.add_argument("--seed", type=int, help="random seed (default: config demo.seed, 0)")
    demo.add_argument("--kind", help="the hidden edge case: glare, unseen_class, new_camera, snow, small_occluded "
                      "(default: config demo.kind, glare)")
    demo.add_argument("--no-round", action="store_true", help="skip the simulated labelling round (labels from the "
                      "truth, two queues, metrics, drift) that otherwise follows (config demo.round)")


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
    print_result(args, summary, _demo_text)
    return 1 if summary.predictions.failed or summary.embeddings.errors else 0


def _demo_text(summary) -> None:
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
    print(
        '  try: edgemine sql "SELECT label, count(*) n, avg(confidence) FROM predictions GROUP BY ALL ORDER BY n DESC"'
    )
    print("       edgemine similar $(edgemine sql \"SELECT image_id FROM demo_truth WHERE is_edge_case LIMIT 1\" "
          "--format csv | tail -1)")


def _round_line(r) -> str:
    """The demo's labelling round (jobs.demo.RoundSummary) in one line."""
    if r.skipped:
        return f"skipped: {r.skipped}"
    queues = ", ".join(f"{name} ({images} images)" for name, images in r.queues.items()) or "none new"
    return (f"{r.labels} labels from the truth now ({r.labels_already} already there, batch {r.batch}); "
            f"queues: {queues}; {r.metrics} metric rows, {r.alarms} regression alarms; "
            f"{r.drift} drift rows ({r.drift_flagged} flagged)")


def add_sql(commands, add) -> None:
    sql = add(commands, "sql", cmd_sql, "run a read-only SQL query over the lake's views")
    sql.add_argument("query", nargs="?", help="the SQL; '-' reads it from stdin")
    sql.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default: table; --json means json)"
    )
    sql.add_argument("--output", help="write the result to this Parquet file (local or s3://) instead of printing")
    sql.add_argument("--views", action="store_true", help="print the CREATE VIEW statements, for any DuckDB client")
    sql.add_argument("--max-rows", type=int, help="rows printed, at most (default: 100 in table format, else "
                     "[query] max_rows of the config); a longer result is cut, and a line says so")
    sql.add_argument("--as-of", metavar="WHEN", help="read the tables as they were: a time (2026-11-20T10:00:00Z), "
                     "TABLE@VERSION[,TABLE@VERSION...], or a VERSION when the query reads one table")
    sql.set_defaults(interrupted="the query was stopped")


def cmd_sql(args: argparse.Namespace, config: Config) -> int:
    from mining.core.sql import view_statements

    if args.views:
        sys.stdout.write(view_statements(Lake.from_config(config)))
        return 0
    query = sys.stdin.read() if args.query == "-" else args.query
    if not query:
        raise UsageError("give a query, e.g. edgemine sql \"SELECT count(*) FROM predictions\", or --views")
    as_of = None
    if args.as_of:
        from mining.core.tables import resolve_as_of

        with open_db(config) as db:
            as_of = resolve_as_of(db.lake, args.as_of, db.check_read_only(query))
    if args.output:
        _check_output(args.output, config)
        with open_db(config, as_of=as_of) as db:
            rows = db.batches(query, lambda batches: _write_parquet_output(batches, args.output, config))
        print(f"wrote {rows} rows to {args.output}", file=sys.stderr)
        return 0
    fmt = "json" if args.json else args.format
    if args.max_rows is not None and args.max_rows < 1:
        raise UsageError("--max-rows must be at least 1")
    max_rows = args.max_rows or (min(100, config.query.max_rows) if fmt == "table" else config.query.max_rows)
    with open_db(config, as_of=as_of) as db:
        # A table or JSON is printed from Python rows (of a plain result, DuckDB's: no pyarrow); CSV by pyarrow.
        result = db.head(query, max_rows) if fmt == "csv" else db.head_rows(query, max_rows)
    if fmt == "table":
        sys.stdout.write(render_rows(result.names, result.rows, cut=result.cut))
        return 0
    if fmt == "json":
        write_json(result.to_pylist(), sys.stdout)
    else:
        write_rows(result.table, fmt, sys.stdout)
    if result.cut:
        print(f"edgemine: the result was cut at {max_rows} rows (--max-rows, [query] max_rows); "
              "--output FILE.parquet writes every row", file=sys.stderr)
    return 0


def _check_output(output: str, config: Config) -> None:
    if Lake.from_config(config).contains(output):
        raise UsageError(
            f"--output {output} is inside the lake; write query results elsewhere (the lake is written only by jobs)"
        )


def _write_parquet_output(batches: Any, output: str, config: Config) -> int:
    """Write a query's record batches to ``output`` as they come; returns the rows written."""
    import pyarrow.parquet as pq

    from mining.core.lake import open_url

    fs, path = open_url(output, config.s3)
    rows = 0
    with fs.open(path, "wb") as f, pq.ParquetWriter(f, batches.schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def add_tables(commands, add) -> None:
    add(commands, "tables", cmd_tables, "list the lake's tables with their row counts and versions")


def cmd_tables(args: argparse.Namespace, config: Config) -> int:
    from mining.core.statistics import table_rows

    with open_db(config) as db:
        print_result(args, table_rows(db))
    return 0


def add_history(commands, add) -> None:
    history = add(commands, "history", cmd_history, "list a table's commits: version, when, operation, rows, job, who")
    history.add_argument("table", metavar="TABLE")
    history.add_argument("--limit", type=int, help="only the newest N commits")


def cmd_history(args: argparse.Namespace, config: Config) -> int:
    from mining.core.tables import history

    print_result(args, history(Lake.from_config(config), args.table, args.limit), _history_text)
    return 0


def _history_text(commits: list[dict]) -> None:
    import pyarrow as pa

    shown = [{**c, "detail": ", ".join(f"{k}={v}" for k, v in c["detail"].items())} for c in commits]
    write_rows(pa.Table.from_pylist(shown), "table", sys.stdout, max_rows=len(shown))


def add_compact(commands, add) -> None:
    compact = add(commands, "compact", cmd_compact, "rewrite small files into large ones (optimize), then vacuum; "
                  "reports files and a query's time before and after")
    compact.add_argument("tables", nargs="*", metavar="TABLE", help="tables to compact (default: every table)")
    compact.add_argument(
        "--z-order", nargs="+", metavar="COLUMN", help="also cluster by these columns (one table at a time)"
    )
    compact.add_argument("--vacuum-hours", type=int, help="delete files unused for this many hours "
                         "(default: config compact.vacuum_hours, 168); time travel before that is lost")


def cmd_compact(args: argparse.Namespace, config: Config) -> int:
    from jobs.compact import compact_lake

    if args.z_order and len(args.tables) != 1:
        raise UsageError(
            "--z-order clusters one table: name it, e.g. edgemine compact predictions --z-order model_version"
        )
    hours = config.compact.vacuum_hours if args.vacuum_hours is None else args.vacuum_hours
    if hours < 0:
        raise UsageError("--vacuum-hours must be at least 0")
    summary = compact_lake(
        Lake.from_config(config),
        args.tables or None,
        z_order=args.z_order or (),
        vacuum_hours=hours,
        user=config.mining.user,
        show_progress=not args.quiet,
    )
    print_result(args, summary, _compact_text)
    return 0


def _compact_text(summary) -> None:
    for t in summary.tables:
        print(f"{t.table}: {t.files_before} -> {t.files_after} files ({t.mb_before:.1f} MB), "
              f"{t.vacuumed} old files deleted; SELECT count(*): {t.query_s_before:.3f} s -> {t.query_s_after:.3f} s")


def add_migrate(commands, add) -> None:
    add(
        commands,
        "migrate",
        cmd_migrate,
        "convert a lake written before Delta tables (Parquet folders) into Delta tables",
    )


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    from jobs.migrate import migrate_lake

    summary = migrate_lake(Lake.from_config(config), user=config.mining.user, show_progress=not args.quiet)
    print_result(args, summary, _migrate_text)
    return 0


def _migrate_text(summary) -> None:
    if not summary.tables:
        print(f"{summary.lake}: nothing to migrate (every table is a Delta table already)")
        return
    for t in summary.tables:
        print(f"{t['table']}: {t['files']} Parquet files, {t['stored_rows']} rows -> {t['rows']} rows in a Delta table")
    print(f"the old files are kept under {summary.kept_in}; delete that folder once you have checked the lake")


def add_index(commands, add) -> None:
    index = add(commands, "index", cmd_index, "build the vector index over the embeddings, or bring it up to date")
    index.add_argument(
        "--kind",
        choices=["auto", "flat", "ivf", "ivfpq"],
        help="index kind (default: config index.kind; auto: flat up to index.flat_max vectors, "
        "ivf below index.ivfpq_min, ivfpq from it)",
    )
    index.add_argument("--nprobe", type=int, help="IVF lists searched per query (default: automatic)")
    index.add_argument("--rebuild", action="store_true", help="build from scratch even if the index is up to date")
    index.add_argument("--objects", action="store_true",
                       help="the index of the object embeddings (detection boxes, embed --objects)")
    add_index_choice(index)


def cmd_index(args: argparse.Namespace, config: Config) -> int:
    config = index_config(args, config)
    with open_db(config) as db:
        summary = mining.sync_index(db, backbone=args.backbone, weights=args.weights, rebuild=args.rebuild,
                                    config=config, objects=args.objects)
    print_result(args, summary, _index_text)
    return 0


def _index_text(summary) -> None:
    print(f"{'object ' if summary.objects else ''}index {summary.backbone}/{summary.weights}: {summary.action}"
          f"{f' ({summary.reason})' if summary.reason else ''}; {summary.vectors} vectors, {summary.kind}, "
          f"{summary.added} added, {summary.seconds:.1f}s")


def add_ui(commands, add) -> None:
    ui = add(commands, "ui", cmd_ui, "start the review UI (Streamlit) on the lake")
    ui.add_argument("--port", type=int, help="port (default: config ui.port, 8501)")
    ui.add_argument(
        "--address",
        default="localhost",
        help="address to listen on (default: localhost; 0.0.0.0 for others to reach it, which needs a login: "
        "docs/SECURITY.md)",
    )
    ui.add_argument("--insecure-no-login", action="store_true",
                    help="serve beyond localhost with no login configured (anyone who reaches it acts on the lake)")


def cmd_ui(args: argparse.Namespace, config: Config) -> int:
    from ui.launch import run_ui

    return run_ui(config, args.config, port=args.port or config.ui.port, address=args.address,
                  insecure_no_login=args.insecure_no_login)
