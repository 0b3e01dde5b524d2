"""Evaluating models: `slice add|list|show`, `metrics` (and regression alarms), `drift`, `card` (docs/METRICS.md)."""

from __future__ import annotations

import argparse
import sys

import mining
from jobs.cli.common import EXIT_REGRESSION, open_db, print_result
from jobs.output import FORMATS, write_rows
from mining.core.config import Config


def add_slice(commands, add) -> None:
    slice_ = commands.add_parser("slice", help="named slices of the lake (SQL predicates) that metrics are computed on")
    slice_actions = slice_.add_subparsers(title="action", metavar="ACTION")
    slice_add = add(
        slice_actions, "add", cmd_slice_add, "save a slice: a SQL predicate over predictions p, images i, truth t"
    )
    slice_add.add_argument("name")
    slice_add.add_argument(
        "sql", metavar="SQL", help='e.g. "hour(p.ts) >= 20", "t.box_area < 0.01", "p.camera = \'cam-7\'"'
    )
    slice_list = add(
        slice_actions, "list", cmd_slice_list, "list every slice: automatic, the config's, saved, sets, queues"
    )
    slice_list.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    slice_show = add(slice_actions, "show", cmd_slice_show, "a slice's size, share of the lake and label balance")
    slice_show.add_argument("name")


def cmd_slice_add(args: argparse.Namespace, config: Config) -> int:
    with open_db(config) as db:
        n = mining.add_slice(db, args.name, args.sql, config=config)
    print_result(args, {"name": args.name, "sql": args.sql, "rows": n}, _slice_added_text)
    return 0


def _slice_added_text(added: dict) -> None:
    print(f"slice {added['name']}: {added['rows']:,} predictions (newest per image and model version)")


def cmd_slice_list(args: argparse.Namespace, config: Config) -> int:
    with open_db(config) as db:
        found = mining.list_slices(db, config=config)
    print_result(args, found, max_rows=found.num_rows)
    return 0


def cmd_slice_show(args: argparse.Namespace, config: Config) -> int:
    from mining.evaluation.slices import all_slices, find_slices, show_slice

    with open_db(config) as db:
        one = find_slices(all_slices(db, config.slices, max_values=config.metrics.auto_max_values), [args.name])[0]
        shown = show_slice(db, one)
    print_result(args, shown, _slice_text)
    return 0


def _slice_text(shown: dict) -> None:
    print(f"slice {shown['name']} ({shown['kind']}): {shown['sql']}")
    print(f"  {shown['images']:,} images ({shown['share']:.1%} of the lake), {shown['predictions']:,} predictions, "
          f"{shown['labelled']:,} labelled")
    for row in shown["labels"]:
        print(f"  {row['label']:<20} {row['images']:>8,}")


def add_metrics(commands, add) -> None:
    metrics = add(commands, "metrics", cmd_metrics, "metrics per model version and slice against the labels "
                  "(into the metrics table), and regression alarms against the previous version")
    metrics.add_argument("--model-version", dest="versions", nargs="+", metavar="V", help="versions (default: all)")
    metrics.add_argument("--slice", dest="slices", nargs="+", metavar="S", help="slices (default: all; see slice list)")
    metrics.add_argument("--baseline", metavar="V", help="compare the newest version with this one "
                         "(default: the version whose predictions appeared before it)")
    metrics.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default: table; csv: every metric row)"
    )
    metrics.add_argument(
        "--fail-on-regression", action="store_true", help="exit with 3 when a regression alarm is raised"
    )


def cmd_metrics(args: argparse.Namespace, config: Config) -> int:
    from mining.evaluation.metrics import run_metrics

    with open_db(config) as db:  # metrics and regressions in one pass: the facade has them as two functions
        rows, report = run_metrics(db, config, versions=args.versions, slices=args.slices, baseline=args.baseline)
    result = {"metrics": rows.to_pylist(), "regressions": report.to_dict()}
    print_result(args, result, lambda _: _metrics_text(rows, report, args.format))
    return EXIT_REGRESSION if args.fail_on_regression and report.alarms else 0


def _metrics_text(rows, report, fmt: str) -> None:
    """Every metric row as CSV, or the headline metrics per slice and version, then the regression alarms."""
    from mining.evaluation.metrics import summary_table

    if fmt == "csv":
        write_rows(rows, "csv", sys.stdout)
        return
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


def add_drift(commands, add) -> None:
    drift = add(commands, "drift", cmd_drift, "drift of each time window against a reference: embeddings, "
                "predicted labels, confidence, metadata columns (into the drift table)")
    drift.add_argument("--window", help="window length: 1h, 6h, 1d, 1w (default: config drift.window, 1d)")
    drift.add_argument("--reference", metavar="DATE..DATE", help="the reference days, both included "
                       "(default: the first config drift.reference_windows windows)")
    drift.add_argument("--no-embeddings", dest="embeddings", action="store_false", help="skip the embedding check")
    drift.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")


def cmd_drift(args: argparse.Namespace, config: Config) -> int:
    with open_db(config) as db:
        rows = mining.detect_drift(db, window=args.window, reference=args.reference, embeddings=args.embeddings,
                                   config=config)
    if args.format != "table" and not args.json:
        write_rows(rows, args.format, sys.stdout)
        return 0
    flagged = rows.filter(rows.column("flagged"))
    found = {"windows": len(set(rows.column("window_start").to_pylist())), "flagged": flagged.num_rows,
             "reference": rows.column("reference")[0].as_py(), "rows": rows.to_pylist()}
    print_result(args, found, lambda _: _drift_text(found, flagged))
    return 0


def _drift_text(found: dict, flagged) -> None:
    print(f"{found['windows']} windows against the reference {found['reference']}: {found['flagged']} flagged checks")
    shown = flagged.select(["window_start", "feature", "statistic", "score", "p_value", "detail"])
    write_rows(shown, "table", sys.stdout, max_rows=200)


def add_card(commands, add) -> None:
    card = add(commands, "card", cmd_card, "write a model version's model card (Markdown or HTML), stored in the lake")
    card.add_argument("model_version", metavar="MODEL_VERSION")
    card.add_argument("--output", metavar="FILE", help="also write it to FILE.md or FILE.html (local or s3://); "
                      "default: print the Markdown")


def cmd_card(args: argparse.Namespace, config: Config) -> int:
    from mining.evaluation.cards import card_path

    with open_db(config) as db:
        text = mining.write_card(db, args.model_version, args.output, config=config)
        stored = db.lake.url(card_path(db, args.model_version))
    written = {"model_version": args.model_version, "stored": stored, "output": args.output, "markdown": text}
    print_result(args, written, _card_text)
    return 0


def _card_text(written: dict) -> None:
    if written["output"]:
        print(f"model card of {written['model_version']}: {written['output']} "
              f"(stored in the lake: {written['stored']})")
    else:
        sys.stdout.write(written["markdown"])
